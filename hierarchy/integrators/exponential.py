"""Exponential collocation for systems in modal form, compiled with Numba.

A system in modal form (``system.ModalForm``: the spectral modes and the
exact flow) obeys ``dy_i/dt = r_j alpha y_i + f_i beta`` with
``j = rate_index[i]``, where the two scalars ``alpha, beta`` depend on the
state only through ``q1`` and ``m1``. Given ``alpha`` and ``beta`` along a
step, each equation is linear and is solved exactly. The method
approximates the scalars by cubics through their values at the start and
at the three Radau IIA nodes ``(4 -/+ sqrt 6) / 10, 1`` of the step. It
solves for the node values so that they equal the drive of the states they
produce (collocation). The stiffness of the modes never limits the step:
a mode with ``r_j |A| >> 1`` is propagated as exactly as a slow one. Only
the smoothness of the scalars does, and on the power-law problems they
vary on the scale of ``t`` itself, so the steps grow in proportion to
``t``. On the logistic test problem the error falls as the accepted steps
to the power -5.

Two kinds of steps:

* in the internal time ``u = int alpha dt`` while ``alpha`` keeps its sign
  and varies by less than a factor ``1 / ALPHA_RATIO`` over a step
  (``exponential_internal_time``). There the modes are driven by the one
  scalar ``g = beta / alpha``. The phi functions of exponential integrators
  (Hochbruck and Ostermann, "Exponential integrators", Acta Numerica 19
  (2010) 209-286, section 2.3) solve them exactly for a cubic ``g``, with
  the exponentials computed once per step;
* in ``t``, by quadrature, from an internal step that failed that test or
  its Newton iteration (a zero of ``alpha`` ahead, as in the escape of phase
  retrieval, where ``g`` is steep or singular) until a step in ``t`` finds ``alpha`` varying by
  less than a factor ``1 / RETURN_RATIO``, and either back above its size at the switch or
  the steps bounded by the quadrature's stiffness limit (``exponential_quadrature``).

The overlaps ``m1`` and ``q1`` are a linear and a quadratic form in the
state (``ModalForm``), and a state is ``y_i = E_j y0_i + f_i I_j`` per rate.
So the stepper keeps per-rate sums of the start state
(``exponential_basis.fill_start_sums``, moved from step to step in O(rates)),
and the iterations and the outputs evaluate the overlaps from them without
forming the state: one O(rates) pass per step in internal time, one per
node and iteration in ``t``. The state itself is formed once per step.

The error estimate compares the cubics with the quadratics through the
start, the second node and the end. It takes the change of the forcing
integral at the end and, for the internal steps, its peak inside the step,
which the fast modes (they follow ``g``) show there but not at the end. It
adds the change of the time (internal steps) or of ``A = int alpha dt``
(quadrature steps), carried to the state by ``dy/dt``. It estimates the
error of that lower-order scheme, O(h^4) per step, so the controller uses
the exponent 1/4 and the tolerance is loosened to
``rtol^ERROR_TOLERANCE_POWER`` as RADAU5 does for its embedded formula.
Outputs and events inside a step come from the same exact propagation of
the modes, driven by the step's cubics. So steps do not end on output
times, and a step that passes the last output time is evaluated there.
The ends of the steps are more accurate than their insides, because the
Radau nodes integrate a quartic ``g`` exactly over the whole step. On the
benchmark system at rtol 1e-7, without the interior part of the estimate,
``q1`` was off by 1e-9 at the step ends of the tail and by up to 3e-7 at
outputs inside those steps. The interior part is there for such outputs.

A ridge penalty ``mu`` adds ``-mu y_i`` with a clock of its own, which the
internal time cannot absorb. ``ExponentialMethod.check_system`` rejects
systems with ``mu > 0``, and systems without a modal form (the moment
hierarchy, the classic test problems); the other methods integrate them.
"""

import math
import weakref

import numba
import numpy as np
from numba import types

from . import exponential_internal_time as internal
from . import exponential_quadrature as quadrature
from .common import (
    EVENT_BISECTIONS,
    EVENT_PREVIOUS_VALUE,
    EVENT_TIME,
    MAX_FACTOR,
    MIN_FACTOR,
    NOT_REJECTED,
    REJECTED_BY_ERROR,
    REJECTED_NEWTON,
    REJECTED_NONFINITE,
    RETRY_FACTOR,
    SAFETY,
    STAT_ACCEPTED,
    STAT_NEWTON_FAILURES,
    STAT_RHS,
    STAT_STEPS,
    STATUS_DIVERGED,
    STATUS_STEP_BUDGET,
    STATUS_STEP_SIZE_COLLAPSE,
    STATUS_SUCCESS,
    all_finite,
    count_rejection,
    event_value,
    initial_step,
    max_abs,
    step_size_collapsed,
    stepper_signature,
)
from .exponential_basis import (
    ERROR_CUBIC_INTEGRAL,
    NODES,
    RATE_SUM_ROWS,
    advance_start_sums,
    cubic_value,
    drive_at,
    fill_fixed_sums,
    fill_start_sums,
    interpolate_at_nodes,
    overlaps_from_rates,
    set_error_cubic,
)
from ..kernel_types import f64, vector

__all__ = ["ExponentialMethod", "integrate_exponential"]

ERROR_EXPONENT = 0.25
# The step is accepted when the estimate is below rtol^ERROR_TOLERANCE_POWER
# relative to the state (and atol absolute). The error of the cubic scheme,
# one order higher, then comes out near rtol: the errors of q1 and m1 were
# 0.5 to 20 rtol on the tests' phase-retrieval problems from rtol 1e-5 to 1e-10.
ERROR_TOLERANCE_POWER = 0.8
MIN_ERROR_NORM = 1e-10
# On an internal-time step, alpha must keep its sign with
# min |alpha| >= ALPHA_RATIO max |alpha| over the nodes. Nearer a zero of
# alpha, g = beta / alpha is too steep for a cubic, and a failed test moves
# the steps to t. The test is relative to the step only: a threshold on
# |alpha| against its largest value in the run kept runs in t for good
# where |alpha| settles lower than it started (erf models, large starts).
ALPHA_RATIO = 0.25
# Steps in t return to the internal time once alpha keeps its sign over a
# step with min |alpha| >= RETURN_RATIO max |alpha|, stricter than
# ALPHA_RATIO so that the kinds do not alternate.
RETURN_RATIO = 0.5
# The steps move to t when a linear extrapolation of alpha reaches zero
# within this many steps of the last length (see integrate_exponential).
ZERO_AHEAD_STEPS = 25.0
NEWTON_FAILURE_FACTOR = 0.5
# The predictor extrapolates the last step's cubics only to steps at most
# this much longer, and starts from constants beyond.
PREDICTOR_MAX_GROWTH = 2.0

INTERNAL = 0
QUADRATURE = 1


@numba.njit(cache=True)
def _rates_at(kind, fraction, h, total_u, g_coefficients, cubics, rates, largest_rate, per_rate):
    """Write ``E_j`` and ``I_j`` at ``fraction`` of the accepted step (``x = u / U`` or ``tau``) into ``per_rate[0:2]``."""
    if kind == INTERNAL:
        internal.dense_rates(fraction * total_u, total_u, g_coefficients, rates, per_rate)
    else:
        quadrature.per_rate_solution(fraction, h, cubics, rates, largest_rate, per_rate, False)


@numba.njit(cache=True)
def _state_at(
    kind, fraction, h, total_u, g_coefficients, cubics, rates, largest_rate, rate_index, forcing, y0, per_rate, out,
):
    """Write the state at ``fraction`` of the accepted step (``x = u / U`` or ``tau``) into ``out``."""
    _rates_at(kind, fraction, h, total_u, g_coefficients, cubics, rates, largest_rate, per_rate)
    for i in range(y0.shape[0]):
        j = rate_index[i]
        out[i] = per_rate[0, j] * y0[i] + forcing[i] * per_rate[1, j]


@numba.njit(cache=True)
def _time_at(kind, fraction, t0, h, time_polynomial):
    if kind == INTERNAL:
        return internal.time_at(fraction, t0, time_polynomial)
    return t0 + fraction * h


@numba.njit(cache=True)
def _fraction_of(t_target, kind, t0, t_new, h, time_polynomial):
    """Return ``x = u / U`` (internal steps) or ``tau`` (quadrature steps) of ``t_target`` in the accepted step."""
    if kind == INTERNAL:
        return internal.fraction_at(t_target, t0, t_new, time_polynomial)
    return (t_target - t0) / h


@numba.njit(cache=True)
def _write_outputs(
    kind, t0, t_new, t_last, h, total_u, time_polynomial, g_coefficients, cubics, rates, largest_rate, rate_index,
    forcing, y0, y_new, rate_sums, per_rate, t_out, next_out, observe, params, drive, observables, states, save_state, work,
    observed,
):
    """Write the outputs with ``t0 < t_out[i] <= min(t_new, t_last)`` from the exact propagation.

    ``t_new`` is the end of the step and ``t_last`` the last output time.
    Where only ``m1`` and ``q1`` are requested, they come from the per-rate
    sums of the step's start (``rate_sums``), without forming the state.
    Returns the index of the first output not written.
    """
    n = y0.shape[0]
    overlaps_only = not save_state and observed.shape[0] == 2
    while next_out < t_out.shape[0] and t_out[next_out] <= min(t_new, t_last):
        if t_out[next_out] == t_new:
            work[:] = y_new
        else:
            fraction = _fraction_of(t_out[next_out], kind, t0, t_new, h, time_polynomial)
            if overlaps_only:
                _rates_at(kind, fraction, h, total_u, g_coefficients, cubics, rates, largest_rate, per_rate)
                observables[next_out, 0], observables[next_out, 1] = overlaps_from_rates(
                    per_rate[0], per_rate[1], rate_sums
                )
                next_out += 1
                continue
            _state_at(kind, fraction, h, total_u, g_coefficients, cubics, rates, largest_rate, rate_index, forcing, y0,
                      per_rate, work)
        observe(work, params, drive, observed)
        for k in range(observed.shape[0]):
            observables[next_out, k] = observed[k]
        if save_state:
            for i in range(n):
                states[next_out, i] = work[i]
        next_out += 1
    return next_out


@numba.njit(cache=True)
def _locate_events(
    kind, t0, h, total_u, time_polynomial, g_coefficients, cubics, rates, largest_rate, rate_index, forcing, y0, y_new,
    per_rate, observe, params, drive, event_spec, event_state, work, observed, t_last,
):
    """Record the first crossing of each event in the step, by bisection on the exact propagation.

    The same rule as ``common.locate_events``, on this method's dense output.
    A crossing after ``t_last``, the last output time, which a step may
    pass, is not recorded.
    """
    observe(y_new, params, drive, observed)
    for e in range(event_spec.shape[0]):
        end_value = event_value(event_spec[e], observed)
        start_value = event_state[e, EVENT_PREVIOUS_VALUE]
        if np.isnan(event_state[e, EVENT_TIME]) and start_value * end_value <= 0.0 and start_value != 0.0:
            low, high = 0.0, 1.0
            for _ in range(EVENT_BISECTIONS):
                middle = 0.5 * (low + high)
                _state_at(kind, middle, h, total_u, g_coefficients, cubics, rates, largest_rate, rate_index, forcing, y0,
                          per_rate, work)
                observe(work, params, drive, observed)
                if event_value(event_spec[e], observed) * start_value > 0.0:
                    low = middle
                else:
                    high = middle
            crossing = _time_at(kind, high, t0, h, time_polynomial)
            if crossing <= t_last:
                event_state[e, EVENT_TIME] = crossing
            observe(y_new, params, drive, observed)
        event_state[e, EVENT_PREVIOUS_VALUE] = end_value


@numba.njit(cache=True)
def _cubic_slope_at_end(values):
    """Return the derivative at x = 1 of the cubic through ``(NODES[k], values[k])``."""
    coefficients = np.empty(4)
    interpolate_at_nodes(values, coefficients)
    return coefficients[1] + 2.0 * coefficients[2] + 3.0 * coefficients[3]


@numba.njit(cache=True)
def _alpha_keeps_sign(alphas, ratio):
    """Return whether the four node values of ``alpha`` keep one sign with ``min |alpha| >= ratio max |alpha|``."""
    smallest = np.inf
    largest = 0.0
    for k in range(4):
        if alphas[k] * alphas[0] <= 0.0:
            return False
        smallest = min(smallest, abs(alphas[k]))
        largest = max(largest, abs(alphas[k]))
    return smallest >= ratio * largest


@numba.njit(cache=True)
def _error_norm(error, y_old, y_new, rtol, atol):
    """Return ``common.weighted_rms`` of ``error``, or NaN when the new state or the error is not finite, in one pass."""
    total = 0.0
    for i in range(error.shape[0]):
        scale = atol + rtol * max(abs(y_old[i]), abs(y_new[i]))
        ratio = error[i] / scale
        total += ratio * ratio
        if not (math.isfinite(y_new[i]) and math.isfinite(error[i])):
            return np.nan
    return math.sqrt(total / error.shape[0])


EXPONENTIAL_SIGNATURE = stepper_signature(
    # rates, rate_index, forcing, rho1, m1_weights, q1_rows, q1_cols, q1_values (ModalForm)
    coefficients=(vector, types.int64[::1], vector, f64, vector, types.int64[::1], types.int64[::1], vector),
)


@numba.njit(EXPONENTIAL_SIGNATURE, cache=True)
def integrate_exponential(
    rhs, jac, observe, drive, params, y, t, h, t_out, first_out, observables, states, save_state,
    kl, ku, rank, rates, rate_index, forcing, rho1, m1_weights, q1_rows, q1_cols, q1_values,
    rtol, atol, max_steps, max_abs_state, stats, event_spec, event_state,
):
    """Advance ``y`` from ``t`` past ``t_out[first_out:]`` by exponential collocation, writing outputs on the way.

    Returns ``(status, t, h, next_out, rejection_reason)`` as every stepper
    of ``common`` does, ``h`` being the proposed step in ``t``. In ``stats``,
    a right-hand-side evaluation is a pass over the rates that gives the
    drive at nodes (one per internal step, whose iteration then costs O(1);
    three per residual of a quadrature step, and one at its end), and a
    Jacobian evaluation is a difference Jacobian of a quadrature step.
    """
    n = y.shape[0]
    n_out = t_out.shape[0]
    n_rates = rates.shape[0]
    next_out = first_out
    rejection_reason = NOT_REJECTED
    if next_out >= n_out:
        return STATUS_SUCCESS, t, h, next_out, rejection_reason

    largest_rate = 0.0
    inverse_rates = np.empty(n_rates)
    for j in range(n_rates):
        largest_rate = max(largest_rate, abs(rates[j]))
        inverse_rates[j] = 1.0 / abs(rates[j]) if rates[j] != 0.0 else np.inf
    error_rtol = rtol**ERROR_TOLERANCE_POWER

    tables = np.empty((3, internal.TABLE_ROWS, n_rates))
    rate_sums = np.empty((RATE_SUM_ROWS, n_rates))
    fill_fixed_sums(m1_weights, q1_rows, q1_cols, q1_values, rate_index, forcing, rate_sums)
    start_sums_current = False  # whether the START rows of rate_sums are those of y
    end_decay = np.empty(n_rates)  # e^{r_j A} and the forcing integrals at the end of a quadrature step
    end_integrals = np.empty(n_rates)
    form_constants = np.empty((3, 2))
    form_linear = np.empty((3, 2, 4))
    form_quadratic = np.empty((3, 4, 4))
    per_rate = np.empty((3, n_rates))
    y_new = np.empty(n)
    error = np.empty(n)
    work = np.empty(n)
    observed = np.empty(observables.shape[1])
    g_nodes = np.empty(4)
    g_coefficients = np.zeros(4)
    previous_g = np.zeros(4)  # g cubic of the last accepted internal step, for the predictor
    g_error = np.zeros(4)
    alphas = np.empty(4)
    ratios = np.empty(4)
    inverse_alphas = np.empty(4)
    inverse_alpha = np.zeros(4)
    time_polynomial = np.zeros(4)
    cubics = np.zeros((3, 4))
    previous_cubics = np.zeros((3, 4))  # cubics of the last accepted quadrature step
    s = np.empty(6)
    quadrature_jacobian = np.eye(6)

    if not all_finite(y):
        return STATUS_DIVERGED, t, h, next_out, REJECTED_NONFINITE
    alpha0, beta0 = drive_at(observe, drive, params, rho1, y, observed)
    if not (math.isfinite(alpha0) and math.isfinite(beta0)):
        return STATUS_DIVERGED, t, h, next_out, REJECTED_NONFINITE
    if h <= 0.0:
        rhs(t, y, params, drive, work)
        stats[STAT_RHS] += 1
        # NOTE: this general rule scales the first step by the whole state, so the forced modes,
        # which start at 0, make it tiny (about 1e-6 on the benchmark system, and a few extra
        # steps). A first step sized by the overlaps alone was tried and skipped unseen the
        # transient of the fast modes on starts near the teacher.
        h = initial_step(y, work, error_rtol, atol)

    t_end = t_out[n_out - 1]
    total_u = 0.0  # proposed internal-time step; 0 until an internal step sets it from h
    previous_kind = -1
    in_time = alpha0 == 0.0  # steps in t by quadrature until alpha settles (see RETURN_RATIO)
    switch_alpha = 0.0  # |alpha| when the steps last moved to t
    # NOTE: the driver calls this stepper in slices of its step budget, and each slice starts in
    # the internal time. Results are reproducible (the slices depend only on n), but a slice
    # boundary inside the escape can change the steps there slightly.
    previous_size = 0.0  # U or h of the last accepted step
    previous_rejected = False
    steps_taken = 0
    while next_out < n_out:
        if steps_taken >= max_steps:
            return STATUS_STEP_BUDGET, t, h, next_out, rejection_reason
        steps_taken += 1
        stats[STAT_STEPS] += 1
        kind = QUADRATURE if in_time or alpha0 == 0.0 else INTERNAL
        if not start_sums_current:
            fill_start_sums(y, m1_weights, q1_rows, q1_cols, q1_values, rate_index, forcing, rate_sums)
            start_sums_current = True

        if kind == INTERNAL:
            if total_u == 0.0 or total_u * alpha0 < 0.0:
                total_u = alpha0 * h
            # --- a step of internal time total_u ---
            g_nodes[0] = beta0 / alpha0
            if previous_kind == INTERNAL and abs(total_u) <= PREDICTOR_MAX_GROWTH * abs(previous_size):
                for k in range(1, 4):
                    g_nodes[k] = cubic_value(previous_g, 1.0 + NODES[k] * total_u / previous_size)
            else:
                for k in range(1, 4):
                    g_nodes[k] = g_nodes[0]
            internal.fill_tables(total_u, rates, tables)
            internal.fill_node_forms(tables, rate_sums, form_constants, form_linear, form_quadratic)
            stats[STAT_RHS] += 1
            alphas[0] = alpha0
            converged, finite = internal.solve_node_values(
                g_nodes, drive, rho1, form_constants, form_linear, form_quadratic, g_coefficients, alphas, ratios,
                rtol, atol, stats,
            )
            if not converged:
                # Near a zero of alpha, g = beta / alpha is steep and the iteration fails before
                # the sign test below can: the next step is tried in t, which returns to the
                # internal time at once where alpha is steady.
                stats[STAT_NEWTON_FAILURES] += 1
                rejection_reason = REJECTED_NEWTON if finite else REJECTED_NONFINITE
                count_rejection(stats, rejection_reason)
                total_u *= NEWTON_FAILURE_FACTOR if finite else RETRY_FACTOR
                h = abs(total_u / alpha0)
                in_time = True
                switch_alpha = abs(alpha0)
                previous_rejected = True
                continue
            if not _alpha_keeps_sign(alphas, ALPHA_RATIO):
                # A zero of alpha ahead: the next steps are taken in t.
                rejection_reason = REJECTED_BY_ERROR
                count_rejection(stats, rejection_reason)
                in_time = True
                switch_alpha = abs(alpha0)
                total_u *= NEWTON_FAILURE_FACTOR
                h = abs(total_u / alpha0)
                previous_rejected = True
                continue

            for k in range(4):
                inverse_alphas[k] = 1.0 / alphas[k]
            interpolate_at_nodes(inverse_alphas, inverse_alpha)
            internal.fill_time_polynomial(total_u, inverse_alpha, time_polynomial)
            t_new = internal.time_at(1.0, t, time_polynomial)
            if step_size_collapsed(t, t_new - t):
                return STATUS_STEP_SIZE_COLLAPSE, t, t_new - t, next_out, rejection_reason
            # The time error is estimated by the cubic of 1 / alpha minus its quadratic, one order
            # lower than the cubic's own error. At x = 1 the integral of the cubic is exact for
            # quartics (the Radau nodes), so its error there does not bound the times inside the
            # step, which the outputs use.
            time_error = total_u * inverse_alpha[3] * ERROR_CUBIC_INTEGRAL
            set_error_cubic(g_coefficients[3], g_error)
            internal.end_state_and_error(
                tables[2], g_coefficients, g_error, total_u, time_error, alphas[3], ratios[3], rates, inverse_rates,
                rate_index, forcing, y, end_integrals, per_rate[0], y_new, error,
            )
            step_size = total_u
        else:
            # --- a quadrature step of length h in t ---
            if previous_kind == QUADRATURE and h <= PREDICTOR_MAX_GROWTH * previous_size:
                for k in range(1, 4):
                    theta = 1.0 + NODES[k] * h / previous_size
                    s[k - 1] = cubic_value(previous_cubics[quadrature.ALPHA], theta)
                    s[k + 2] = cubic_value(previous_cubics[quadrature.BETA], theta)
            else:
                for k in range(3):
                    s[k] = alpha0
                    s[k + 3] = beta0
            quadrature.build_cubics(s, alpha0, beta0, cubics)
            exponent = quadrature.largest_exponent(cubics[quadrature.ALPHA], h, largest_rate)
            converged = False
            finite = True
            if exponent <= quadrature.EXPONENT_LIMIT:
                start = s.copy()
                fresh = previous_kind != QUADRATURE or previous_rejected
                converged, finite = quadrature.solve_node_values(
                    s, alpha0, beta0, h, rho1, rates, largest_rate, rate_sums, drive, cubics, per_rate,
                    quadrature_jacobian, fresh, rtol, atol, stats,
                )
                if finite and not converged and not fresh:
                    # The carried Jacobian may have drifted: one more try from a difference Jacobian.
                    s[:] = start
                    converged, finite = quadrature.solve_node_values(
                        s, alpha0, beta0, h, rho1, rates, largest_rate, rate_sums, drive, cubics, per_rate,
                        quadrature_jacobian, True, rtol, atol, stats,
                    )
                quadrature.build_cubics(s, alpha0, beta0, cubics)
                exponent = quadrature.largest_exponent(cubics[quadrature.ALPHA], h, largest_rate)
            if converged and exponent > quadrature.EXPONENT_LIMIT:
                converged = False
            if exponent > quadrature.EXPONENT_LIMIT:
                rejection_reason = REJECTED_BY_ERROR
                count_rejection(stats, rejection_reason)
                h *= max(MIN_FACTOR, SAFETY * quadrature.EXPONENT_LIMIT / exponent)
                previous_rejected = True
                continue
            if not converged:
                stats[STAT_NEWTON_FAILURES] += 1
                rejection_reason = REJECTED_NEWTON if finite else REJECTED_NONFINITE
                count_rejection(stats, rejection_reason)
                h *= NEWTON_FAILURE_FACTOR if finite else RETRY_FACTOR
                previous_rejected = True
                continue
            if step_size_collapsed(t, h):
                return STATUS_STEP_SIZE_COLLAPSE, t, h, next_out, rejection_reason
            t_new = t + h

            quadrature.propagate(1.0, h, cubics, rates, largest_rate, rate_index, forcing, y, per_rate, y_new, True)
            # Kept for the per-rate sums of the next step: the outputs reuse per_rate.
            end_decay[:] = per_rate[quadrature.EXPONENTIAL]
            end_integrals[:] = per_rate[quadrature.INTEGRAL]
            stats[STAT_RHS] += 1
            # Error: the forcing of the error cubic of beta, and the error of A(1) carried by dz/dA = r z.
            u_error = h * cubics[quadrature.ALPHA, 3] * ERROR_CUBIC_INTEGRAL
            for i in range(n):
                j = rate_index[i]
                error[i] = abs(forcing[i] * per_rate[quadrature.ERROR_INTEGRAL, j]) + abs(u_error * rates[j] * y_new[i])
            step_size = h

        error_norm = _error_norm(error, y, y_new, error_rtol, atol)
        if not math.isfinite(error_norm):
            error_norm = np.inf
            rejection_reason = REJECTED_NONFINITE
            factor = RETRY_FACTOR
        else:
            error_norm = max(error_norm, MIN_ERROR_NORM)
            rejection_reason = REJECTED_BY_ERROR
            factor = min(MAX_FACTOR, max(MIN_FACTOR, SAFETY * error_norm ** (-ERROR_EXPONENT)))
        if previous_rejected:
            factor = min(1.0, factor)
        if error_norm > 1.0:
            count_rejection(stats, rejection_reason)
            if kind == INTERNAL:
                total_u *= factor
            else:
                h *= factor
            previous_rejected = True
            continue

        # Accepted: outputs and events inside the step, from the same propagation.
        stats[STAT_ACCEPTED] += 1
        next_out = _write_outputs(
            kind, t, t_new, t_end, h, total_u, time_polynomial, g_coefficients, cubics, rates, largest_rate,
            rate_index, forcing, y, y_new, rate_sums, per_rate, t_out, next_out, observe, params, drive, observables,
            states, save_state, work, observed,
        )
        if event_spec.shape[0] > 0:
            _locate_events(
                kind, t, h, total_u, time_polynomial, g_coefficients, cubics, rates, largest_rate, rate_index, forcing, y,
                y_new, per_rate, observe, params, drive, event_spec, event_state, work, observed, t_end,
            )
        if t_new > t_end:
            # The run ends inside this step: its state at t_end is the last output's.
            fraction = _fraction_of(t_end, kind, t, t_new, h, time_polynomial)
            _state_at(kind, fraction, h, total_u, g_coefficients, cubics, rates, largest_rate, rate_index, forcing, y,
                      per_rate, y_new)
            t_new = t_end
            start_sums_current = False
        elif kind == INTERNAL:
            advance_start_sums(tables[2][0], end_integrals, rate_sums)
        else:
            advance_start_sums(end_decay, end_integrals, rate_sums)

        step_length = t_new - t
        t = t_new
        y[:] = y_new
        if max_abs(y) > max_abs_state:
            return STATUS_DIVERGED, t, h, next_out, REJECTED_NONFINITE
        alpha0, beta0 = drive_at(observe, drive, params, rho1, y, observed)
        if not (math.isfinite(alpha0) and math.isfinite(beta0)):
            return STATUS_DIVERGED, t, h, next_out, REJECTED_NONFINITE

        previous_kind = kind
        previous_size = step_size
        if kind == INTERNAL:
            # A zero of alpha ahead within ZERO_AHEAD_STEPS steps of this length, extrapolating
            # alpha linearly: the internal steps would shrink towards it without end, since g is
            # singular there, so the next steps are taken in t.
            alpha_slope = _cubic_slope_at_end(alphas) * alphas[3] / total_u
            if alpha_slope * alphas[3] < 0.0 and -alphas[3] / alpha_slope < ZERO_AHEAD_STEPS * step_length:
                in_time = True
                switch_alpha = abs(alphas[3])
            previous_g[:] = g_coefficients
            total_u *= factor
            h = step_length * factor
        else:
            previous_cubics[:, :] = cubics
            h *= factor
            total_u = 0.0
            # Back to the internal time once alpha is steady over a step and either has moved
            # back away from zero past its size at the switch (after the escape) or the
            # quadrature's stiffness limit has started to bound the steps.
            alphas[0] = cubics[quadrature.ALPHA, 0]
            for k in range(1, 4):
                alphas[k] = s[k - 1]
            steady = _alpha_keeps_sign(alphas, RETURN_RATIO)
            # NOTE: where alpha tends to 0 without crossing it, neither condition below comes true and
            # the steps stay in t. On the modal logistic test problem past its equilibrium the state
            # then alternates about it at a fixed step: 83619 steps to t = 1e6, against 74 for radau5.
            # The likely cause is that the collocation, with the start among its nodes, does not damp
            # a stiff feedback through the drive (it is not L-stable).
            limited = exponent >= 0.5 * quadrature.EXPONENT_LIMIT
            if steady and (abs(alpha0) >= switch_alpha or limited):
                in_time = False
        previous_rejected = False
        rejection_reason = NOT_REJECTED

    return STATUS_SUCCESS, t, h, next_out, rejection_reason


# The modal form and the system's own observe and rhs must agree to this
# fraction of the sum of the absolute values of their terms.
MODAL_CHECK_TOLERANCE = 1e-10


# Systems whose modal form passed the check, by id, with a fingerprint of
# their arrays, so that repeated solves of one system (a benchmark, a sweep)
# do not pay for it again, while arrays changed in place are checked anew.
_checked_systems = weakref.WeakValueDictionary()
_checked_fingerprints = {}


def _fingerprint(system):
    modal = system.modal
    arrays = (system.params, system.y0, modal.rates, modal.rate_index, modal.forcing, modal.m1_weights,
              modal.q1_rows, modal.q1_cols, modal.q1_values)
    data = tuple(np.ascontiguousarray(array).tobytes() for array in arrays if isinstance(array, np.ndarray))
    return hash((data, modal.ridge, modal.rho1))


def _check_modal_form(system):
    """Raise ``ValueError`` unless the modal form gives the system's own overlaps and right-hand side.

    ``ModalForm.check`` runs again, for arrays changed in place since the
    system was built. Then the forms of ``m1, q1`` are compared with the
    system's ``observe``, and ``(rates alpha - ridge) y + forcing beta`` with
    its ``rhs``. Both comparisons run at ``y0`` and at a fixed perturbation
    of it, so that terms that vanish at ``y0`` are also tested (the forced
    equations of the spectral modes start at 0). A state that is not finite
    is left to the stepper, which stops there as diverged.
    """
    fingerprint = _fingerprint(system)
    if _checked_systems.get(id(system)) is system and _checked_fingerprints.get(id(system)) == fingerprint:
        return
    modal = system.modal
    modal.check(system.size)
    index = np.arange(system.size)
    perturbed = system.y0 * (1.0 + 0.1 * np.sin(index + 1.0)) + 0.01 * np.cos(index + 1.0)
    observed = np.empty(len(system.observable_names))
    slope = np.empty(system.size)
    for state in (system.y0, perturbed):
        if not np.all(np.isfinite(state)):
            continue
        system.observe(state, system.params, system.drive, observed)
        m1_terms = modal.m1_weights * state
        q1_terms = modal.q1_values * state[modal.q1_rows] * state[modal.q1_cols]
        for name, terms, value in (("m1", m1_terms, observed[0]), ("q1", q1_terms, observed[1])):
            scale = np.sum(np.abs(terms)) + abs(value)
            if not abs(np.sum(terms) - value) <= MODAL_CHECK_TOLERANCE * scale:
                raise ValueError(
                    f"the modal form of {name} of {system.name} gives {float(np.sum(terms))!r} where the system's "
                    f"observe gives {float(value)!r}: modal m1_weights and q1_rows, q1_cols, q1_values must describe "
                    f"its first two observables (m1, q1)"
                )
        alpha, beta = system.drive(observed[1], observed[0], modal.rho1)[:2]
        decay = (modal.rates[modal.rate_index] * alpha - modal.ridge) * state
        forced = modal.forcing * beta
        system.rhs(0.0, state, system.params, system.drive, slope)
        mismatch = np.abs(decay + forced - slope) - MODAL_CHECK_TOLERANCE * (np.abs(decay) + np.abs(forced) + np.abs(slope))
        if np.any(mismatch > 0.0):
            i = int(np.argmax(mismatch))
            raise ValueError(
                f"the modal form of {system.name} gives dy/dt = {float(decay[i] + forced[i])!r} for equation {i} where "
                f"the system's rhs gives {float(slope[i])!r}: modal rates, rate_index, forcing, ridge and rho1 must describe "
                f"its equations"
            )
    _checked_systems[id(system)] = system
    _checked_fingerprints[id(system)] = fingerprint
    weakref.finalize(system, _checked_fingerprints.pop, id(system), None)


class ExponentialMethod:
    """Exponential collocation bound to its compiled stepper, for systems in modal form."""

    name = "exponential"
    order = 5

    def check_system(self, system):
        """Raise ``ValueError`` unless ``system`` has a modal form without a ridge penalty."""
        if system.modal is None:
            raise ValueError(
                f"method = 'exponential' needs a system in modal form (spectral modes or the exact flow), and "
                f"{system.name} is not; choose rodas4, radau5 or bdf"
            )
        if system.modal.ridge != 0.0:
            raise ValueError(
                f"method = 'exponential' supports ridge = 0 only, and {system.name} has ridge = {system.modal.ridge:g}; "
                "choose rodas4, radau5 or bdf"
            )
        _check_modal_form(system)

    def advance(self, system, params, y, t, h, t_out, next_out, observables, states, save_state,
                rtol, atol, max_steps, max_abs_state, stats, event_spec, event_state):
        """Run the compiled stepper over ``t_out[next_out:]``; see ``integrate_exponential``."""
        modal = system.modal
        return integrate_exponential(
            *system.kernels, params, y, t, h,
            t_out, next_out, observables, states, save_state,
            system.kl, system.ku, system.rank,
            np.ascontiguousarray(modal.rates, dtype=np.float64),
            np.ascontiguousarray(modal.rate_index, dtype=np.int64),
            np.ascontiguousarray(modal.forcing, dtype=np.float64),
            float(modal.rho1),
            np.ascontiguousarray(modal.m1_weights, dtype=np.float64),
            np.ascontiguousarray(modal.q1_rows, dtype=np.int64),
            np.ascontiguousarray(modal.q1_cols, dtype=np.int64),
            np.ascontiguousarray(modal.q1_values, dtype=np.float64),
            rtol, atol, max_steps, max_abs_state, stats, event_spec, event_state,
        )
