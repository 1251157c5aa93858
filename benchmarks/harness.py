"""Timed runs of this project's methods and of the peers, their errors and the skip rule.

Timing rule, the same for every method: a run shorter than
``REPEAT_BELOW_SECONDS`` is repeated (at most ``MAX_REPEATS`` runs in all)
and the smallest wall time is kept, so that short runs are not dominated by
noise from other processes.
"""

import math
import time
from dataclasses import dataclass, field, fields

import numpy as np

from hierarchy.integrators import solve

import peers
from cases import MODEL, OUTPUT_TIMES, Case

REPEAT_BELOW_SECONDS = 1.0
MAX_REPEATS = 3
# Output times where the reference loss is below this are left out of the loss error.
LOSS_FLOOR = 1e-8


@dataclass
class RunRecord:
    """One row of the results: a timed run, a failed run or a skipped one."""

    section: str
    case: str
    family: str
    K: int | None
    d: float
    n: int
    method: str
    kind: str  # "project", "peer", "reference" or "reference check"
    rtol: float
    atol: float
    status: str  # "ok", "failed", "timed out" or "skipped"
    message: str = ""
    wall_seconds: float = math.nan
    cpu_seconds: float = math.nan
    repeats: int = 0
    steps: int | None = None
    rhs_evaluations: int | None = None
    jacobian_evaluations: int | None = None
    factorizations: int | None = None
    loss_rel_error: float = math.nan
    m1_rel_error: float = math.nan
    q1_rel_error: float = math.nan
    max_rel_error: float = math.nan
    ratio_to_fastest: float = math.nan
    cpu_ratio_to_fastest: float = math.nan
    wall_seconds_per_step: float = math.nan
    cpu_seconds_per_step: float = math.nan
    estimated_seconds: float = math.nan
    observables: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def csv_columns(cls) -> list:
        return [f.name for f in fields(cls) if f.name != "observables"]

    def csv_row(self) -> dict:
        return {name: getattr(self, name) for name in self.csv_columns()}


def _base_record(case: Case, section, method, kind, rtol, atol, status, message="") -> RunRecord:
    return RunRecord(
        section=section, case=case.name, family=case.family, K=case.K, d=case.d, n=case.size,
        method=method, kind=kind, rtol=rtol, atol=atol, status=status, message=message,
    )


def _pad(observables, n_out):
    padded = np.full((n_out, 2), np.nan)
    if observables is not None and observables.size:
        padded[: observables.shape[0]] = observables[:, :2]
    return padded


def run_project(case: Case, method: str, rtol: float, atol: float, section: str, kind: str = "project",
                max_wall_seconds: float | None = None) -> RunRecord:
    """Integrate ``case`` with this project's ``method``; see the module docstring for the timing rule."""
    best = None
    total = 0.0
    repeats = 0
    while repeats < MAX_REPEATS:
        started_cpu = time.process_time()
        solution = solve(case.system, OUTPUT_TIMES, method=method, rtol=rtol, atol=atol,
                         max_steps=10**8, max_wall_seconds=max_wall_seconds)
        cpu = time.process_time() - started_cpu
        repeats += 1
        total += solution.wall_seconds
        if best is None or solution.wall_seconds < best[0].wall_seconds:
            best = (solution, cpu)
        if not solution.success or total >= REPEAT_BELOW_SECONDS:
            break

    solution, cpu = best
    names = solution.observable_names
    columns = [names.index("m1"), names.index("q1")]
    if solution.success:
        status = "ok"
    elif solution.status.name == "WALL_TIME":
        status = "timed out"
    else:
        status = "failed"
    record = _base_record(case, section, method, kind, rtol, atol, status, solution.message)
    record.wall_seconds = solution.wall_seconds
    record.cpu_seconds = cpu
    record.repeats = repeats
    record.steps = solution.stats["steps"]
    record.rhs_evaluations = solution.stats["rhs_evaluations"]
    record.jacobian_evaluations = solution.stats["jacobian_evaluations"]
    record.factorizations = solution.stats["factorizations"]
    record.wall_seconds_per_step = solution.wall_seconds / max(solution.stats["steps"], 1)
    record.cpu_seconds_per_step = cpu / max(solution.stats["steps"], 1)
    record.observables = _pad(solution.observables[:, columns], OUTPUT_TIMES.size)
    return record


def run_peer(case: Case, peer: str, rtol: float, atol: float, section: str, budget_seconds: float) -> RunRecord:
    """Integrate ``case`` with ``peer`` under a budget of CPU time, with the timing rule of the module."""
    best = None
    total = 0.0
    repeats = 0
    while repeats < MAX_REPEATS:
        result = peers.run_peer(peer, case.peer_problem, OUTPUT_TIMES, rtol, atol, budget_seconds)
        repeats += 1
        total += result.wall_seconds
        if best is None or result.wall_seconds < best.wall_seconds:
            best = result
        if not result.success or total >= REPEAT_BELOW_SECONDS:
            break

    if best.success:
        status = "ok"
    elif best.timed_out:
        status = "timed out"
    else:
        status = "failed"
    record = _base_record(case, section, peer, "peer", rtol, atol, status, best.message)
    record.wall_seconds = best.wall_seconds
    record.cpu_seconds = best.cpu_seconds
    record.repeats = repeats
    record.rhs_evaluations = best.stats.get("rhs_evaluations")
    record.jacobian_evaluations = best.stats.get("jacobian_evaluations")
    record.factorizations = best.stats.get("factorizations")
    record.observables = best.observables
    return record


def skipped(case: Case, method: str, kind: str, rtol: float, atol: float, section: str,
            reason: str, estimated_seconds: float = math.nan) -> RunRecord:
    """Return the record of a run that was not attempted, with the reason and the time estimate."""
    record = _base_record(case, section, method, kind, rtol, atol, "skipped", reason)
    record.estimated_seconds = estimated_seconds
    return record


def relative_errors(observables, reference, rho1, size: int) -> tuple:
    """Return the max relative errors of the loss (where the reference loss > ``LOSS_FLOOR``), m1 and q1.

    ``size`` is the number of equations, which sizes the rounding bound of
    the loss as in ``hierarchy.trajectory.Trajectory``.
    """
    m1, q1 = observables[:, 0], observables[:, 1]
    m1_ref, q1_ref = reference[:, 0], reference[:, 1]
    if not (np.all(np.isfinite(m1)) and np.all(np.isfinite(q1))):
        return math.nan, math.nan, math.nan
    operations = size + 5
    loss = np.asarray(MODEL.loss(q1, m1, rho1, statistics_operations=operations), dtype=float)
    loss_ref = np.asarray(MODEL.loss(q1_ref, m1_ref, rho1, statistics_operations=operations), dtype=float)
    mask = loss_ref > LOSS_FLOOR
    loss_error = float(np.max(np.abs(loss[mask] - loss_ref[mask]) / loss_ref[mask])) if mask.any() else math.nan

    def max_relative(values, reference_values):
        nonzero = reference_values != 0.0
        return float(np.max(np.abs(values[nonzero] - reference_values[nonzero]) / np.abs(reference_values[nonzero])))

    return loss_error, max_relative(m1, m1_ref), max_relative(q1, q1_ref)


def attach_errors(record: RunRecord, reference: RunRecord | None, rho1: float) -> None:
    """Fill the error columns of ``record`` against ``reference`` (left NaN without a usable reference)."""
    if record.observables is None or reference is None or reference.status != "ok":
        return
    errors = relative_errors(record.observables, reference.observables, rho1, record.n)
    record.loss_rel_error, record.m1_rel_error, record.q1_rel_error = errors
    record.max_rel_error = max(errors) if all(math.isfinite(e) for e in errors) else math.nan


def fill_ratios(records: list) -> None:
    """Set the time ratios to the fastest project method on the same case and rtol, in wall and in CPU time."""
    for clock, column in (("wall_seconds", "ratio_to_fastest"), ("cpu_seconds", "cpu_ratio_to_fastest")):
        fastest = {}
        for record in records:
            if record.kind == "project" and record.status == "ok":
                key = (record.section, record.case, record.rtol)
                fastest[key] = min(fastest.get(key, math.inf), getattr(record, clock))
        for record in records:
            key = (record.section, record.case, record.rtol)
            if record.status in ("ok", "timed out", "failed") and key in fastest and record.kind in ("project", "peer"):
                setattr(record, column, getattr(record, clock) / fastest[key])


class CostEstimator:
    """Estimates of a method's CPU time on a larger system, from its run on the last smaller one.

    A dense peer forms an ``n x n`` Jacobian at every Jacobian update and
    factorises it (``n^3``), so its time is scaled by ``(n / n_last)^2``.
    The time of the other methods is scaled by ``n / n_last``. At small ``n``
    the per-step overhead of the Python callbacks dominates and grows more
    slowly, so the estimate can be high there. The caller therefore skips a
    run only when the estimate exceeds its budget by a wide margin.
    """

    def __init__(self):
        self.last = {}

    def record(self, method: str, n: int, record: RunRecord) -> None:
        if record.status in ("ok", "timed out", "failed") and math.isfinite(record.cpu_seconds):
            self.last[method] = (n, record.cpu_seconds, record.status)

    def estimate(self, method: str, n: int) -> tuple:
        """Return ``(seconds, basis)`` for ``method`` at size ``n``, or ``(nan, "")`` without a smaller run."""
        if method not in self.last:
            return math.nan, ""
        last_n, last_seconds, last_status = self.last[method]
        power = 2 if method in peers.DENSE_PEERS else 1
        seconds = last_seconds * (n / last_n) ** power
        verb = "timed out after" if last_status == "timed out" else "took"
        return seconds, f"{last_seconds:.3g} s of CPU time at n = {last_n} ({verb}), scaled by (n ratio)^{power}"
