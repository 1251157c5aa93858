"""Variable-order (1 to 5), variable-step BDF in NDF form for structured stiff systems, compiled with Numba.

The method is the family of numerical differentiation formulas (NDFs) of
Klopfenstein and Shampine, as used by MATLAB's ``ode15s`` and SciPy's
``BDF``: the backward differentiation formula of order ``k`` with the extra
term ``-kappa_k gamma_k (y_{n+1} - y_pred)``, which keeps the stability of
the BDFs while reducing their error constants. Reference: L. F. Shampine and
M. W. Reichelt, "The MATLAB ODE Suite", SIAM J. Sci. Comput. 18 (1997), 1-22.

The solution history is the array ``D`` of backward differences
``D[j] = nabla^j y_n`` on a grid of constant step ``h`` ("quasi-constant step
size"). A change of the step by the ratio ``rho`` maps ``D`` to the
differences of the same interpolating polynomial on the grid of step
``rho h`` by one small matrix product (``rescale_differences``). The order is
chosen after ``k + 1`` steps at constant ``h`` from the error estimates of
orders ``k - 1``, ``k`` and ``k + 1``.

Each step solves the implicit equation for the correction
``d = y_{n+1} - y_pred`` by a simplified Newton iteration with the matrix
``I - c J``, ``c = h / alpha_k``, factorised in the structured form
``(1 / c) I - J`` of ``structured_linalg``. The Jacobian is kept across steps
while the iteration converges well and is refreshed when it fails or
contracts slowly. The matrix is factorised again only when ``c`` or ``J``
changes.

Outputs come from the interpolating polynomial of the current order over the
last step, so the output grid does not constrain the steps.
"""

import weakref

import numba
import numpy as np
from numba import types

from ..kernel_types import matrix
from .common import (
    MIN_FACTOR,
    NOT_REJECTED,
    REJECTED_BY_ERROR,
    REJECTED_NEWTON,
    REJECTED_NONFINITE,
    REJECTED_SINGULAR,
    RESIDUAL_TOLERANCE,
    RETRY_FACTOR,
    SAFETY,
    STAT_ACCEPTED,
    STAT_FACTORIZATIONS,
    STAT_JACOBIANS,
    STAT_NEWTON_FAILURES,
    STAT_NEWTON_ITERATIONS,
    STAT_RHS,
    STAT_STEPS,
    STATUS_DIVERGED,
    STATUS_STEP_BUDGET,
    STATUS_STEP_SIZE_COLLAPSE,
    STATUS_SUCCESS,
    all_finite,
    allocate_factors,
    allocate_jacobian,
    count_rejection,
    initial_step,
    locate_events,
    max_abs,
    step_size_collapsed,
    stepper_signature,
    weighted_rms,
    write_dense_outputs,
)
from .structured_linalg import factor_structured, solve_structured, structured_residual

MAX_ORDER = 5

# kappa_k of the NDF of order k, at index k (index 0 is unused). These are
# the values of Shampine and Reichelt (1997), also used by SciPy's BDF
# (scipy/integrate/_ivp/bdf.py), chosen there to reduce the error constant
# at a small cost in stability. Order 5 is the plain BDF (kappa = 0).
NDF_KAPPA = np.array([0.0, -0.1850, -1.0 / 9.0, -0.0823, -0.0415, 0.0])

# gamma_k = sum_{j=1}^{k} 1 / j at index k, with gamma_0 = 0. In differences
# the NDF of order k is sum_{j=1}^{k} (1/j) nabla^j y_{n+1} = h f(y_{n+1})
# + kappa_k gamma_k (y_{n+1} - y_pred), where gamma_k is the weight of the
# correction d on the left.
NDF_GAMMA = np.concatenate((np.zeros(1), np.cumsum(1.0 / np.arange(1, MAX_ORDER + 1))))

# alpha_k = (1 - kappa_k) gamma_k, with which the NDF of order k reads
# alpha_k d + sum_{j=1}^{k} gamma_j nabla^j y_n = h f(y_pred + d).
NDF_ALPHA = (1.0 - NDF_KAPPA) * NDF_GAMMA

# Error constants kappa_k gamma_k + 1 / (k + 1) at index k. The local error
# of the NDF of order k is this constant times nabla^{k+1} y_{n+1}, which the
# Newton correction d estimates (Shampine and Reichelt, 1997).
NDF_ERROR_CONSTANT = NDF_KAPPA * NDF_GAMMA + 1.0 / np.arange(1, MAX_ORDER + 2)

# Rows of the differences array: orders 0..k, plus nabla^{k+1} and
# nabla^{k+2} of the newest point for the error estimates of orders k and k + 1.
DIFFERENCE_ROWS = MAX_ORDER + 3

# Layout of the integer history array that travels with the differences
# between calls of the kernel.
HISTORY_VALID = 0  # 1 when the differences describe the current y, t and h
HISTORY_ORDER = 1  # current order k
HISTORY_EQUAL_STEPS = 2  # accepted steps since the last change of h or k
HISTORY_SIZE = 3

# Simplified Newton iteration: at most this many iterations per attempt.
NEWTON_MAX_ITERATIONS = 4
# A Jacobian that was not evaluated in the current step is refreshed for the
# next step when the iteration needed at least this many iterations or
# contracted more slowly than this rate. On Robertson's problem of the tests
# at rtol 1e-8 this cut the f evaluations from 5345 to 2822 for 104 Jacobians
# instead of 25.
SLOW_CONVERGENCE_ITERATIONS = 3
SLOW_CONVERGENCE_RATE = 0.5
# Step factor after the Newton iteration failed with a fresh Jacobian.
NEWTON_FAILURE_FACTOR = 0.5
# Largest growth of h at an order selection. The step changes only every
# k + 1 steps, so a larger bound than the Rosenbrock MAX_FACTOR pays off.
# SciPy's BDF uses the same value.
MAX_STEP_INCREASE = 10.0
# A step that would end less than this fraction of h before the last output
# time is stretched to end there, so that no sliver step is left over.
END_STRETCH = 0.01

# Outcomes of one Newton solve.
NEWTON_CONVERGED = 0
NEWTON_NOT_CONVERGED = 1
NEWTON_NONFINITE = 2
NEWTON_SINGULAR = 3

BDF_SIGNATURE = stepper_signature(
    history=(
        types.int64,  # maximum order
        matrix,  # backward differences, (DIFFERENCE_ROWS, n), kept between calls
        types.int64[::1],  # history flags, (HISTORY_SIZE,), kept between calls
    )
)


@numba.njit(cache=True)
def difference_map(order, ratio, out):
    """Fill ``out[i - 1, j - 1] = prod_{m=1}^{i} (m - 1 - ratio j) / m`` for ``i, j = 1..order``.

    Entry ``(i, j)`` is the ``i``-th Newton backward basis polynomial
    ``binom(s + i - 1, i)`` evaluated at ``s = -ratio j``, so
    ``y(t_n - ratio j h) = sum_i D[i] out[i, j]`` (plus ``D[0]``).
    """
    for j in range(1, order + 1):
        product = 1.0
        for i in range(1, order + 1):
            product *= (i - 1 - ratio * j) / i
            out[i - 1, j - 1] = product


@numba.njit(cache=True)
def rescale_differences(differences, order, ratio):
    """Change the grid of ``differences[1..order]`` from step ``h`` to ``ratio h``, in place.

    With ``R(rho)`` from ``difference_map``, the values of the interpolant at
    the new grid points are ``R(ratio)^T D`` and ``R(1)`` is its own inverse,
    so the new differences are ``(R(ratio) R(1))^T D``. ``D[0]`` is unchanged.
    """
    if order < 1 or ratio == 1.0:
        return
    n = differences.shape[1]
    scaled = np.empty((order, order))
    unit = np.empty((order, order))
    difference_map(order, ratio, scaled)
    difference_map(order, 1.0, unit)
    transform = scaled @ unit
    updated = np.zeros((order, n))
    for i in range(order):
        for j in range(order):
            weight = transform[i, j]
            if weight != 0.0:
                for k in range(n):
                    updated[j, k] += weight * differences[i + 1, k]
    for j in range(order):
        for k in range(n):
            differences[j + 1, k] = updated[j, k]


@numba.njit(cache=True)
def dense_output_coefficients(differences, order, polynomial):
    """Write the interpolant over the last step as a polynomial in theta.

    After an accepted step, ``D[j] = nabla^j y_{n+1}`` on the grid of step
    ``h`` and the interpolant of order ``k`` is
    ``y(t_{n+1} + s h) = sum_{i=0}^{k} D[i] binom(s + i - 1, i)``. With
    ``s = theta - 1`` the basis polynomial of index ``i`` is the one of index
    ``i - 1`` times ``(theta + i - 2) / i``. ``polynomial[p]`` receives the
    coefficient of ``theta^p`` (``p = 0..order``).
    """
    n = differences.shape[1]
    basis = np.zeros(order + 1)
    next_basis = np.zeros(order + 1)
    basis[0] = 1.0
    for p in range(order + 1):
        for k in range(n):
            polynomial[p, k] = 0.0
    for k in range(n):
        polynomial[0, k] = differences[0, k]
    for i in range(1, order + 1):
        # Multiply the basis polynomial by (theta + i - 2) / i.
        shift = i - 2.0
        for p in range(order + 1):
            next_basis[p] = shift * basis[p]
            if p > 0:
                next_basis[p] += basis[p - 1]
            next_basis[p] /= i
        for p in range(order + 1):
            basis[p] = next_basis[p]
            if basis[p] != 0.0:
                for k in range(n):
                    polynomial[p, k] += basis[p] * differences[i, k]


@numba.njit(cache=True)
def solve_ndf_system(
    rhs, drive, params, t_new, y_old, y_pred, psi, c, newton_tolerance, rtol, atol,
    band, kl, ku, U, V, lu, multipliers, pivots, Z, capacitance, capacitance_pivots,
    y_new, correction, f_new, increment, stats,
):
    """Solve ``d + psi - c f(y_pred + d) = 0`` for the correction ``d`` by simplified Newton.

    Each iteration solves ``((1 / c) I - J) delta = f - (psi + d) / c``,
    which is ``(I - c J) delta = c f - psi - d``, with the factors in
    ``lu, ..., capacitance_pivots``. The iteration stops as converged when
    the contraction rate predicts an error below ``newton_tolerance`` in the
    weighted RMS norm, and as failed when it diverges or cannot get there
    within ``NEWTON_MAX_ITERATIONS``. The rate is always measured within this
    solve, so at least two iterations are needed unless the first correction
    is exactly zero. Accepting the first iterate on the rate of an earlier
    step (as CVODE does) returned wrong solutions with status success on the
    stiff Van der Pol problem after its fast jumps, where the Jacobian kept
    from an earlier step no longer fits.

    Returns ``(outcome, iterations, rate)`` with outcome one of the
    ``NEWTON_*`` codes. ``y_new`` and ``correction`` contain the last iterate.
    """
    n = y_pred.shape[0]
    for k in range(n):
        y_new[k] = y_pred[k]
        correction[k] = 0.0

    rate = -1.0
    previous_norm = 0.0
    for iteration in range(NEWTON_MAX_ITERATIONS):
        rhs(t_new, y_new, params, drive, f_new)
        stats[STAT_RHS] += 1
        stats[STAT_NEWTON_ITERATIONS] += 1
        if not all_finite(f_new):
            return NEWTON_NONFINITE, iteration + 1, rate

        for k in range(n):
            increment[k] = f_new[k] - (psi[k] + correction[k]) / c
        if iteration == 0:
            # f_new is free again until the next iteration, so it keeps the
            # right-hand side for the backward-error check.
            for k in range(n):
                f_new[k] = increment[k]
        solve_structured(lu, multipliers, pivots, kl, ku, V, Z, capacitance, capacitance_pivots, increment)
        if not all_finite(increment):
            return NEWTON_NONFINITE, iteration + 1, rate
        if iteration == 0:
            # The Woodbury splitting can lose accuracy when the banded core
            # is nearly singular although the full matrix is not.
            backward_error = structured_residual(1.0 / c, band, kl, ku, U, V, increment, f_new)
            if not (backward_error <= RESIDUAL_TOLERANCE):
                return NEWTON_SINGULAR, iteration + 1, rate

        norm = weighted_rms(increment, y_old, y_pred, rtol, atol)
        if iteration > 0:
            rate = norm / previous_norm
            if rate >= 1.0:
                return NEWTON_NOT_CONVERGED, iteration + 1, rate
            # Predicted distance to the solution after the iterations left.
            remaining = NEWTON_MAX_ITERATIONS - 1 - iteration
            if rate ** (remaining + 1) / (1.0 - rate) * norm > newton_tolerance:
                return NEWTON_NOT_CONVERGED, iteration + 1, rate

        for k in range(n):
            y_new[k] += increment[k]
            correction[k] += increment[k]

        if norm == 0.0:
            return NEWTON_CONVERGED, iteration + 1, rate
        if iteration > 0 and rate / (1.0 - rate) * norm < newton_tolerance:
            return NEWTON_CONVERGED, iteration + 1, rate
        previous_norm = norm

    return NEWTON_NOT_CONVERGED, NEWTON_MAX_ITERATIONS, rate


@numba.njit(cache=True)
def _growth_factor(error_norm, order):
    if not np.isfinite(error_norm):
        return 0.0
    if error_norm <= 0.0:
        return np.inf
    return error_norm ** (-1.0 / (order + 1))


@numba.njit(cache=True)
def select_order(differences, order, max_order, error_norm, y_old, y_new, rtol, atol, safety, work):
    """Choose the next order and step factor from the error estimates of orders ``k - 1, k, k + 1``.

    Called after ``k + 1`` accepted steps at constant ``h``, when
    ``D[k]`` and ``D[k + 2]`` estimate ``h^k y^(k)`` and ``h^(k+2) y^(k+2)``.
    Each order ``q`` gets the factor ``err_q^(-1 / (q + 1))``, and the order
    with the largest factor wins. Returns ``(new_order, step_factor)`` with
    the factor scaled by ``safety`` and capped at ``MAX_STEP_INCREASE``.
    """
    n = y_new.shape[0]
    best_order = order
    best_factor = _growth_factor(error_norm, order)

    if order > 1:
        for k in range(n):
            work[k] = NDF_ERROR_CONSTANT[order - 1] * differences[order, k]
        lower_factor = _growth_factor(weighted_rms(work, y_old, y_new, rtol, atol), order - 1)
        if lower_factor > best_factor:
            best_order = order - 1
            best_factor = lower_factor

    if order < max_order:
        for k in range(n):
            work[k] = NDF_ERROR_CONSTANT[order + 1] * differences[order + 2, k]
        higher_factor = _growth_factor(weighted_rms(work, y_old, y_new, rtol, atol), order + 1)
        if higher_factor > best_factor:
            best_order = order + 1
            best_factor = higher_factor

    return best_order, min(MAX_STEP_INCREASE, safety * best_factor)


@numba.njit(cache=True)
def _store_history(history, order, equal_steps):
    history[HISTORY_VALID] = 1
    history[HISTORY_ORDER] = order
    history[HISTORY_EQUAL_STEPS] = equal_steps


@numba.njit(BDF_SIGNATURE, cache=True)
def integrate_bdf(
    rhs, jac, observe, drive, params, y, t, h, t_out, first_out, observables, states, save_state,
    kl, ku, rank, rtol, atol, max_steps, max_abs_state, stats, max_order, differences, history,
    event_spec, event_state,
):
    """Advance ``y`` from ``t`` past ``t_out[first_out:]``, writing outputs on the way.

    ``differences`` and ``history`` carry the method's state between calls.
    With ``history[HISTORY_VALID] == 1`` they must describe the ``y``, ``t``
    and ``h`` passed in, as left by the previous call, and the integration
    continues at the order reached. Otherwise it starts at order 1 with
    ``h`` (or an initial step when ``h <= 0``). On a failure status the
    history is marked invalid.

    Returns
    -------
    status : int
        ``STATUS_SUCCESS`` when every output time was reached, otherwise the
        reason the integration stopped.
    t, h : float
        Time reached and the step size for the next step.
    next_out : int
        Index of the first output time not written.
    rejection_reason : int
        Why the last rejected step was rejected (for failure messages).
    """
    n = y.shape[0]
    n_out = t_out.shape[0]
    eps = np.finfo(np.float64).eps

    band, U, V = allocate_jacobian(n, kl, ku, rank)
    lu, multipliers, pivots, Z, capacitance, capacitance_pivots = allocate_factors(n, kl, ku, rank, 0.0)

    y_pred = np.empty(n)
    psi = np.empty(n)
    y_new = np.empty(n)
    correction = np.empty(n)
    f_new = np.empty(n)
    work = np.empty(n)
    y_old = np.empty(n)
    observed = np.empty(observables.shape[1])
    polynomial = np.empty((MAX_ORDER + 1, n))

    next_out = first_out
    rejection_reason = NOT_REJECTED
    if next_out >= n_out:
        return STATUS_SUCCESS, t, h, next_out, rejection_reason
    t_stop = t_out[n_out - 1]

    if not all_finite(y):
        history[HISTORY_VALID] = 0
        return STATUS_DIVERGED, t, h, next_out, REJECTED_NONFINITE

    if history[HISTORY_VALID] == 1:
        order = history[HISTORY_ORDER]
        equal_steps = history[HISTORY_EQUAL_STEPS]
    else:
        rhs(t, y, params, drive, f_new)
        stats[STAT_RHS] += 1
        if not all_finite(f_new):
            return STATUS_DIVERGED, t, h, next_out, REJECTED_NONFINITE
        if h <= 0.0:
            h = initial_step(y, f_new, rtol, atol)
        for row in range(DIFFERENCE_ROWS):
            for k in range(n):
                differences[row, k] = 0.0
        for k in range(n):
            differences[0, k] = y[k]
            differences[1, k] = h * f_new[k]
        order = 1
        equal_steps = 0
        history[HISTORY_VALID] = 1

    # Tolerance of the Newton iteration in the weighted norm of the error
    # test. It is a small fraction of the error tolerance, as in SciPy's BDF,
    # but never below what rounding allows.
    newton_tolerance = max(10.0 * eps / rtol, min(0.03, np.sqrt(rtol)))

    # Jacobian and factorisation state. Both are rebuilt on each call, which
    # costs one Jacobian per call of at most the step budget.
    jacobian_stale = True  # evaluate J before the next Newton solve
    jacobian_fresh = False  # J was evaluated during the current step
    factored_c = 0.0  # c of the current factorisation, or 0 when there is none

    steps_taken = 0
    while next_out < n_out:
        if steps_taken >= max_steps:
            _store_history(history, order, equal_steps)
            return STATUS_STEP_BUDGET, t, h, next_out, rejection_reason

        clipped = False
        if t + (1.0 + END_STRETCH) * h >= t_stop:
            h_clipped = t_stop - t
            if h_clipped != h and h_clipped > 0.0:
                rescale_differences(differences, order, h_clipped / h)
                equal_steps = 0
            h = h_clipped
            clipped = True
        if step_size_collapsed(t, h):
            history[HISTORY_VALID] = 0
            return STATUS_STEP_SIZE_COLLAPSE, t, h, next_out, rejection_reason
        steps_taken += 1
        stats[STAT_STEPS] += 1
        t_new = t_stop if clipped else t + h

        # Predictor and the history term of the NDF of the current order.
        alpha = NDF_ALPHA[order]
        c = h / alpha
        # One difference at a time, so that each loop over the n components
        # reads memory contiguously.
        for k in range(n):
            y_pred[k] = differences[0, k]
            psi[k] = 0.0
        for j in range(1, order + 1):
            weight = NDF_GAMMA[j] / alpha
            for k in range(n):
                y_pred[k] += differences[j, k]
                psi[k] += weight * differences[j, k]

        # Newton solve, refreshing a Jacobian from an earlier step once
        # before giving up on this step size.
        outcome = NEWTON_NOT_CONVERGED
        iterations = 0
        rate = -1.0
        while True:
            if jacobian_stale:
                jac(t_new, y_pred, params, drive, band, U, V)
                stats[STAT_JACOBIANS] += 1
                jacobian_stale = False
                jacobian_fresh = True
                factored_c = 0.0
            if c != factored_c:
                pivot_quality = factor_structured(
                    1.0 / c, band, kl, ku, U, V, lu, multipliers, pivots, Z, capacitance, capacitance_pivots
                )
                stats[STAT_FACTORIZATIONS] += 1
                if not (pivot_quality > 0.0):
                    factored_c = 0.0
                    outcome = NEWTON_SINGULAR
                    break
                factored_c = c
            outcome, iterations, rate = solve_ndf_system(
                rhs, drive, params, t_new, y, y_pred, psi, c, newton_tolerance, rtol, atol,
                band, kl, ku, U, V, lu, multipliers, pivots, Z, capacitance, capacitance_pivots,
                y_new, correction, f_new, work, stats,
            )
            if outcome != NEWTON_NOT_CONVERGED:
                break
            stats[STAT_NEWTON_FAILURES] += 1
            if jacobian_fresh:
                break
            jacobian_stale = True

        if outcome != NEWTON_CONVERGED:
            if outcome == NEWTON_SINGULAR:
                rejection_reason = REJECTED_SINGULAR
                factor = RETRY_FACTOR
            elif outcome == NEWTON_NONFINITE:
                rejection_reason = REJECTED_NONFINITE
                factor = RETRY_FACTOR
            else:
                rejection_reason = REJECTED_NEWTON
                factor = NEWTON_FAILURE_FACTOR
            count_rejection(stats, rejection_reason)
            rescale_differences(differences, order, factor)
            h *= factor
            equal_steps = 0
            continue

        # Local error test. The safety factor shrinks when Newton needed
        # many iterations, by the rule of SciPy's BDF.
        safety = SAFETY * (2 * NEWTON_MAX_ITERATIONS + 1) / (2 * NEWTON_MAX_ITERATIONS + iterations)
        for k in range(n):
            work[k] = NDF_ERROR_CONSTANT[order] * correction[k]
        error_norm = weighted_rms(work, y, y_new, rtol, atol)
        if not (np.isfinite(error_norm) and all_finite(y_new)):
            rejection_reason = REJECTED_NONFINITE
            count_rejection(stats, rejection_reason)
            rescale_differences(differences, order, RETRY_FACTOR)
            h *= RETRY_FACTOR
            equal_steps = 0
            continue
        if error_norm > 1.0:
            rejection_reason = REJECTED_BY_ERROR
            count_rejection(stats, rejection_reason)
            factor = max(MIN_FACTOR, safety * error_norm ** (-1.0 / (order + 1)))
            rescale_differences(differences, order, factor)
            h *= factor
            equal_steps = 0
            continue

        # Accepted. Update the differences to the new point: nabla^{k+1}
        # y_{n+1} is the correction d, nabla^{k+2} y_{n+1} is d minus the
        # previous step's d, and the lower ones follow by summation.
        stats[STAT_ACCEPTED] += 1
        for k in range(n):
            differences[order + 2, k] = correction[k] - differences[order + 1, k]
            differences[order + 1, k] = correction[k]
        for j in range(order, -1, -1):
            for k in range(n):
                differences[j, k] += differences[j + 1, k]
        # Rounding must not move the state away from the Newton solution.
        for k in range(n):
            differences[0, k] = y_new[k]

        outputs_in_step = t_out[next_out] <= t_new
        if outputs_in_step or event_spec.shape[0] > 0:
            dense_output_coefficients(differences, order, polynomial)
        if event_spec.shape[0] > 0:
            locate_events(t, h, polynomial[: order + 1], y_new, observe, params, drive, event_spec, event_state,
                          work, observed)
        if outputs_in_step:
            next_out = write_dense_outputs(
                t, h, t_new, polynomial[: order + 1], y_new, t_out, next_out, observe, params, drive,
                observables, states, save_state, work, observed,
            )

        for k in range(n):
            y_old[k] = y[k]
            y[k] = y_new[k]
        t = t_new
        equal_steps += 1
        rejection_reason = NOT_REJECTED
        if max_abs(y) > max_abs_state:
            history[HISTORY_VALID] = 0
            return STATUS_DIVERGED, t, h, next_out, REJECTED_NONFINITE

        slow = iterations >= SLOW_CONVERGENCE_ITERATIONS or (iterations > 1 and rate > SLOW_CONVERGENCE_RATE)
        if slow and not jacobian_fresh:
            jacobian_stale = True
        jacobian_fresh = False

        if equal_steps > order:
            new_order, factor = select_order(
                differences, order, max_order, error_norm, y_old, y, rtol, atol, safety, work
            )
            order = new_order
            rescale_differences(differences, order, factor)
            h *= factor
            equal_steps = 0

    _store_history(history, order, equal_steps)
    return STATUS_SUCCESS, t, h, next_out, rejection_reason


class BDFMethod:
    """The NDF/BDF kernel as the driver expects of a method, with the step history kept across calls.

    ``solve`` calls ``advance`` in slices of its step budget. The differences
    array and the order reached are kept in this object and reused when the
    next call continues the same integration. A call continues it when it
    passes the same ``stats`` array (the driver makes one per ``solve``), the
    same system, parameters and tolerances, and the ``y``, ``t`` and ``h``
    that the last call returned. Any other call, such as the first call of a
    new solve or a call from a solve in another thread, starts at order 1
    with the ``h`` passed in, which is correct but loses the history.

    ``max_order`` caps the order (1 to 5), and ``order`` reports the cap.
    """

    name = "bdf"
    order = MAX_ORDER

    def __init__(self, max_order: int = MAX_ORDER):
        if not (isinstance(max_order, (int, np.integer)) and not isinstance(max_order, bool)
                and 1 <= max_order <= MAX_ORDER):
            raise ValueError(f"max_order = {max_order!r} is invalid: it must be an integer in [1, {MAX_ORDER}]")
        self.max_order = int(max_order)
        self.order = self.max_order
        # State of the last call: weak references to its system, params and
        # stats, its tolerances, t, h, differences and history. It is replaced
        # as one tuple, so a call never pairs one integration's arrays with another's.
        self._last_call = None

    def _saved_history(self, system, params, stats, y, t, h, rtol, atol):
        """Return the ``(differences, history)`` saved by the last call if this call continues it, else None."""
        last_call = self._last_call
        if last_call is None:
            return None
        system_ref, params_ref, stats_ref, tolerances, last_t, last_h, differences, history = last_call
        if system_ref() is not system or params_ref() is not params or stats_ref() is not stats:
            return None
        if tolerances != (rtol, atol) or last_t != t or last_h != h or history[HISTORY_VALID] != 1:
            return None
        if differences.shape[1] != y.size or not np.array_equal(differences[0], y):
            return None
        return differences, history

    def advance(self, system, params, y, t, h, t_out, next_out, observables, states, save_state,
                rtol, atol, max_steps, max_abs_state, stats, event_spec, event_state):
        """Run the compiled kernel over ``t_out[next_out:]``, continuing the last call's history when it can (see ``integrate_bdf``)."""
        saved = self._saved_history(system, params, stats, y, t, h, rtol, atol)
        if saved is None:
            differences = np.zeros((DIFFERENCE_ROWS, y.size))
            history = np.zeros(HISTORY_SIZE, dtype=np.int64)
        else:
            differences, history = saved

        status, t, h, next_out, rejection_reason = integrate_bdf(
            *system.kernels, params, y, t, h,
            t_out, next_out, observables, states, save_state,
            system.kl, system.ku, system.rank,
            rtol, atol, max_steps, max_abs_state, stats,
            self.max_order, differences, history, event_spec, event_state,
        )
        self._last_call = (
            weakref.ref(system), weakref.ref(params), weakref.ref(stats), (rtol, atol), t, h, differences, history,
        )
        return status, t, h, next_out, rejection_reason
