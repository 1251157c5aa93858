"""Radau IIA of order 5 (three stages), compiled with Numba, for structured stiff systems.

The method is the collocation method at the Radau points ``c = (4 - sqrt 6) / 10,
(4 + sqrt 6) / 10, 1``: L-stable, stiffly accurate, order 5 and stage order 3.
The stage equations ``Z = h (A x I) F(y + Z)`` are solved by a simplified
Newton iteration with the Jacobian frozen over the step. After the change of
variables ``Z = (T x I) W``, which block-diagonalises ``A^{-1}``, one Newton
iteration solves one real system ``(gamma / h I - J) x = r`` and one complex
system ``((alpha + i beta) / h I - J) x = r``, each factorised once per step
with the banded-plus-low-rank solver of ``structured_linalg``.

The error estimate, its filtering by ``(gamma / h I - J)^{-1}``, the Newton
stopping rule and the predictive step-size controller follow Hairer and
Wanner, *Solving Ordinary Differential Equations II*, 2nd ed. (Springer,
1996), section IV.8, which also describes their Fortran code RADAU5.
The coefficients are computed below from their defining conditions.

A step that would pass an output time is cut to end on it, and the step
after it starts again from the size the controller proposed. The continuous
output of the method, the collocation cubic, is accurate to O(h^4) only,
against O(h^6) for the step points, so outputs taken from it inside longer
steps had errors of about the local error tolerance ``0.1 rtol^(2/3)``. On
the K = 517 spectral-mode system of the benchmarks at rtol 1e-10 that was
1.3e-6, and with the outputs on step ends it is 9.9e-8, for 4 % more steps
(``benchmarks/README.md``). Where the grid is denser than the steps, a
step that reaches four output times or more ends on the last of them, and
the others come from the cubic. So a grid of any size takes at most four
steps where the controller proposed one. This happens on the log-spaced
grids of the command line at early times, where the steps are longer than
the grid spacing. On the problem of ``examples/power_law.toml`` with
radau5 at rtol 1e-8, the largest output error of m1 is 2.2e-7, at
t = 0.034, and that of q1 is 4.7e-8.
The cubic also locates events and gives output times within rounding of a
step end.
"""

import numba
import numpy as np

from .common import (
    MAX_FACTOR,
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
    advance_state,
    all_finite,
    allocate_factors,
    allocate_jacobian,
    count_rejection,
    initial_step,
    locate_events,
    next_step_size,
    step_end_at_output,
    step_size_collapsed,
    stepper_signature,
    weighted_rms,
    write_dense_outputs,
)
from .structured_linalg import factor_structured, solve_structured, structured_residual


def _radau_iia_coefficients():
    """Compute the coefficients of three-stage Radau IIA from its nodes and defining conditions."""
    sqrt6 = np.sqrt(6.0)
    nodes = np.array([(4.0 - sqrt6) / 10.0, (4.0 + sqrt6) / 10.0, 1.0])

    # Collocation: sum_j a_ij c_j^(k-1) = c_i^k / k for k = 1, 2, 3.
    powers = np.vander(nodes, 3, increasing=True)
    integrals = np.array([[node**k / k for k in (1, 2, 3)] for node in nodes])
    a = integrals @ np.linalg.inv(powers)
    a_inverse = np.linalg.inv(a)

    # A^{-1} has one real eigenvalue gamma and a pair alpha +- i beta. The
    # eigenvector of alpha - i beta, written p + i q, gives
    # A^{-1} [p q] = [p q] [[alpha, -beta], [beta, alpha]]. Both eigenvectors
    # are scaled to a last component of 1, so the last row of T is (1, 1, 0).
    eigenvalues, eigenvectors = np.linalg.eig(a_inverse)
    real_index = int(np.argmin(np.abs(eigenvalues.imag)))
    pair_index = int(np.argmin(eigenvalues.imag))
    real_vector = eigenvectors[:, real_index].real / eigenvectors[2, real_index].real
    pair_vector = eigenvectors[:, pair_index] / eigenvectors[2, pair_index]
    transform = np.column_stack((real_vector, pair_vector.real, pair_vector.imag))
    gamma = float(eigenvalues[real_index].real)
    alpha = float(eigenvalues[pair_index].real)
    beta = float(-eigenvalues[pair_index].imag)

    # Embedded formula y_hat = y0 + h (b0_hat f(y0) + sum_i b_hat_i f(Y_i))
    # with b0_hat = 1 / gamma and order 3: sum_i b_hat_i c_i^(k-1) = 1 / k
    # - b0_hat [k == 1] for k = 1, 2, 3. Since h F = (A^{-1} x I) Z,
    # y_hat - y_new = (h / gamma) (f(y0) + (1 / h) sum_j e_j Z_j) with
    # e = gamma A^{-T} (b_hat - b) and b the last row of A.
    b_hat = np.linalg.solve(powers.T, np.array([1.0 - 1.0 / gamma, 0.5, 1.0 / 3.0]))
    error_weights = gamma * (a_inverse.T @ (b_hat - a[2]))

    # Collocation polynomial u(t0 + theta h) = y0 + sum_{p=1}^{3} d_p theta^p
    # with u(t0 + c_i h) = y0 + Z_i, so d = V^{-1} Z with V_ip = c_i^p.
    dense = np.linalg.inv(np.vander(nodes, 4, increasing=True)[:, 1:])

    return nodes, a, gamma, alpha, beta, transform, np.linalg.inv(transform), error_weights, dense


(
    NODES,  # collocation nodes c_i: the Radau points (4 - sqrt 6) / 10, (4 + sqrt 6) / 10, 1
    BUTCHER_A,  # Runge-Kutta matrix A of the collocation method at NODES
    GAMMA,  # real eigenvalue of A^{-1}, about 3.6378
    ALPHA,  # real part of the complex eigenvalues of A^{-1}, about 2.6811
    BETA,  # imaginary part (positive) of the complex eigenvalues of A^{-1}, about 3.0504
    TRANSFORM,  # T with T^{-1} A^{-1} T = [[gamma, 0, 0], [0, alpha, -beta], [0, beta, alpha]]
    TRANSFORM_INVERSE,  # T^{-1}
    ERROR_WEIGHTS,  # e_j of the error estimate (gamma / h I - J)^{-1} (f(y0) + sum_j e_j Z_j / h)
    DENSE_OUTPUT,  # d = DENSE_OUTPUT @ Z gives the theta^1..theta^3 coefficients of the collocation polynomial
) = _radau_iia_coefficients()

# The error estimate is O(h^4), so the controller uses h_new = h err^(-1/4).
ERROR_EXPONENT = 0.25
MAX_NEWTON_ITERATIONS = 7
# A Newton contraction rate at or above this value counts as divergence.
MAX_NEWTON_RATE = 0.99
# The Jacobian is kept for the next step when the Newton iteration of the
# accepted step contracted at least this fast (or converged at once).
JACOBIAN_REUSE_RATE = 1e-3
# Step factor after a failed Newton iteration.
NEWTON_FAILURE_FACTOR = 0.5
# Floor of the error norm, so that the controller never divides by zero.
MIN_ERROR_NORM = 1e-10
# Floor of the previous step's error norm in the predictive controller.
MIN_PREDICTIVE_ERROR_NORM = 1e-2

RADAU_SIGNATURE = stepper_signature()


@numba.njit(RADAU_SIGNATURE, cache=True)
def integrate_radau5(
    rhs, jac, observe, drive, params, y, t, h, t_out, first_out, observables, states, save_state,
    kl, ku, rank, rtol, atol, max_steps, max_abs_state, stats, event_spec, event_state,
):
    """Advance ``y`` from ``t`` past ``t_out[first_out:]`` with Radau IIA, writing outputs on the way.

    A step that would pass an output time ends on it, or on the last output
    time in reach where the grid is denser than the steps
    (``step_end_at_output``). So the outputs of a grid sparser than the steps
    are step points, not values of the collocation cubic.

    Returns
    -------
    status : int
        ``STATUS_SUCCESS`` when every output time was reached, otherwise the
        reason the integration stopped.
    t, h : float
        Time reached and the step size proposed for the next step.
    next_out : int
        Index of the first output time not written.
    rejection_reason : int
        Why the last rejected step was rejected (for failure messages).
    """
    n = y.shape[0]
    n_out = t_out.shape[0]
    eps = np.finfo(np.float64).eps

    band, U, V = allocate_jacobian(n, kl, ku, rank)

    # Factors of the real system (gamma / h I - J).
    (
        real_lu, real_multipliers, real_pivots, real_woodbury_z, real_capacitance, real_capacitance_pivots,
    ) = allocate_factors(n, kl, ku, rank, 0.0)

    # Factors of the complex system ((alpha + i beta) / h I - J).
    (
        pair_lu, pair_multipliers, pair_pivots, pair_woodbury_z, pair_capacitance, pair_capacitance_pivots,
    ) = allocate_factors(n, kl, ku, rank, 0j)

    stage_z = np.zeros((3, n))  # Z_i = Y_i - y
    stage_w = np.zeros((3, n))  # W = (T^{-1} x I) Z
    stage_f = np.zeros((3, n))  # f(t + c_i h, y + Z_i)
    real_rhs = np.empty(n)
    real_increment = np.empty(n)
    pair_rhs = np.empty(n, dtype=np.complex128)
    pair_increment = np.empty(n, dtype=np.complex128)
    f0 = np.empty(n)
    stage_argument = np.empty(n)
    scale = np.empty(n)
    y_new = np.empty(n)
    error_rhs = np.empty(n)
    error = np.empty(n)
    observed = np.empty(observables.shape[1])
    polynomial = np.zeros((4, n))

    next_out = first_out
    rejection_reason = NOT_REJECTED
    if next_out >= n_out:
        return STATUS_SUCCESS, t, h, next_out, rejection_reason

    rhs(t, y, params, drive, f0)
    stats[STAT_RHS] += 1
    if not all_finite(f0) or not all_finite(y):
        return STATUS_DIVERGED, t, h, next_out, REJECTED_NONFINITE

    # The embedded solution has order 3 while y_new has order 5, so (as in
    # RADAU5) the error test and the Newton stopping rule use
    # rtol' = 0.1 rtol^(2/3), which makes the global error roughly
    # proportional to rtol, and atol' = atol rtol' / rtol.
    error_rtol = 0.1 * rtol ** (2.0 / 3.0)
    error_atol = atol * error_rtol / rtol
    newton_tolerance = max(10.0 * eps / error_rtol, min(0.03, np.sqrt(error_rtol)))

    if h <= 0.0:
        h = initial_step(y, f0, error_rtol, error_atol)

    first_step = True
    previous_rejected = False
    jacobian_current = False  # band, U, V contain J at the current y
    need_jacobian = True
    have_polynomial = False  # polynomial contains the last accepted step's collocation polynomial
    polynomial_step = 0.0
    newton_eta = 1.0  # estimate of rate / (1 - rate), carried between steps
    accepted_step = 0.0  # previous accepted step and its error norm, for the predictive controller
    accepted_error = 0.0
    steps_taken = 0
    while next_out < n_out:
        if steps_taken >= max_steps:
            return STATUS_STEP_BUDGET, t, h, next_out, rejection_reason
        # A step that would pass an output time ends on one, so that outputs
        # are step points where the grid allows (see the module docstring).
        h_proposed = h
        t_new, clipped = step_end_at_output(t, h, t_out, next_out)
        if clipped:
            h = t_new - t
        if step_size_collapsed(t, h):
            return STATUS_STEP_SIZE_COLLAPSE, t, h, next_out, rejection_reason
        steps_taken += 1
        stats[STAT_STEPS] += 1

        if need_jacobian and not jacobian_current:
            jac(t, y, params, drive, band, U, V)
            stats[STAT_JACOBIANS] += 1
            jacobian_current = True
        need_jacobian = True  # every rejection below requests a Jacobian at the current y

        real_shift = GAMMA / h
        pair_shift = complex(ALPHA / h, BETA / h)
        real_quality = factor_structured(
            real_shift, band, kl, ku, U, V, real_lu, real_multipliers, real_pivots,
            real_woodbury_z, real_capacitance, real_capacitance_pivots,
        )
        pair_quality = factor_structured(
            pair_shift, band, kl, ku, U, V, pair_lu, pair_multipliers, pair_pivots,
            pair_woodbury_z, pair_capacitance, pair_capacitance_pivots,
        )
        stats[STAT_FACTORIZATIONS] += 2
        if not (real_quality > 0.0 and pair_quality > 0.0):
            rejection_reason = REJECTED_SINGULAR
            count_rejection(stats, rejection_reason)
            h *= RETRY_FACTOR
            previous_rejected = True
            continue

        # Starting values: the last collocation polynomial extrapolated to the
        # new nodes, or zero when there is none. After a step cut short at an
        # output time the new step can be many times longer, and extrapolating
        # that far gave starting values worse than zero (Newton failures).
        extrapolate = have_polynomial and h <= MAX_FACTOR * polynomial_step
        for i in range(3):
            if extrapolate:
                theta = 1.0 + NODES[i] * h / polynomial_step
                for k in range(n):
                    value = polynomial[3, k]
                    for p in range(2, -1, -1):
                        value = value * theta + polynomial[p, k]
                    stage_z[i, k] = value - y[k]
            else:
                for k in range(n):
                    stage_z[i, k] = 0.0
        for i in range(3):
            for k in range(n):
                stage_w[i, k] = (
                    TRANSFORM_INVERSE[i, 0] * stage_z[0, k]
                    + TRANSFORM_INVERSE[i, 1] * stage_z[1, k]
                    + TRANSFORM_INVERSE[i, 2] * stage_z[2, k]
                )
        for k in range(n):
            scale[k] = error_atol + error_rtol * abs(y[k])

        # Simplified Newton iteration in the transformed variables W:
        # (Lambda / h x I - I x J) dW = (T^{-1} x I) F(y + Z) - (Lambda / h x I) W.
        # It stops once eta ||dW|| <= newton_tolerance, where eta = rate / (1 - rate)
        # bounds the remaining error, starting from the previous step's eta.
        eta = max(newton_eta, eps) ** 0.8
        previous_norm = 0.0
        rate = 0.0
        iterations = 0
        converged = False
        failure = NOT_REJECTED
        while iterations < MAX_NEWTON_ITERATIONS:
            for i in range(3):
                for k in range(n):
                    stage_argument[k] = y[k] + stage_z[i, k]
                rhs(t + NODES[i] * h, stage_argument, params, drive, stage_f[i])
            stats[STAT_RHS] += 3
            if not (all_finite(stage_f[0]) and all_finite(stage_f[1]) and all_finite(stage_f[2])):
                failure = REJECTED_NONFINITE
                break

            for k in range(n):
                f_1 = stage_f[0, k]
                f_2 = stage_f[1, k]
                f_3 = stage_f[2, k]
                g_1 = TRANSFORM_INVERSE[0, 0] * f_1 + TRANSFORM_INVERSE[0, 1] * f_2 + TRANSFORM_INVERSE[0, 2] * f_3
                g_2 = TRANSFORM_INVERSE[1, 0] * f_1 + TRANSFORM_INVERSE[1, 1] * f_2 + TRANSFORM_INVERSE[1, 2] * f_3
                g_3 = TRANSFORM_INVERSE[2, 0] * f_1 + TRANSFORM_INVERSE[2, 1] * f_2 + TRANSFORM_INVERSE[2, 2] * f_3
                real_rhs[k] = g_1 - real_shift * stage_w[0, k]
                real_increment[k] = real_rhs[k]
                pair_real = g_2 - (ALPHA * stage_w[1, k] - BETA * stage_w[2, k]) / h
                pair_imag = g_3 - (BETA * stage_w[1, k] + ALPHA * stage_w[2, k]) / h
                pair_rhs[k] = complex(pair_real, pair_imag)
                pair_increment[k] = pair_rhs[k]
            solve_structured(
                real_lu, real_multipliers, real_pivots, kl, ku, V, real_woodbury_z,
                real_capacitance, real_capacitance_pivots, real_increment,
            )
            solve_structured(
                pair_lu, pair_multipliers, pair_pivots, kl, ku, V, pair_woodbury_z,
                pair_capacitance, pair_capacitance_pivots, pair_increment,
            )
            stats[STAT_NEWTON_ITERATIONS] += 1
            iterations += 1
            if not (all_finite(real_increment) and all_finite(pair_increment.real)
                    and all_finite(pair_increment.imag)):
                failure = REJECTED_NONFINITE
                break
            if iterations == 1:
                # The Woodbury splitting can lose accuracy when the banded core
                # is nearly singular although the full matrix is not.
                real_error = structured_residual(real_shift, band, kl, ku, U, V, real_increment, real_rhs)
                pair_error = structured_residual(pair_shift, band, kl, ku, U, V, pair_increment, pair_rhs)
                if not (real_error <= RESIDUAL_TOLERANCE and pair_error <= RESIDUAL_TOLERANCE):
                    failure = REJECTED_SINGULAR
                    break

            total = 0.0
            for k in range(n):
                first = real_increment[k] / scale[k]
                second = pair_increment[k].real / scale[k]
                third = pair_increment[k].imag / scale[k]
                total += first * first + second * second + third * third
            norm = np.sqrt(total / (3 * n))

            if iterations > 1:
                rate = norm / previous_norm
                if rate >= MAX_NEWTON_RATE:
                    failure = REJECTED_NEWTON
                    break
                eta = rate / (1.0 - rate)

            for k in range(n):
                stage_w[0, k] += real_increment[k]
                stage_w[1, k] += pair_increment[k].real
                stage_w[2, k] += pair_increment[k].imag
            for i in range(3):
                for k in range(n):
                    stage_z[i, k] = (
                        TRANSFORM[i, 0] * stage_w[0, k]
                        + TRANSFORM[i, 1] * stage_w[1, k]
                        + TRANSFORM[i, 2] * stage_w[2, k]
                    )

            if eta * norm <= newton_tolerance:
                converged = True
                break
            # Give up early when the observed rate cannot meet the tolerance
            # within the iterations left.
            if iterations > 1:
                remaining = MAX_NEWTON_ITERATIONS - iterations
                if rate**remaining / (1.0 - rate) * norm > newton_tolerance:
                    failure = REJECTED_NEWTON
                    break
            previous_norm = norm

        if not converged:
            if failure == NOT_REJECTED:
                failure = REJECTED_NEWTON
            rejection_reason = failure
            count_rejection(stats, rejection_reason)
            if failure == REJECTED_NEWTON:
                stats[STAT_NEWTON_FAILURES] += 1
                h *= NEWTON_FAILURE_FACTOR
            else:
                h *= RETRY_FACTOR
            previous_rejected = True
            continue

        # Stiffly accurate: the new solution is the last stage. The error
        # estimate filters y_hat - y_new through (gamma / h I - J)^{-1}. After a
        # rejection or at the first step, a large estimate is recomputed once
        # with f(y + err) in place of f(y), which removes its growth for very
        # stiff components.
        for k in range(n):
            y_new[k] = y[k] + stage_z[2, k]
            error_rhs[k] = (
                ERROR_WEIGHTS[0] * stage_z[0, k] + ERROR_WEIGHTS[1] * stage_z[1, k] + ERROR_WEIGHTS[2] * stage_z[2, k]
            ) / h
            error[k] = f0[k] + error_rhs[k]
        solve_structured(
            real_lu, real_multipliers, real_pivots, kl, ku, V, real_woodbury_z,
            real_capacitance, real_capacitance_pivots, error,
        )
        error_norm = weighted_rms(error, y, y_new, error_rtol, error_atol)
        if error_norm >= 1.0 and (first_step or previous_rejected) and np.isfinite(error_norm):
            for k in range(n):
                stage_argument[k] = y[k] + error[k]
            rhs(t, stage_argument, params, drive, error)
            stats[STAT_RHS] += 1
            for k in range(n):
                error[k] += error_rhs[k]
            solve_structured(
                real_lu, real_multipliers, real_pivots, kl, ku, V, real_woodbury_z,
                real_capacitance, real_capacitance_pivots, error,
            )
            error_norm = weighted_rms(error, y, y_new, error_rtol, error_atol)
        if not (np.isfinite(error_norm) and all_finite(y_new)):
            rejection_reason = REJECTED_NONFINITE
            count_rejection(stats, rejection_reason)
            h *= RETRY_FACTOR
            previous_rejected = True
            continue

        # Standard controller, with a safety factor that falls as the Newton
        # iteration needs more iterations (as in RADAU5).
        safety = min(
            SAFETY, SAFETY * (2 * MAX_NEWTON_ITERATIONS + 1) / (2 * MAX_NEWTON_ITERATIONS + iterations)
        )
        error_norm = max(error_norm, MIN_ERROR_NORM)
        factor = min(MAX_FACTOR, max(MIN_FACTOR, safety * error_norm ** (-ERROR_EXPONENT)))

        if error_norm > 1.0:
            rejection_reason = REJECTED_BY_ERROR
            count_rejection(stats, rejection_reason)
            h *= factor
            previous_rejected = True
            continue

        # Accepted: build the collocation polynomial, write the outputs that
        # fall inside the step, then advance.
        stats[STAT_ACCEPTED] += 1
        for k in range(n):
            polynomial[0, k] = y[k]
        for p in range(3):
            for k in range(n):
                polynomial[p + 1, k] = (
                    DENSE_OUTPUT[p, 0] * stage_z[0, k]
                    + DENSE_OUTPUT[p, 1] * stage_z[1, k]
                    + DENSE_OUTPUT[p, 2] * stage_z[2, k]
                )
        have_polynomial = True
        polynomial_step = h
        if event_spec.shape[0] > 0:
            locate_events(t, h, polynomial, y_new, observe, params, drive, event_spec, event_state,
                          stage_argument, observed)
        if next_out < n_out and t_out[next_out] <= t_new:
            next_out = write_dense_outputs(
                t, h, t_new, polynomial, y_new, t_out, next_out, observe, params, drive,
                observables, states, save_state, stage_argument, observed,
            )

        t = t_new
        if not advance_state(rhs, params, drive, t, y, y_new, f0, max_abs_state, stats):
            return STATUS_DIVERGED, t, h, next_out, REJECTED_NONFINITE
        jacobian_current = False
        need_jacobian = not (iterations == 1 or rate <= JACOBIAN_REUSE_RATE)
        newton_eta = eta

        # Predictive (Gustafsson) controller: take the smaller of the standard
        # step and the one extrapolated from the last two accepted errors.
        if accepted_step > 0.0:
            predictive = (
                SAFETY * error_norm ** (-ERROR_EXPONENT)
                * (h / accepted_step) * (accepted_error / error_norm) ** ERROR_EXPONENT
            )
            factor = min(factor, min(MAX_FACTOR, max(MIN_FACTOR, predictive)))
        accepted_step = h
        accepted_error = max(MIN_PREDICTIVE_ERROR_NORM, error_norm)
        h = next_step_size(h, factor, previous_rejected, clipped, h_proposed)
        first_step = False
        previous_rejected = False
        rejection_reason = NOT_REJECTED

    return STATUS_SUCCESS, t, h, next_out, rejection_reason


class RadauMethod:
    """Radau IIA of order 5 bound to its compiled stepper, as the driver expects of a method."""

    name = "radau5"
    order = 5

    def advance(self, system, params, y, t, h, t_out, next_out, observables, states, save_state,
                rtol, atol, max_steps, max_abs_state, stats, event_spec, event_state):
        """Run the compiled stepper over ``t_out[next_out:]``; see ``integrate_radau5``."""
        return integrate_radau5(
            *system.kernels, params, y, t, h,
            t_out, next_out, observables, states, save_state,
            system.kl, system.ku, system.rank,
            rtol, atol, max_steps, max_abs_state, stats, event_spec, event_state,
        )
