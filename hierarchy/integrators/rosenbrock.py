"""Generic adaptive Rosenbrock stepper, compiled with Numba, for structured stiff systems.

One compiled function runs any method given as a ``RosenbrockTableau`` and
any system given as first-class functions with the signatures of
``hierarchy.kernel_types``. The linear systems ``(I / (h gamma) - J) u = r``
are solved with the banded-plus-low-rank factorisation of
``structured_linalg``, once per step for all stages.

Step-size control is the standard one of Hairer and Wanner (*Solving
Ordinary Differential Equations II*, 2nd ed., 1996, section IV.8): the
error is measured in the weighted RMS norm with weights
``atol + rtol max(|y|, |y_new|)``, and the next step is
``h * clip(SAFETY err^(-1 / (q + 1)), MIN_FACTOR, MAX_FACTOR)``, never
growing right after a rejection. Outputs are taken from the dense output of
the method, so the output grid does not constrain the steps.
"""

import numba
import numpy as np
from numba import types

from ..kernel_types import DriveType, JacType, ObserveType, RhsType, f64, matrix, vector
from .structured_linalg import factor_structured, solve_structured, structured_residual

# Integer statuses shared with ``hierarchy.integrators.solution``.
STATUS_SUCCESS = 0
STATUS_DIVERGED = 1
STATUS_STEP_SIZE_COLLAPSE = 2
STATUS_STEP_BUDGET = 3

# Why the last step was rejected, reported with a step-size collapse;
# NOT_REJECTED when the accepted steps themselves shrank to nothing.
NOT_REJECTED = -1
REJECTED_BY_ERROR = 0
REJECTED_NONFINITE = 1
REJECTED_SINGULAR = 2

# Indices of the step statistics array.
STAT_STEPS = 0
STAT_ACCEPTED = 1
STAT_REJECTED = 2
STAT_RHS = 3
STAT_JACOBIANS = 4
STAT_FACTORIZATIONS = 5
STAT_SINGULAR_REJECTIONS = 6
STAT_NONFINITE_REJECTIONS = 7
N_STATS = 8

SAFETY = 0.9
MIN_FACTOR = 0.2
MAX_FACTOR = 6.0
# Step factor after a non-finite stage or a near-singular linear system.
RETRY_FACTOR = 0.25
# Largest acceptable backward error of the first stage solve; beyond it (or
# at an exactly zero pivot) the step is retried with a smaller h. Small
# pivots alone are no reason to reject: with a conservation law J is
# singular and I / (h gamma) - J is legitimately close to singular for large h.
RESIDUAL_TOLERANCE = 1e-9

_int = types.int64
_ivector = types.int64[::1]

STEPPER_SIGNATURE = types.Tuple((_int, f64, f64, _int, _int))(
    RhsType,  # rhs
    JacType,  # jac
    ObserveType,  # observe
    DriveType,  # drive
    vector,  # params
    vector,  # y (advanced in place)
    f64,  # t
    f64,  # h
    vector,  # output times
    _int,  # index of the first output time to fill
    matrix,  # observables at the output times (filled)
    matrix,  # states at the output times (filled when save_state)
    types.boolean,  # save_state
    _int,  # kl
    _int,  # ku
    _int,  # rank of the low-rank part
    f64,  # gamma
    matrix,  # a
    matrix,  # c
    vector,  # b
    vector,  # error weights
    matrix,  # dense-output coefficients
    f64,  # error exponent
    f64,  # rtol
    f64,  # atol
    _int,  # step budget for this call
    f64,  # largest admissible |y_i|
    _ivector,  # step statistics (accumulated)
)


@numba.njit(cache=True)
def _weighted_rms(values, y_old, y_new, rtol, atol):
    n = values.shape[0]
    total = 0.0
    for i in range(n):
        scale = atol + rtol * max(abs(y_old[i]), abs(y_new[i]))
        ratio = values[i] / scale
        total += ratio * ratio
    return np.sqrt(total / n)


@numba.njit(cache=True)
def _is_finite(values):
    for i in range(values.shape[0]):
        if not np.isfinite(values[i]):
            return False
    return True


@numba.njit(cache=True)
def _max_abs(values):
    largest = 0.0
    for i in range(values.shape[0]):
        largest = max(largest, abs(values[i]))
    return largest


@numba.njit(STEPPER_SIGNATURE, cache=True)
def integrate_rosenbrock(
    rhs, jac, observe, drive, params, y, t, h, t_out, first_out, observables, states, save_state,
    kl, ku, rank, gamma, a, c, b, error_weights, dense, error_exponent, rtol, atol,
    max_steps, max_abs_state, stats,
):
    """Advance ``y`` from ``t`` past ``t_out[first_out:]``, writing outputs on the way.

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
    stages = b.shape[0]
    n_out = t_out.shape[0]
    eps = np.finfo(np.float64).eps

    band = np.zeros((n, kl + ku + 1))
    U = np.zeros((n, rank))
    V = np.zeros((n, rank))
    lu = np.zeros((n, 2 * kl + ku + 1))
    multipliers = np.zeros((n, max(kl, 1)))
    pivots = np.zeros(n, dtype=np.int64)
    Z = np.zeros((n, rank))
    capacitance = np.zeros((rank, rank))
    capacitance_pivots = np.zeros(rank, dtype=np.int64)

    u = np.zeros((stages, n))
    f0 = np.empty(n)
    stage_argument = np.empty(n)
    stage_rhs = np.empty(n)
    y_new = np.empty(n)
    error = np.empty(n)
    observed = np.empty(observables.shape[1])

    next_out = first_out
    rejection_reason = NOT_REJECTED
    if next_out >= n_out:
        return STATUS_SUCCESS, t, h, next_out, rejection_reason
    t_stop = t_out[n_out - 1]

    rhs(t, y, params, drive, f0)
    stats[STAT_RHS] += 1
    if not _is_finite(f0) or not _is_finite(y):
        return STATUS_DIVERGED, t, h, next_out, REJECTED_NONFINITE

    if h <= 0.0:
        y_norm = _weighted_rms(y, y, y, rtol, atol)
        f_norm = _weighted_rms(f0, y, y, rtol, atol)
        h = 1e-6 if (y_norm < 1e-5 or f_norm < 1e-5) else 0.01 * y_norm / f_norm

    previous_rejected = False
    steps_taken = 0
    while next_out < n_out:
        if steps_taken >= max_steps:
            return STATUS_STEP_BUDGET, t, h, next_out, rejection_reason
        h_proposed = h
        clipped = False
        if t + h >= t_stop:
            h = t_stop - t
            clipped = True
        if h <= 10.0 * eps * max(abs(t), 1e-300):
            return STATUS_STEP_SIZE_COLLAPSE, t, h, next_out, rejection_reason
        steps_taken += 1
        stats[STAT_STEPS] += 1

        # Structured factorisation of I / (h gamma) - J at the current state.
        jac(t, y, params, drive, band, U, V)
        stats[STAT_JACOBIANS] += 1
        shift = 1.0 / (h * gamma)
        pivot_quality = factor_structured(
            shift, band, kl, ku, U, V, lu, multipliers, pivots, Z, capacitance, capacitance_pivots
        )
        stats[STAT_FACTORIZATIONS] += 1
        if not (pivot_quality > 0.0):
            stats[STAT_SINGULAR_REJECTIONS] += 1
            stats[STAT_REJECTED] += 1
            rejection_reason = REJECTED_SINGULAR
            h *= RETRY_FACTOR
            previous_rejected = True
            continue

        # Stages.
        stage_failed = False
        for i in range(stages):
            if i == 0:
                for k in range(n):
                    stage_rhs[k] = f0[k]
            else:
                for k in range(n):
                    total = y[k]
                    for j in range(i):
                        total += a[i, j] * u[j, k]
                    stage_argument[k] = total
                rhs(t, stage_argument, params, drive, stage_rhs)
                stats[STAT_RHS] += 1
            for k in range(n):
                total = stage_rhs[k]
                for j in range(i):
                    total += (c[i, j] / h) * u[j, k]
                u[i, k] = total
                stage_argument[k] = total
            solve_structured(lu, multipliers, pivots, kl, ku, V, Z, capacitance, capacitance_pivots, u[i])
            if not _is_finite(u[i]):
                stage_failed = True
                rejection_reason = REJECTED_NONFINITE
                stats[STAT_NONFINITE_REJECTIONS] += 1
                break
            if i == 0:
                # The Woodbury splitting can lose accuracy when the banded core
                # is nearly singular although the full matrix is not.
                backward_error = structured_residual(shift, band, kl, ku, U, V, u[0], stage_argument)
                if not (backward_error <= RESIDUAL_TOLERANCE):
                    stage_failed = True
                    rejection_reason = REJECTED_SINGULAR
                    stats[STAT_SINGULAR_REJECTIONS] += 1
                    break
        if stage_failed:
            stats[STAT_REJECTED] += 1
            h *= RETRY_FACTOR
            previous_rejected = True
            continue

        # New solution and embedded error estimate.
        for k in range(n):
            total = y[k]
            error_total = 0.0
            for j in range(stages):
                total += b[j] * u[j, k]
                error_total += error_weights[j] * u[j, k]
            y_new[k] = total
            error[k] = error_total
        error_norm = _weighted_rms(error, y, y_new, rtol, atol)
        if not (np.isfinite(error_norm) and _is_finite(y_new)):
            stats[STAT_REJECTED] += 1
            stats[STAT_NONFINITE_REJECTIONS] += 1
            rejection_reason = REJECTED_NONFINITE
            h *= RETRY_FACTOR
            previous_rejected = True
            continue

        if error_norm > 1.0:
            stats[STAT_REJECTED] += 1
            rejection_reason = REJECTED_BY_ERROR
            h *= max(MIN_FACTOR, SAFETY * error_norm ** (-error_exponent))
            previous_rejected = True
            continue

        # Accepted: write the outputs that fall inside the step, then advance.
        stats[STAT_ACCEPTED] += 1
        t_new = t + h
        if clipped:
            t_new = t_stop
        while next_out < n_out and t_out[next_out] <= t_new:
            theta = (t_out[next_out] - t) / h
            if theta >= 1.0:
                for k in range(n):
                    stage_argument[k] = y_new[k]
            else:
                for k in range(n):
                    first = 0.0
                    second = 0.0
                    for j in range(stages):
                        first += dense[0, j] * u[j, k]
                        second += dense[1, j] * u[j, k]
                    stage_argument[k] = (1.0 - theta) * y[k] + theta * (
                        y_new[k] + (1.0 - theta) * (first + theta * second)
                    )
            observe(stage_argument, params, drive, observed)
            for k in range(observed.shape[0]):
                observables[next_out, k] = observed[k]
            if save_state:
                for k in range(n):
                    states[next_out, k] = stage_argument[k]
            next_out += 1

        t = t_new
        for k in range(n):
            y[k] = y_new[k]
        if _max_abs(y) > max_abs_state:
            return STATUS_DIVERGED, t, h, next_out, REJECTED_NONFINITE
        rhs(t, y, params, drive, f0)
        stats[STAT_RHS] += 1
        if not _is_finite(f0):
            return STATUS_DIVERGED, t, h, next_out, REJECTED_NONFINITE

        factor = SAFETY * error_norm ** (-error_exponent) if error_norm > 0.0 else MAX_FACTOR
        factor = min(MAX_FACTOR, max(MIN_FACTOR, factor))
        if previous_rejected:
            factor = min(1.0, factor)
        h_next = h * factor
        if clipped and h_proposed > h_next:
            h_next = h_proposed
        h = h_next
        previous_rejected = False
        rejection_reason = NOT_REJECTED

    return STATUS_SUCCESS, t, h, next_out, rejection_reason
