"""Split the time per step of the rodas4 kernel into its compiled building blocks.

Each rodas4 step evaluates the Jacobian once and factorises
``I / (h gamma) - J`` once. It evaluates the right-hand side
``rhs_evaluations / steps`` times (5 stages plus the new point), runs the
Sherman-Morrison-Woodbury solve once per stage (6), and checks the backward
error of the first stage and the weighted error norm once each. Each block
is timed here in a compiled loop on states saved along a real trajectory.
What the measured time per step leaves over is the stage algebra and the
bookkeeping of ``integrate_rosenbrock`` itself (stage sums, dense output,
finiteness checks). Every time here is CPU time of this process, so that other
processes on the machine disturb the split less than they disturb wall time.

Run alone: ``python benchmarks/profile_rodas4.py`` profiles the K ~ 600
spectral-mode system (d = 20000, a = 1.5, 20 bins per decade, 6-point rules).
"""

import time

import numba
import numpy as np

from hierarchy.integrators import solve
from hierarchy.integrators.common import weighted_rms
from hierarchy.integrators.rodas4 import RODAS4
from hierarchy.integrators.structured_linalg import factor_structured, solve_structured, structured_residual

# Each block is repeated until one timing covers at least this many seconds.
MIN_TIMING_SECONDS = 0.02
SAMPLE_STATES = 8


@numba.njit(cache=True)
def _repeat_rhs(rhs, drive, params, y, out, repeats):
    for _ in range(repeats):
        rhs(0.0, y, params, drive, out)


@numba.njit(cache=True)
def _repeat_jacobian(jac, drive, params, y, band, U, V, repeats):
    for _ in range(repeats):
        jac(0.0, y, params, drive, band, U, V)


@numba.njit(cache=True)
def _repeat_factor(shift, band, kl, ku, U, V, lu, multipliers, pivots, Z, capacitance, capacitance_pivots, repeats):
    quality = 0.0
    for _ in range(repeats):
        quality += factor_structured(shift, band, kl, ku, U, V, lu, multipliers, pivots, Z, capacitance, capacitance_pivots)
    return quality


@numba.njit(cache=True)
def _repeat_solve(lu, multipliers, pivots, kl, ku, V, Z, capacitance, capacitance_pivots, right_side, work, repeats):
    # The solve runs in place, so each repeat starts again from the same right side
    # (repeated solves of one vector would drive it into the subnormal range).
    for _ in range(repeats):
        work[:] = right_side
        solve_structured(lu, multipliers, pivots, kl, ku, V, Z, capacitance, capacitance_pivots, work)


@numba.njit(cache=True)
def _repeat_copy(right_side, work, repeats):
    for _ in range(repeats):
        work[:] = right_side


@numba.njit(cache=True)
def _repeat_residual(shift, band, kl, ku, U, V, x, right_side, repeats):
    total = 0.0
    for _ in range(repeats):
        total += structured_residual(shift, band, kl, ku, U, V, x, right_side)
    return total


@numba.njit(cache=True)
def _repeat_norm(values, y_old, y_new, rtol, atol, repeats):
    total = 0.0
    for _ in range(repeats):
        total += weighted_rms(values, y_old, y_new, rtol, atol)
    return total


def _seconds_per_call(function, *args):
    """Return the CPU time of one call of a ``_repeat_*`` kernel, after a warm-up call."""
    function(*args, 1)
    repeats = 1
    while True:
        started = time.process_time()
        function(*args, repeats)
        elapsed = time.process_time() - started
        if elapsed >= MIN_TIMING_SECONDS or repeats >= 1 << 20:
            return elapsed / repeats
        repeats *= 4


def profile_rodas4(system, t_out, rtol, atol) -> dict:
    """Time a rodas4 run of ``system`` and each compiled block of its step; return CPU seconds per step."""
    started = time.process_time()
    run = solve(system, t_out, method="rodas4", rtol=rtol, atol=atol, save_state=True)
    run_cpu_seconds = time.process_time() - started
    steps = max(run.stats["steps"], 1)
    rhs_per_step = run.stats["rhs_evaluations"] / steps
    stages = RODAS4.stages

    n = system.size
    kl, ku, rank = system.kl, system.ku, system.rank
    params = np.ascontiguousarray(system.params, dtype=np.float64)
    band = np.zeros((n, kl + ku + 1))
    U = np.zeros((n, rank))
    V = np.zeros((n, rank))
    lu = np.zeros((n, 2 * kl + ku + 1))
    multipliers = np.zeros((n, max(kl, 1)))
    pivots = np.zeros(n, dtype=np.int64)
    Z = np.zeros((n, rank))
    capacitance = np.zeros((rank, rank))
    capacitance_pivots = np.zeros(rank, dtype=np.int64)
    f = np.empty(n)
    work = np.empty(n)

    blocks = {"rhs": [], "jacobian": [], "factorisation": [], "solve": [], "residual check": [], "error norm": []}
    sample_rows = np.unique(np.linspace(0, run.states.shape[0] - 1, SAMPLE_STATES).astype(int))
    for row in sample_rows:
        y = np.ascontiguousarray(run.states[row])
        # A step of about a tenth of the current time, the typical size on a log-spaced run.
        shift = 1.0 / (0.1 * max(run.t[row], 1e-6) * RODAS4.gamma)
        blocks["rhs"].append(_seconds_per_call(_repeat_rhs, system.rhs, system.drive, params, y, f))
        blocks["jacobian"].append(_seconds_per_call(_repeat_jacobian, system.jac, system.drive, params, y, band, U, V))
        blocks["factorisation"].append(_seconds_per_call(
            _repeat_factor, shift, band, kl, ku, U, V, lu, multipliers, pivots, Z, capacitance, capacitance_pivots))
        copy_seconds = _seconds_per_call(_repeat_copy, f, work)
        solve_seconds = _seconds_per_call(
            _repeat_solve, lu, multipliers, pivots, kl, ku, V, Z, capacitance, capacitance_pivots, f, work)
        blocks["solve"].append(max(solve_seconds - copy_seconds, 0.0))
        work[:] = f
        solve_structured(lu, multipliers, pivots, kl, ku, V, Z, capacitance, capacitance_pivots, work)
        blocks["residual check"].append(_seconds_per_call(_repeat_residual, shift, band, kl, ku, U, V, work, f))
        blocks["error norm"].append(_seconds_per_call(_repeat_norm, f, y, y, rtol, atol))

    calls_per_step = {
        "rhs": rhs_per_step, "jacobian": 1.0, "factorisation": 1.0,
        "solve": float(stages), "residual check": 1.0, "error norm": 1.0,
    }
    measured = run_cpu_seconds / steps
    per_step = {name: calls_per_step[name] * float(np.median(times)) for name, times in blocks.items()}
    per_step["remainder (stage algebra, dense output, checks)"] = measured - sum(per_step.values())
    return {
        "system": system.name,
        "size": n,
        "steps": run.stats["steps"],
        "status": run.status.name,
        "measured_seconds_per_step": measured,
        "calls_per_step": calls_per_step,
        "seconds_per_step": per_step,
    }


def format_profile(profile: dict) -> str:
    """Return the profile as a Markdown table of microseconds per step and shares of the measured time."""
    measured = profile["measured_seconds_per_step"]
    lines = [
        f"{profile['system']}, n = {profile['size']} equations, {profile['steps']} steps, "
        f"measured {measured * 1e6:.1f} us of CPU time per step (the run includes saving the state at the outputs)",
        "",
        "| block | calls per step | us per step | share |",
        "|---|---:|---:|---:|",
    ]
    for name, seconds in profile["seconds_per_step"].items():
        calls = profile["calls_per_step"].get(name)
        calls_text = f"{calls:.2f}" if calls is not None else ""
        lines.append(f"| {name} | {calls_text} | {seconds * 1e6:.1f} | {seconds / measured:.0%} |")
    return "\n".join(lines)


def main():
    from hierarchy.model import PhaseRetrieval
    from hierarchy.spectrum import PowerLawSpec
    from hierarchy.truncation import build_spectral_modes, build_spectral_rule

    problem = PowerLawSpec(d=20000, a=1.5, b=0, sigma0=0.1, seed=0).build()
    model = PhaseRetrieval()
    system = build_spectral_modes(problem, model, build_spectral_rule(problem, 20, 6, 8))
    solve(system, np.array([1.0]), method="rodas4")
    print(format_profile(profile_rodas4(system, np.logspace(-1, 7, 81), 1e-8, 1e-12)))


if __name__ == "__main__":
    main()
