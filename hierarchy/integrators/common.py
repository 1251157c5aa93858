"""Statuses, statistics layout, step-control constants and norms shared by every compiled method.

Every method kernel advances a ``StructuredSystem`` over a slice of the
output grid and returns ``(status, t, h, next_out, rejection_reason)``
with the codes below, accumulating its work in an ``int64`` statistics
array indexed by the ``STAT_*`` constants.
"""

import numba
import numpy as np
from numba import types

from ..kernel_types import DriveType, JacType, ObserveType, RhsType, f64, matrix, vector

# Argument types of a compiled stepper, in the order of its parameters. Each
# method inserts its own arguments (coefficients, kept history) between these
# groups; see ``stepper_signature``.
_int = types.int64
STEPPER_SYSTEM_ARGUMENTS = (
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
)
STEPPER_CONTROL_ARGUMENTS = (
    f64,  # rtol
    f64,  # atol
    _int,  # step budget for this call
    f64,  # largest admissible |y_i|
    types.int64[::1],  # step statistics (accumulated)
)
STEPPER_EVENT_ARGUMENTS = (
    matrix,  # event specification, one row per event (see locate_events)
    matrix,  # event state, one row per event (updated)
)
# Every stepper returns (status, t, h, next_out, rejection_reason).
STEPPER_RESULT = types.Tuple((_int, f64, f64, _int, _int))


def stepper_signature(coefficients=(), history=()):
    """Return the Numba signature of a stepper with the method's own argument types.

    ``coefficients`` come after the system arguments and ``history`` after the
    control arguments; the event arguments are always last.
    """
    return STEPPER_RESULT(
        *STEPPER_SYSTEM_ARGUMENTS, *coefficients, *STEPPER_CONTROL_ARGUMENTS, *history, *STEPPER_EVENT_ARGUMENTS
    )


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
REJECTED_NEWTON = 3

STAT_STEPS = 0
STAT_ACCEPTED = 1
STAT_REJECTED = 2
STAT_RHS = 3
STAT_JACOBIANS = 4
STAT_FACTORIZATIONS = 5
STAT_SINGULAR_REJECTIONS = 6
STAT_NONFINITE_REJECTIONS = 7
STAT_NEWTON_ITERATIONS = 8
STAT_NEWTON_FAILURES = 9
N_STATS = 10

STAT_NAMES = (
    "steps",
    "accepted",
    "rejected",
    "rhs_evaluations",
    "jacobian_evaluations",
    "factorizations",
    "singular_rejections",
    "nonfinite_rejections",
    "newton_iterations",
    "newton_failures",
)

# Step-size controller: h_new = h * clip(SAFETY * err^(-exponent), MIN_FACTOR, MAX_FACTOR).
SAFETY = 0.9
MIN_FACTOR = 0.2
MAX_FACTOR = 6.0
# Step factor after a non-finite stage or a numerically singular linear system.
RETRY_FACTOR = 0.25
# Largest acceptable backward error of a structured solve; beyond it (or at
# an exactly zero pivot) the step is retried with a smaller h. Small pivots
# alone are no reason to reject: with a conservation law J is singular and
# c I - J is legitimately close to singular for large h.
RESIDUAL_TOLERANCE = 1e-9


@numba.njit(cache=True)
def weighted_rms(values, y_old, y_new, rtol, atol):
    """Return the RMS of ``values / (atol + rtol max(|y_old|, |y_new|))``."""
    n = values.shape[0]
    total = 0.0
    for i in range(n):
        scale = atol + rtol * max(abs(y_old[i]), abs(y_new[i]))
        ratio = values[i] / scale
        total += ratio * ratio
    return np.sqrt(total / n)


@numba.njit(cache=True)
def all_finite(values):
    for i in range(values.shape[0]):
        if not np.isfinite(values[i]):
            return False
    return True


@numba.njit(cache=True)
def max_abs(values):
    largest = 0.0
    for i in range(values.shape[0]):
        largest = max(largest, abs(values[i]))
    return largest


@numba.njit(cache=True)
def initial_step(y, f0, rtol, atol):
    """Return a first step from the scales of ``y`` and ``f(y)``.

    Follows the first part of the starting-step heuristic of Hairer, Norsett
    and Wanner (*Solving ODEs I*, 2nd ed., 1993, section II.4): a step over
    which the solution changes by about 1 % of its weighted size.
    """
    y_norm = weighted_rms(y, y, y, rtol, atol)
    f_norm = weighted_rms(f0, y, y, rtol, atol)
    if y_norm < 1e-5 or f_norm < 1e-5:
        return 1e-6
    return 0.01 * y_norm / f_norm


@numba.njit(cache=True)
def allocate_jacobian(n, kl, ku, rank):
    """Allocate the structured Jacobian ``(band, U, V)`` of an ``n``-equation system."""
    return np.zeros((n, kl + ku + 1)), np.zeros((n, rank)), np.zeros((n, rank))


@numba.njit(cache=True)
def allocate_factors(n, kl, ku, rank, zero):
    """Allocate the factors of ``factor_structured`` for one shift, with entries of the type of ``zero``.

    Pass ``0.0`` for a real shift and ``0j`` for a complex one. Returns
    ``(lu, multipliers, pivots, woodbury_z, capacitance, capacitance_pivots)``
    in the order ``factor_structured`` takes them.
    """
    lu = np.full((n, 2 * kl + ku + 1), zero)
    multipliers = np.full((n, max(kl, 1)), zero)
    pivots = np.zeros(n, dtype=np.int64)
    woodbury_z = np.full((n, rank), zero)
    capacitance = np.full((rank, rank), zero)
    capacitance_pivots = np.zeros(rank, dtype=np.int64)
    return lu, multipliers, pivots, woodbury_z, capacitance, capacitance_pivots


@numba.njit(cache=True)
def step_size_collapsed(t, h):
    """Return whether ``h`` is too small to move ``t`` by more than rounding (10 eps ``|t|``)."""
    return h <= 10.0 * np.finfo(np.float64).eps * max(abs(t), 1e-300)


@numba.njit(cache=True)
def count_rejection(stats, reason):
    """Count a rejected step in ``stats``, and a singular or non-finite one under its reason too."""
    stats[STAT_REJECTED] += 1
    if reason == REJECTED_SINGULAR:
        stats[STAT_SINGULAR_REJECTIONS] += 1
    elif reason == REJECTED_NONFINITE:
        stats[STAT_NONFINITE_REJECTIONS] += 1


@numba.njit(cache=True)
def advance_state(rhs, params, drive, t_new, y, y_new, f0, max_abs_state, stats):
    """Move the state to an accepted step's end ``y_new`` and evaluate ``f0 = f(t_new, y)`` there.

    Returns ``False`` when the new state exceeds ``max_abs_state`` or ``f0``
    is not finite (the run has diverged), otherwise ``True``. ``f0`` is not
    evaluated in the first case.
    """
    for k in range(y.shape[0]):
        y[k] = y_new[k]
    if max_abs(y) > max_abs_state:
        return False
    rhs(t_new, y, params, drive, f0)
    stats[STAT_RHS] += 1
    return all_finite(f0)


@numba.njit(cache=True)
def next_step_size(h, factor, previous_rejected, clipped, h_proposed):
    """Compute the next step size ``h factor``, not grown right after a rejection.

    A step cut short (``clipped``) at an output time must not shrink the
    steps after it, so the next step is at least ``h_proposed``, the size
    proposed before the cut.
    """
    if previous_rejected:
        factor = min(1.0, factor)
    h_next = h * factor
    if clipped and h_proposed > h_next:
        h_next = h_proposed
    return h_next


@numba.njit(cache=True)
def write_dense_outputs(
    t, h, t_new, polynomial, y_new, t_out, next_out, observe, params, drive,
    observables, states, save_state, work, observed,
):
    """Write the outputs with ``t < t_out[i] <= t_new`` from a step's dense output.

    ``polynomial[p]`` holds the coefficient of ``theta^p`` of the dense
    output ``y(t + theta h)``; the output at ``t_new`` itself is ``y_new``.
    ``work`` (size n) and ``observed`` (one per observable) are scratch.
    Returns the index of the first output not written.
    """
    n = y_new.shape[0]
    degree = polynomial.shape[0] - 1
    n_out = t_out.shape[0]
    while next_out < n_out and t_out[next_out] <= t_new:
        theta = (t_out[next_out] - t) / h
        if t_out[next_out] == t_new or theta >= 1.0:
            for k in range(n):
                work[k] = y_new[k]
        else:
            for k in range(n):
                value = polynomial[degree, k]
                for p in range(degree - 1, -1, -1):
                    value = value * theta + polynomial[p, k]
                work[k] = value
        observe(work, params, drive, observed)
        for k in range(observed.shape[0]):
            observables[next_out, k] = observed[k]
        if save_state:
            for k in range(n):
                states[next_out, k] = work[k]
        next_out += 1
    return next_out


# A step that would end less than this fraction of h before the output time
# it aims at is stretched to end on it, so that no sliver step is left over.
OUTPUT_STRETCH = 0.01
# Output times closer than this many units of rounding (eps |t|) to the
# current time, or to the output time a step ends on, are not separate step
# ends. A step to them would fall below the step-size collapse limit of 10 eps |t|.
OUTPUT_RESOLUTION = 100.0
# A step that reaches this many output times or more is in a region where
# the grid is denser than the steps. It ends on the last of them, and the
# others come from its dense output, so that the grid's size cannot set the
# step count.
DENSE_GRID_OUTPUTS = 4


@numba.njit(cache=True)
def step_end_at_output(t, h, t_out, next_out):
    """Choose the end of a step of proposed size ``h`` from ``t``: an output time where one is in reach.

    Returns ``(t_end, clipped)``. Output times within ``OUTPUT_RESOLUTION``
    eps ``|t|`` of ``t`` come from the dense output of the step and do not
    count. When no output time is within ``t + (1 + OUTPUT_STRETCH) h``, the
    step keeps its size (``t_end = t + h``). When fewer than
    ``DENSE_GRID_OUTPUTS`` are, the step ends exactly on the first of them
    (``clipped = True``), so on a grid sparser than the steps every output
    time is a step point. When that many or more are, the grid is denser
    than the steps there, and the step ends on the last output time in
    reach. The others come from its dense output, so a grid of any size
    takes at most ``DENSE_GRID_OUTPUTS`` steps where the controller proposed
    one. Output times within rounding of the chosen one share its step end.
    """
    eps = np.finfo(np.float64).eps
    n_out = t_out.shape[0]
    reach = t + (1.0 + OUTPUT_STRETCH) * h
    first = next_out
    while first < n_out - 1 and t_out[first] - t <= OUTPUT_RESOLUTION * eps * max(abs(t), abs(t_out[first])):
        first += 1
    if t_out[first] > reach:
        return t + h, False
    target = first
    if first + DENSE_GRID_OUTPUTS - 1 < n_out and t_out[first + DENSE_GRID_OUTPUTS - 1] <= reach:
        while target < n_out - 1 and t_out[target + 1] <= reach:
            target += 1
    # Measured from the chosen time, not from one output time to the next, so
    # that a long chain of close output times cannot carry the step end far
    # beyond its reach.
    chosen = t_out[target]
    while target < n_out - 1 and t_out[target + 1] - chosen <= OUTPUT_RESOLUTION * eps * abs(t_out[target + 1]):
        target += 1
    return t_out[target], True


# Columns of the event arrays: the specification (observable index, level,
# 1.0 to use the absolute value of the observable) and the running state
# (value at the start of the step, first crossing time or NaN).
EVENT_OBSERVABLE = 0
EVENT_LEVEL = 1
EVENT_ABSOLUTE = 2
EVENT_PREVIOUS_VALUE = 0
EVENT_TIME = 1
# Bisection steps on theta in [0, 1]: 2^-52 is below double rounding.
EVENT_BISECTIONS = 52


@numba.njit(cache=True)
def _evaluate_polynomial(polynomial, theta, out):
    degree = polynomial.shape[0] - 1
    for k in range(out.shape[0]):
        value = polynomial[degree, k]
        for p in range(degree - 1, -1, -1):
            value = value * theta + polynomial[p, k]
        out[k] = value


@numba.njit(cache=True)
def event_value(spec_row, observed):
    value = observed[int(spec_row[EVENT_OBSERVABLE])]
    if spec_row[EVENT_ABSOLUTE] != 0.0:
        value = abs(value)
    return value - spec_row[EVENT_LEVEL]


@numba.njit(cache=True)
def locate_events(t, h, polynomial, y_new, observe, params, drive, event_spec, event_state, work, observed):
    """Record the first crossing of each event inside the step ``(t, t + h]``.

    An event is a zero of ``observable - level`` (or ``|observable| - level``).
    Its value at the end of the step is compared with the value at the
    start; on a sign change the crossing is located by bisection in
    ``theta`` on the step's dense output ``polynomial`` (coefficients of
    ``theta^p``), to the resolution of ``t``. Events already found are not
    searched again.
    """
    n_events = event_spec.shape[0]
    if n_events == 0:
        return
    observe(y_new, params, drive, observed)
    for e in range(n_events):
        end_value = event_value(event_spec[e], observed)
        start_value = event_state[e, EVENT_PREVIOUS_VALUE]
        if np.isnan(event_state[e, EVENT_TIME]) and start_value * end_value <= 0.0 and start_value != 0.0:
            low, high = 0.0, 1.0
            for _ in range(EVENT_BISECTIONS):
                middle = 0.5 * (low + high)
                _evaluate_polynomial(polynomial, middle, work)
                observe(work, params, drive, observed)
                if event_value(event_spec[e], observed) * start_value > 0.0:
                    low = middle
                else:
                    high = middle
            event_state[e, EVENT_TIME] = t + high * h
            observe(y_new, params, drive, observed)
        event_state[e, EVENT_PREVIOUS_VALUE] = end_value
