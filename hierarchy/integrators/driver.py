"""Driver of the compiled integrators: validation, progress, failure reports.

The compiled stepper is called in slices of the step budget, so a long run
logs its progress and honours a wall-clock limit: every call returns after
at most ``STEPS_PER_CALL`` steps, and the whole run after ``max_steps``.
A call takes at most ``EQUATION_STEPS_PER_CALL / n`` steps for ``n``
equations, so that a system of millions of equations still returns to the
driver every few seconds. The slices depend only on ``n``, never on timings,
so the same run gives the same steps and the same numbers every time.
"""

import logging
import math
import os
import time

import numpy as np

from . import common
from .methods import METHODS
from .solution import Event, IntegrationStatus, Solution
from .system import StructuredSystem

logger = logging.getLogger(__name__)

STEPS_PER_CALL = 20_000
# A step costs about 30 to 200 ns per equation on one core (benchmarks/README.md),
# so a call of this many equation-steps takes a fraction of a second to a few seconds.
EQUATION_STEPS_PER_CALL = 5_000_000

_REJECTION_REASONS = {
    common.NOT_REJECTED: "the steps needed to meet the tolerance fell below the resolution of t "
    "(the solution may blow up there)",
    common.REJECTED_BY_ERROR: "the local error test kept failing",
    common.REJECTED_NONFINITE: "a stage became non-finite",
    common.REJECTED_SINGULAR: "the linear system of the step was numerically singular",
    common.REJECTED_NEWTON: "the Newton iteration of the implicit stages did not converge",
}


def _validate(t_out, t0, rtol, atol, max_steps, max_abs_state, max_wall_seconds, method):
    if method not in METHODS:
        raise ValueError(f"method = {method!r} is not available; choose one of {sorted(METHODS)}")
    if t_out.ndim != 1 or t_out.size == 0:
        raise ValueError(f"t_out must be a non-empty 1-D array of output times, got shape {t_out.shape}")
    if not np.all(np.isfinite(t_out)):
        raise ValueError("t_out must contain only finite times")
    if np.any(np.diff(t_out) <= 0):
        raise ValueError("t_out must be strictly increasing")
    if not t_out[0] >= t0:
        raise ValueError(f"the first output time {t_out[0]!r} is before the initial time t0 = {t0!r}")
    if not 0.0 < rtol < 1.0:
        raise ValueError(f"rtol = {rtol!r} is outside the allowed range (0, 1)")
    if not atol >= 0.0 or not math.isfinite(atol):
        raise ValueError(f"atol = {atol!r} must be a finite number >= 0")
    if rtol < 100 * np.finfo(float).eps and atol == 0.0:
        raise ValueError(f"rtol = {rtol!r} is below 100 machine epsilons; raise rtol or set atol > 0")
    if int(max_steps) < 1:
        raise ValueError(f"max_steps = {max_steps!r} must be at least 1")
    if not max_abs_state > 0:
        raise ValueError(f"max_abs_state = {max_abs_state!r} must be positive")
    if max_wall_seconds is not None and not max_wall_seconds > 0:
        raise ValueError(f"max_wall_seconds = {max_wall_seconds!r} must be positive or None")


def solve(
    system: StructuredSystem,
    t_out,
    *,
    t0: float = 0.0,
    method: str = "rodas4",
    rtol: float = 1e-8,
    atol: float = 1e-12,
    first_step: float = 0.0,
    max_steps: int = 1_000_000,
    max_abs_state: float = 1e100,
    max_wall_seconds: float | None = None,
    save_state: bool = False,
    events: tuple = (),
) -> Solution:
    """Integrate ``system`` from ``t0`` and return its observables at the times ``t_out``.

    Parameters
    ----------
    system : StructuredSystem
        Right-hand side, structured Jacobian, observables and initial state.
    t_out : array
        Strictly increasing output times, ``t_out[0] >= t0``; log-spaced grids
        are the usual choice for the hierarchy. Output times within
        10 eps ``|t0|`` of ``t0``, closer than any step can move, are written
        from the initial state.
    method : str
        Name of the integration method, a key of ``hierarchy.integrators.METHODS``.
    rtol, atol : float
        Relative and absolute tolerances of the local error test.
    first_step : float
        Initial step; ``0`` picks one from the scale of ``y0`` and ``f(y0)``.
    max_steps : int
        Step budget (accepted plus rejected steps).
    max_abs_state : float
        The run stops as diverged once some ``|y_i|`` exceeds this bound.
    max_wall_seconds : float or None
        Wall-clock limit, checked every ``STEPS_PER_CALL`` steps.
    save_state : bool
        Also return the full state at every output time.
    events : sequence of Event
        Zero crossings of observables to locate on the dense output.

    Returns
    -------
    Solution
        Reached outputs, status and message, step statistics. A failed run
        returns the outputs it reached; it does not raise.
    """
    t_out = np.ascontiguousarray(t_out, dtype=np.float64)
    _validate(t_out, t0, rtol, atol, max_steps, max_abs_state, max_wall_seconds, method)
    integrator = METHODS[method]
    check_system = getattr(integrator, "check_system", None)
    if check_system is not None:
        check_system(system)
    _check_memory(system, t_out.size, save_state)

    n_out = t_out.size
    n_obs = len(system.observable_names)
    observables = np.full((n_out, n_obs), np.nan)
    states = np.full((n_out, system.size), np.nan) if save_state else np.zeros((1, system.size))
    y = np.array(system.y0, dtype=np.float64, copy=True)
    params = np.ascontiguousarray(system.params, dtype=np.float64)
    stats = np.zeros(common.N_STATS, dtype=np.int64)

    observed = np.empty(n_obs)
    event_spec, event_state = _prepare_events(system, params, events, y, observed)

    # Output times equal to t0, or closer to it than the smallest step the
    # steppers take (10 eps |t0|, see common.step_size_collapsed), are the
    # initial state itself.
    next_out = 0
    initial_resolution = 10.0 * np.finfo(np.float64).eps * abs(t0)
    while next_out < n_out and t_out[next_out] - t0 <= initial_resolution:
        system.observe(y, params, system.drive, observed)
        observables[next_out] = observed
        if save_state:
            states[next_out] = y
        next_out += 1

    started = time.perf_counter()
    t = float(t0)
    h = float(first_step)
    status = common.STATUS_SUCCESS
    rejection_reason = common.NOT_REJECTED
    last_logged = started
    logger.info("%s: integrating %d equations with %s to t = %.3g", system.name, system.size, method, t_out[-1])

    steps_per_call = int(min(STEPS_PER_CALL, max(1, EQUATION_STEPS_PER_CALL // max(system.size, 1))))
    while next_out < n_out:
        budget_left = int(max_steps) - int(stats[common.STAT_STEPS])
        if budget_left <= 0:
            status = common.STATUS_STEP_BUDGET
            break
        status, t, h, next_out, rejection_reason = integrator.advance(
            system, params, y, t, h, t_out, next_out, observables, states, save_state,
            rtol, atol, min(budget_left, steps_per_call), max_abs_state, stats, event_spec, event_state,
        )
        elapsed = time.perf_counter() - started
        if elapsed - (last_logged - started) > 5.0 or status != common.STATUS_STEP_BUDGET:
            logger.info(
                "%s: t = %.4g, outputs %d/%d, %d steps (%d rejected), %.1f s",
                system.name, t, next_out, n_out, stats[common.STAT_STEPS], stats[common.STAT_REJECTED], elapsed,
            )
            last_logged = time.perf_counter()
        if status != common.STATUS_STEP_BUDGET:
            break
        if max_wall_seconds is not None and elapsed > max_wall_seconds:
            status = IntegrationStatus.WALL_TIME.value
            break
        status = common.STATUS_SUCCESS

    wall_seconds = time.perf_counter() - started
    final_status = IntegrationStatus(status)
    message = _describe(final_status, t, h, rejection_reason, max_steps, max_abs_state, max_wall_seconds)
    if final_status.failed:
        logger.warning("%s: %s", system.name, message)

    return Solution(
        t=t_out[:next_out].copy(),
        observables=observables[:next_out].copy(),
        observable_names=tuple(system.observable_names),
        states=states[:next_out].copy() if save_state else None,
        status=final_status,
        message=message,
        t_reached=t,
        t_requested=t_out,
        stats={name: int(value) for name, value in zip(common.STAT_NAMES, stats)},
        wall_seconds=wall_seconds,
        method=method,
        event_times={
            event.name: (None if np.isnan(event_state[i, common.EVENT_TIME]) else float(event_state[i, common.EVENT_TIME]))
            for i, event in enumerate(events)
        },
    )


# Work arrays of a compiled method, in vectors of the system's size: the
# stages, Newton and history arrays of the largest method (BDF, Radau IIA
# complex stages) with a margin.
WORK_VECTORS = 40


def _physical_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _check_memory(system, n_out, save_state):
    """Raise ``ValueError`` before allocating when the integration cannot fit in this machine's memory."""
    n = system.size
    per_vector = 8 * n
    band = 2 * system.kl + system.ku + 1 + system.kl + system.ku + 1
    needed = per_vector * (WORK_VECTORS + band + 4 * system.rank)
    if save_state:
        needed += per_vector * n_out
    available = _physical_memory_bytes()
    if available is not None and needed > available:
        raise ValueError(
            f"integrating {system.name} ({n} equations) needs about {needed / 2**30:.1f} GiB of work memory, more than "
            f"this machine's {available / 2**30:.1f} GiB; use fewer equations (spectral modes instead of the exact flow, "
            "a coarser rule) or a machine with more memory"
        )


def _prepare_events(system, params, events, y0, observed):
    """Return the compiled event arrays, with the values at the initial state filled in."""
    event_spec = np.zeros((len(events), 3))
    event_state = np.full((len(events), 2), np.nan)
    names = set()
    for i, event in enumerate(events):
        if not isinstance(event, Event):
            raise ValueError(f"events[{i}] = {event!r} is not an Event")
        if event.name in names:
            raise ValueError(f"two events are named {event.name!r}; event names must be unique")
        names.add(event.name)
        if event.observable not in system.observable_names:
            raise ValueError(
                f"event {event.name!r} watches the unknown observable {event.observable!r}; "
                f"available: {', '.join(system.observable_names)}"
            )
        if not math.isfinite(event.level):
            raise ValueError(f"event {event.name!r} has a non-finite level {event.level!r}")
        event_spec[i] = (system.observable_names.index(event.observable), event.level, 1.0 if event.absolute else 0.0)

    if len(events):
        system.observe(y0, params, system.drive, observed)
        for i in range(len(events)):
            value = observed[int(event_spec[i, 0])]
            event_state[i, common.EVENT_PREVIOUS_VALUE] = (abs(value) if event_spec[i, 2] else value) - event_spec[i, 1]
    return event_spec, event_state


def _describe(status, t, h, rejection_reason, max_steps, max_abs_state, max_wall_seconds):
    if status is IntegrationStatus.SUCCESS:
        return f"reached t = {t:.6g}"
    if status is IntegrationStatus.DIVERGED:
        return f"diverged at t = {t:.6g}: the state became non-finite or some |y_i| exceeded {max_abs_state:.3g}"
    if status is IntegrationStatus.STEP_SIZE_COLLAPSE:
        return (
            f"step size collapsed to h = {h:.3g} at t = {t:.6g} because "
            f"{_REJECTION_REASONS[rejection_reason]}"
        )
    if status is IntegrationStatus.STEP_BUDGET:
        return f"step budget of {int(max_steps)} steps exhausted at t = {t:.6g}"
    return f"wall-clock limit of {max_wall_seconds} s reached at t = {t:.6g}"
