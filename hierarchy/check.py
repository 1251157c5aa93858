"""``hierarchy check``: every closed-form phase prediction against integrated trajectories on a grid of ``a, b, d``.

For each case of the grid (see :mod:`hierarchy.check_config`) the spectral
modes are integrated. ``d = inf`` uses the adaptive rule of
:func:`~hierarchy.rule_selection.select_spectral_rule` or a fixed fine rule.
Finite ``d`` uses a fixed fine rule with exact top and bottom eigenvalues, or
one exact node when all eigenvalues are equal. The phases are measured with
:func:`~hierarchy.phases.detect_phases`, and each prediction of
:mod:`hierarchy.predictions` is compared with its measurement:

==============================  ==========================================================
quantity                        prediction
==============================  ==========================================================
escape_time_leading             ``ln(m_esc / |m_1(0)|) / (2 rho_2)``
escape_time_two_stage           linear regime to ``q_1 = rho_1/3``, then ``2 rho_2`` growth
escape_time_corrected           two-stage with saturation (exact for ``Σ = I``)
convergence_time                tail-driven, ``max(|D/3 - Q/2|, |2D/3|) = tolerance rho_1``
tail_exponent                   fitted over the power-law window vs ``(a + b - 1) / a``
tail_prefactor                  ``d = inf``: median of ``L (4 rho_1 t)^gamma`` over the window
tail_prefactor_corrected        the same against the start factor and feedback correction
tail_loss_sum                   ``L`` at the window's middle vs the leading finite sum
tail_loss_corrected             ``L`` there vs the sum with the start and feedback
late_decay_rate                 ``-d ln L / dt`` at late times vs ``2 nu_min`` (finite ``d``)
==============================  ==========================================================

``relative_error`` is ``predicted / measured - 1``. The results go to
``DIR/check.csv`` and three kinds of figure: ``tail_exponent.png``,
``escape_time.png`` and ``loss_curves*.png``.
"""

import argparse
import csv
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from . import predictions
from .check_config import CheckConfig, CheckConfigError, load_check_config
from .model import PhaseRetrieval
from .phases import PhaseDetection, detect_phases
from .pipeline import TruncationOptions, integrate_problem
from .rule_selection import select_spectral_rule
from .spectrum import PowerLawSpec
from .trajectory import Trajectory

logger = logging.getLogger(__name__)

EXIT_SUCCESS = 0
EXIT_INTEGRATION_FAILED = 1
EXIT_INVALID_INPUT = 2

CSV_FILE = "check.csv"
EXPONENT_PLOT_FILE = "tail_exponent.png"
ESCAPE_PLOT_FILE = "escape_time.png"
LOSS_PLOT_PREFIX = "loss_curves"
CSV_COLUMNS = ("a", "b", "d", "sigma0", "seed", "quantity", "measured", "predicted", "relative_error", "note")

# Fixed rules: for d = inf when the grid sets rule = "fixed", and for every finite d.
FIXED_INFINITE_RULE = TruncationOptions(bins_per_decade=8, rule_order=7, exact_top=16)
FIXED_FINITE_RULE = TruncationOptions(bins_per_decade=8, rule_order=7, exact_top=16, exact_bottom=16)
ADAPTIVE_EXACT_TOP = 16
# Loss floor of the measurements, relative to L(0): below it the loss is rounding.
RELATIVE_LOSS_FLOOR = 1e-12
# The late decay rate is fitted where the last eigenvalue dominates, from
# t = LATE_RATE_SEPARATION / (4 rho_1 (lam_{d-1} - lam_d)) on, over at least
# LATE_RATE_POINTS outputs.
LATE_RATE_SEPARATION = 5.0
LATE_RATE_POINTS = 3
LATE_RATE_ROUNDING_MARGIN = 100.0
# Panels per loss-curve figure.
PANELS_PER_FIGURE = 12


@dataclass(frozen=True)
class CheckRow:
    """One prediction against its measurement for one case; ``None`` where a value does not exist."""

    a: float
    b: float
    d: float
    sigma0: float
    seed: int | None
    quantity: str
    measured: float | None
    predicted: float | None
    relative_error: float | None
    note: str = ""


@dataclass
class CaseResult:
    """Trajectory, measured phases and predictions of one grid case.

    ``tail_leading`` and ``tail_corrected`` are the tail predictions at every
    output time, ``nan`` before convergence. ``error`` is set when the case
    could not be integrated or predicted, and ``rows`` is then empty.
    """

    spec: PowerLawSpec
    truncation: str
    trajectory: Trajectory | None = None
    detection: PhaseDetection | None = None
    escape: predictions.EscapePrediction | None = None
    tail_leading: np.ndarray | None = None
    tail_corrected: np.ndarray | None = None
    rows: list = field(default_factory=list)
    error: str | None = None
    wall_seconds: float = 0.0

    @property
    def label(self) -> str:
        return case_label(self.spec)

    @property
    def success(self) -> bool:
        return self.error is None and self.trajectory is not None and self.trajectory.success


@dataclass
class CheckResult:
    """All cases of a check, their rows, and the grid points left out with the reason."""

    config: CheckConfig
    cases: list
    skipped: list = field(default_factory=list)

    @property
    def rows(self) -> list:
        return [row for case in self.cases for row in case.rows]

    @property
    def success(self) -> bool:
        return all(case.success for case in self.cases)


def case_label(spec: PowerLawSpec) -> str:
    """Return a one-line description of a grid case."""
    start = f"s = {spec.init_teacher_scale:g}" if spec.infinite else f"seed = {spec.seed}"
    return f"a = {spec.a:g}, b = {spec.b:g}, d = {spec.d}, sigma0 = {spec.sigma0:g}, {start}"


def build_cases(config: CheckConfig) -> tuple:
    """Return ``(specs, skipped)``: the cases of the grid, and ``(description, reason)`` for each point left out.

    ``d = inf`` runs once per ``(a, b, sigma0)`` (its start does not depend on
    the seed) and only where ``a + b > 1`` and ``a + e > 1``.
    """
    grid = config.grid
    specs, skipped = [], []
    for a in grid.a:
        for b in grid.b:
            for d in grid.d:
                for sigma0 in grid.sigma0:
                    if math.isinf(d):
                        exponent = b if grid.init_isotropic_exponent == "b" else grid.init_isotropic_exponent
                        description = f"a = {a:g}, b = {b:g}, d = inf, sigma0 = {sigma0:g}"
                        if a + b <= 1.0:
                            skipped.append((description, "d = inf needs a + b > 1"))
                            continue
                        if a + exponent <= 1.0:
                            skipped.append((description, f"d = inf needs a + init_isotropic_exponent > 1, got {a + exponent:g}"))
                            continue
                        specs.append(PowerLawSpec(
                            d=math.inf, a=a, b=b, sigma0=sigma0,
                            init_teacher_scale=grid.init_teacher_scale, init_isotropic_exponent=exponent,
                        ))
                        continue
                    for seed in grid.seeds:
                        specs.append(PowerLawSpec(d=int(d), a=a, b=b, sigma0=sigma0, seed=seed))
    return specs, skipped


def integrate_case(spec: PowerLawSpec, config: CheckConfig, model) -> tuple:
    """Integrate the spectral modes of ``spec``; return ``(problem, trajectory, description of the rule)``."""
    problem = spec.build()
    solver = config.solver
    if spec.infinite:
        if config.grid.rule == "adaptive":
            selection = select_spectral_rule(
                problem, model, solver, tolerance=config.grid.rule_tolerance, exact_top=ADAPTIVE_EXACT_TOP,
            )
            options = selection.truncation
            description = (
                f"adaptive rule {options.bins_per_decade} x {options.rule_order} "
                f"({selection.trajectory.state_size // 2} modes, estimated loss error {selection.estimate.loss:.1e}"
                + ("" if selection.converged else ", tolerance not met") + ")"
            )
            return problem, selection.trajectory, description
        trajectory = integrate_problem(problem, model, FIXED_INFINITE_RULE, solver)
        return problem, trajectory, f"fixed rule 8 x 7 ({trajectory.state_size // 2} modes)"
    trajectory = integrate_problem(problem, model, FIXED_FINITE_RULE, solver)
    if problem.lam[0] == problem.lam[-1]:
        return problem, trajectory, "one exact node (equal eigenvalues)"
    return problem, trajectory, f"fixed rule 8 x 7 with 16 exact bottom eigenvalues ({trajectory.state_size // 2} modes)"


def _relative_error(measured, predicted):
    if measured is None or predicted is None:
        return None
    if not (math.isfinite(measured) and math.isfinite(predicted)) or measured == 0.0:
        return None
    return predicted / measured - 1.0


def _row(spec: PowerLawSpec, quantity: str, measured, predicted, note: str = "") -> CheckRow:
    measured = None if measured is None else float(measured)
    predicted = None if predicted is None else float(predicted)
    return CheckRow(
        a=float(spec.a), b=float(spec.b), d=float(spec.d), sigma0=float(spec.sigma0),
        seed=None if spec.infinite else int(spec.seed), quantity=quantity, measured=measured, predicted=predicted,
        relative_error=_relative_error(measured, predicted), note=note,
    )


def _comparison_indices(trajectory: Trajectory, detection: PhaseDetection) -> np.ndarray:
    """Return the outputs where the tail predictions are compared: the power-law window, else every converged output above the floor."""
    if detection.power_law is not None:
        return np.arange(detection.power_law.first_index, detection.power_law.last_index + 1)
    if detection.convergence_time is None:
        return np.zeros(0, dtype=np.int64)
    usable = (trajectory.t >= detection.convergence_time) & np.isfinite(trajectory.loss) & (trajectory.loss > detection.loss_floor)
    return np.flatnonzero(usable)


def _escape_rows(spec, detection: PhaseDetection, escape: predictions.EscapePrediction) -> list:
    measured = detection.escape_time
    regime = f"regime: {escape.regime}" + (f"; {escape.message}" if escape.message else "")
    rows = [_row(spec, "escape_time_leading", measured, escape.leading, "ln(m_esc/|m_1(0)|)/(2 rho_2)")]
    if escape.regime != "isotropic exact":
        detail = ""
        if escape.growth_rate is not None:
            detail = f"; mu = {escape.growth_rate:.4g}, t_s = {escape.switch_time:.3g}, m_s = {escape.switch_overlap:.3g}"
        rows.append(_row(spec, "escape_time_two_stage", measured, escape.two_stage, regime + detail))
    saturation = "" if escape.saturation_constant is None else f"; k = {escape.saturation_constant:.3g}"
    rows.append(_row(spec, "escape_time_corrected", measured, escape.corrected, regime + saturation))
    return rows


def _convergence_row(spec, detection, escape, feedback_nodes, config) -> CheckRow:
    start = escape.corrected if escape.corrected is not None else escape.leading
    if spec.a == 0.0:
        return _row(spec, "convergence_time", detection.convergence_time, None, "not tail-driven: all eigenvalues are equal")
    if start is None or start <= 0.0:
        return _row(spec, "convergence_time", detection.convergence_time, None, "no predicted escape time to start from")
    predicted = predictions.predict_convergence_time(
        feedback_nodes, config.grid.convergence_tolerance, start, config.solver.t_end
    )
    note = "max(|D/3 - Q/2|, |2D/3|) = tolerance rho_1 after the predicted escape"
    if predicted is None:
        note += "; not tail-driven or beyond t_end"
    return _row(spec, "convergence_time", detection.convergence_time, predicted, note)


def _tail_rows(spec, problem, trajectory, detection, leading, corrected) -> list:
    rows = []
    parameters = predictions.power_law_parameters(problem)
    fit = detection.power_law
    exponent = parameters.exponent if parameters is not None else None
    if exponent is not None:
        if fit is None:
            rows.append(_row(spec, "tail_exponent", None, exponent, "no power-law window after the convergence"))
        else:
            rows.append(_row(
                spec, "tail_exponent", fit.exponent, exponent,
                f"window t = {fit.t_start:.3g}..{fit.t_end:.3g} ({fit.decades:.2f} decades, {fit.n_points} outputs), "
                f"standard error {fit.standard_error:.2g}, local slopes {-fit.local_slope_max:.4f}..{-fit.local_slope_min:.4f}",
            ))
    elif spec.a == 0.0:
        rows.append(_row(spec, "tail_exponent", None, None, "a = 0: no spectral tail, the loss decays exponentially"))
    else:
        rows.append(_row(spec, "tail_exponent", None, None, f"a + b = {spec.a + spec.b:g} <= 1: no power law"))

    if spec.a == 0.0:
        # Equal eigenvalues: the late loss is the orthogonal norm relaxing at 2 rho_1 after an O(1)
        # rescaling during the escape, which the slow-mode sums do not describe (see late_decay_rate).
        rows.append(_row(spec, "tail_loss_sum", None, None, "a = 0: no slow modes, see late_decay_rate"))
        return rows
    indices = _comparison_indices(trajectory, detection)
    if indices.size == 0:
        rows.append(_row(spec, "tail_loss_sum", None, None, "the statistics never converged above the loss floor"))
        return rows
    times = trajectory.t[indices]
    measured = trajectory.loss[indices]
    where = "power-law window" if fit is not None else "converged outputs"

    if spec.infinite and exponent is not None and fit is not None:
        shape = (4.0 * parameters.rho1 * times) ** (-exponent)
        measured_prefactor = float(np.median(measured / shape))
        leading_prefactor = float(predictions.tail_power_law(parameters.a, parameters.b, parameters.rho1, parameters.c2, 1.0 / (4.0 * parameters.rho1)))
        rows.append(_row(spec, "tail_prefactor", measured_prefactor, leading_prefactor, f"median of L (4 rho_1 t)^gamma over the {where}"))
        if parameters.isotropic_ratio is not None and exponent < 1.0:
            corrected_law = predictions.tail_power_law_corrected(
                parameters.a, parameters.b, parameters.rho1, parameters.c2, parameters.teacher_scale,
                parameters.isotropic_ratio, times,
            )
            rows.append(_row(
                spec, "tail_prefactor_corrected", measured_prefactor, float(np.median(corrected_law / shape)),
                "start factor (1-s)^2 + eta and feedback r(t) ~ t^(-gamma)",
            ))

    middle = int(indices[len(indices) // 2])
    for quantity, prediction, name in (("tail_loss_sum", leading, "leading sum"), ("tail_loss_corrected", corrected, "start and feedback")):
        errors = prediction[indices] / measured - 1.0
        worst = float(np.max(np.abs(errors)))
        rows.append(_row(
            spec, quantity, trajectory.loss[middle], prediction[middle],
            f"{name} at t = {trajectory.t[middle]:.3g}; max |error| {worst:.2g} over the {where} t = {times[0]:.3g}..{times[-1]:.3g}",
        ))
    return rows


def _late_rate_row(spec, problem, trajectory, detection) -> CheckRow | None:
    """Compare the late exponential decay of a finite problem with ``2 nu_min``, where the last eigenvalue dominates."""
    if spec.infinite or detection.convergence_time is None:
        return None
    lam = problem.lam
    gap = lam[-2] - lam[-1] if lam.size > 1 else 0.0
    start = detection.convergence_time if gap == 0.0 else max(
        detection.convergence_time, LATE_RATE_SEPARATION / (4.0 * problem.rho1 * gap)
    )
    # The sums m_1, q_1 over d terms carry rounding errors of up to about
    # d eps relative, and the loss is linear in them near the optimum, so it
    # levels off near that size (1.9e-12 at d = 1e5, a = 0). The fit stops
    # a hundred times above it.
    rounding_floor = LATE_RATE_ROUNDING_MARGIN * problem.d * np.finfo(float).eps * trajectory.loss[0]
    floor = max(detection.loss_floor, rounding_floor)
    usable = (trajectory.t >= start) & np.isfinite(trajectory.loss) & (trajectory.loss > floor)
    indices = np.flatnonzero(usable)
    if indices.size < LATE_RATE_POINTS:
        return None
    slope = np.polyfit(trajectory.t[indices], np.log(trajectory.loss[indices]), 1)[0]
    predicted = 2.0 * predictions.slowest_relaxation_rate(problem)
    note = f"fit of ln L over t = {trajectory.t[indices[0]]:.3g}..{trajectory.t[indices[-1]]:.3g}; 2 nu_min of the Hessian"
    return _row(spec, "late_decay_rate", -slope, predicted, note)


def _tail_predictions(trajectory, detection, sum_nodes, feedback_nodes) -> tuple:
    """Return the leading and corrected tail losses at the converged outputs (``nan`` elsewhere and for one node)."""
    leading = np.full(trajectory.t.shape, np.nan)
    corrected = np.full(trajectory.t.shape, np.nan)
    if detection.convergence_time is None or sum_nodes.lam.size == 1:
        return leading, corrected
    after = np.flatnonzero(trajectory.t >= detection.convergence_time)
    leading[after] = predictions.tail_loss_sum(sum_nodes, trajectory.t[after])
    corrected[after] = predictions.tail_loss_corrected(feedback_nodes, trajectory.t[after])
    return leading, corrected


def run_case(spec: PowerLawSpec, config: CheckConfig, model=None) -> CaseResult:
    """Integrate one case, measure its phases and compare every applicable prediction."""
    model = PhaseRetrieval() if model is None else model
    started = time.perf_counter()
    problem, trajectory, truncation = integrate_case(spec, config, model)
    result = CaseResult(spec=spec, truncation=truncation, trajectory=trajectory)
    grid = config.grid
    # NumPy scalars overflow to inf on absurd spectra instead of raising OverflowError.
    initial_loss = float(model.loss(np.float64(problem.q(1)), np.float64(problem.m(1)), np.float64(problem.rho1)))
    detection = detect_phases(
        trajectory, initial_loss=initial_loss, escape_level=grid.escape_level,
        convergence_tolerance=grid.convergence_tolerance, slope_tolerance=grid.slope_tolerance,
        relative_loss_floor=RELATIVE_LOSS_FLOOR,
    )
    result.detection = detection

    horizon = config.solver.t_end
    sum_nodes = predictions.spectral_nodes(problem, horizon=horizon)
    feedback_nodes = predictions.feedback_nodes(problem, horizon=horizon)
    escape_nodes = predictions.spectral_nodes(problem, horizon=1e3)
    result.escape = predictions.predict_escape(problem, grid.escape_level, nodes=escape_nodes)
    result.tail_leading, result.tail_corrected = _tail_predictions(trajectory, detection, sum_nodes, feedback_nodes)

    rows = _escape_rows(spec, detection, result.escape)
    rows.append(_convergence_row(spec, detection, result.escape, feedback_nodes, config))
    rows.extend(_tail_rows(spec, problem, trajectory, detection, result.tail_leading, result.tail_corrected))
    late = _late_rate_row(spec, problem, trajectory, detection)
    if late is not None:
        rows.append(late)
    if not trajectory.success:
        rows = [
            CheckRow(row.a, row.b, row.d, row.sigma0, row.seed, row.quantity, row.measured, row.predicted,
                     row.relative_error, (row.note + "; " if row.note else "") + f"integration {trajectory.status}")
            for row in rows
        ]
    result.rows = rows
    result.wall_seconds = time.perf_counter() - started
    return result


def run_check(config: CheckConfig, model=None) -> CheckResult:
    """Run every case of ``config``'s grid and return the measurements next to the predictions.

    A case whose integration or prediction raises ``ValueError``,
    ``RuntimeError``, ``ArithmeticError`` or ``MemoryError`` is kept with its
    ``error`` set, and the other cases go on.
    """
    model = PhaseRetrieval() if model is None else model
    specs, skipped = build_cases(config)
    cases = []
    for number, spec in enumerate(specs, start=1):
        logger.info("case %d of %d: %s", number, len(specs), case_label(spec))
        try:
            case = run_case(spec, config, model)
        except (ValueError, RuntimeError, ArithmeticError) as error:
            logger.error("case %s failed: %s", case_label(spec), error)
            case = CaseResult(spec=spec, truncation="", error=f"{type(error).__name__}: {error}")
        except MemoryError:
            logger.error("case %s failed: out of memory", case_label(spec))
            case = CaseResult(spec=spec, truncation="", error="MemoryError: out of memory; this case is too large for this machine")
        else:
            if not case.trajectory.success:
                logger.warning("case %s: integration %s: %s", case.label, case.trajectory.status, case.trajectory.message)
            logger.info("case %s done in %.1f s (%s)", case.label, case.wall_seconds, case.truncation)
        cases.append(case)
    for description, reason in skipped:
        logger.info("skipped %s: %s", description, reason)
    return CheckResult(config=config, cases=cases, skipped=skipped)


# ---------------------------------------------------------------------------
# Files and table.


def _format_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "inf" if math.isinf(value) else repr(value)
    return str(value)


def write_check_csv(path, result: CheckResult) -> Path:
    """Write one row per prediction and case to ``path`` (empty cells where a value does not exist)."""
    path = Path(path)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for case in result.cases:
            if case.error is not None:
                spec = case.spec
                writer.writerow([spec.a, spec.b, _format_cell(float(spec.d)), spec.sigma0,
                                 "" if spec.infinite else spec.seed, "case_failed", "", "", "", case.error])
                continue
            for row in case.rows:
                writer.writerow([_format_cell(getattr(row, column)) for column in CSV_COLUMNS])
    return path


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def plot_tail_exponents(path, result: CheckResult) -> Path:
    """Draw the fitted tail exponent against ``a`` (one colour per ``b``) with the predicted ``(a + b - 1)/a``."""
    figure = _new_figure(7.0, 5.0)
    axes = figure.subplots()
    colors = {b: f"C{index}" for index, b in enumerate(result.config.grid.b)}
    markers = {}

    for case in result.cases:
        if case.detection is None or case.detection.power_law is None:
            continue
        fit = case.detection.power_law
        spec = case.spec
        marker = markers.setdefault(spec.d, "os^Dv<>p*h"[len(markers) % 10])
        error = max(fit.standard_error if math.isfinite(fit.standard_error) else 0.0, 0.5 * fit.local_slope_spread)
        axes.errorbar(spec.a, fit.exponent, yerr=error, fmt=marker, color=colors[spec.b], markersize=5, capsize=2)

    for b, color in colors.items():
        a_values = np.array([a for a in result.config.grid.a if a > 0.0 and a + b > 1.0])
        if a_values.size == 0:
            continue
        curve = np.linspace(max(1.0 - b, 0.0) + 1e-3, max(a_values.max(), 1.0 - b + 0.5), 200)
        curve = curve[curve > 0.0]
        axes.plot(curve, (curve + b - 1.0) / curve, color=color, label=f"(a + b - 1)/a, b = {b:g}")
    for d, marker in markers.items():
        axes.plot([], [], marker, color="gray", label=f"fitted, d = {d}")

    axes.set_xlabel("spectral exponent a")
    axes.set_ylabel("tail exponent of L(t)")
    axes.set_title("fitted tail exponent (error bar: larger of the standard error and half the local-slope spread)", fontsize="small")
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize="small")
    else:
        axes.text(0.5, 0.5, "no case has a power-law window", transform=axes.transAxes, ha="center")
    figure.savefig(path, dpi=110)
    return Path(path)


def plot_escape_times(path, result: CheckResult) -> Path:
    """Draw measured, leading-order and corrected escape times against ``ln d`` (finite ``d``).

    One colour per ``(a, b, sigma0)`` and one pair of lines per seed, since
    each seed has its own start and so its own predictions.
    """
    figure = _new_figure(7.0, 5.0)
    axes = figure.subplots()
    groups = {}
    for case in result.cases:
        if case.spec.infinite or case.detection is None or case.detection.escape_time is None:
            continue
        groups.setdefault((case.spec.a, case.spec.b, case.spec.sigma0), {}).setdefault(case.spec.seed, []).append(case)
    for index, (key, seeds) in enumerate(sorted(groups.items())):
        color = f"C{index % 10}"
        a, b, sigma0 = key
        for number, cases in enumerate(seeds.values()):
            cases = sorted(cases, key=lambda case: case.spec.d)
            log_d = np.array([math.log(case.spec.d) for case in cases])
            measured = np.array([case.detection.escape_time for case in cases])
            leading = np.array([np.nan if case.escape.leading is None else case.escape.leading for case in cases])
            corrected = np.array([np.nan if case.escape.corrected is None else case.escape.corrected for case in cases])
            label = f"measured, a = {a:g}, b = {b:g}, sigma0 = {sigma0:g}" if number == 0 else None
            axes.plot(log_d, measured, "o", color=color, label=label)
            axes.plot(log_d, leading, "--", color=color, linewidth=0.8)
            axes.plot(log_d, corrected, "-", color=color, linewidth=1.0)
    axes.plot([], [], "k--", label="leading order ln(m_esc/m_1(0))/(2 rho_2)")
    axes.plot([], [], "k-", label="corrected")
    axes.set_xlabel("ln d")
    axes.set_ylabel("escape time")
    axes.legend(fontsize="x-small")
    figure.savefig(path, dpi=110)
    return Path(path)


def plot_loss_curves(directory, result: CheckResult) -> list:
    """Draw measured and predicted loss curves, one panel per case, ``PANELS_PER_FIGURE`` panels per file."""
    cases = [case for case in result.cases if case.trajectory is not None and case.trajectory.t.size]
    paths = []
    for start in range(0, len(cases), PANELS_PER_FIGURE):
        chunk = cases[start : start + PANELS_PER_FIGURE]
        columns = min(3, len(chunk))
        rows = math.ceil(len(chunk) / columns)
        figure = _new_figure(5.0 * columns, 3.6 * rows)
        axes_grid = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
        for axes, case in zip(axes_grid, chunk):
            trajectory = case.trajectory
            positive = np.where(trajectory.loss > 0.0, trajectory.loss, np.nan)
            axes.loglog(trajectory.t, positive, color="black", label="L(t), integrated")
            for values, style, label in ((case.tail_leading, ":", "leading tail sum"), (case.tail_corrected, "--", "start + feedback")):
                if values is not None:
                    axes.loglog(trajectory.t, np.where(values > 0.0, values, np.nan), style, label=label)
            fit = case.detection.power_law if case.detection is not None else None
            if fit is not None:
                axes.axvspan(fit.t_start, fit.t_end, color="tab:green", alpha=0.1, label=f"power law, exponent {fit.exponent:.4f}")
            if case.detection is not None and case.detection.escape_time is not None:
                axes.axvline(case.detection.escape_time, color="tab:red", linewidth=0.8, linestyle="--")
            finite = positive[np.isfinite(positive)]
            if finite.size:
                axes.set_ylim(max(finite.min(), case.detection.loss_floor if case.detection else 0.0) * 0.1, finite.max() * 3.0)
            axes.set_title(case.label, fontsize="x-small")
            axes.set_xlabel("t", fontsize="small")
            axes.legend(fontsize="xx-small", loc="lower left")
        for axes in axes_grid[len(chunk):]:
            axes.set_visible(False)
        suffix = "" if len(cases) <= PANELS_PER_FIGURE else f"_{start // PANELS_PER_FIGURE + 1}"
        path = Path(directory) / f"{LOSS_PLOT_PREFIX}{suffix}.png"
        figure.savefig(path, dpi=100)
        paths.append(path)
    return paths


def write_check_files(directory, result: CheckResult) -> list:
    """Write ``check.csv`` and the figures to ``directory`` (created if missing); return their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [write_check_csv(directory / CSV_FILE, result)]
    paths.append(plot_tail_exponents(directory / EXPONENT_PLOT_FILE, result))
    paths.append(plot_escape_times(directory / ESCAPE_PLOT_FILE, result))
    paths.extend(plot_loss_curves(directory, result))
    return paths


def _short(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.5g}"


def format_check_table(result: CheckResult) -> str:
    """Return the table that ``hierarchy check`` prints: one block per case, one line per prediction."""
    lines = []
    for case in result.cases:
        lines.append(f"{case.label}  [{case.truncation or 'not integrated'}]")
        if case.error is not None:
            lines.append(f"  failed: {case.error}")
            continue
        if not case.trajectory.success:
            lines.append(f"  integration {case.trajectory.status}: {case.trajectory.message}")
        lines.append(f"  {'quantity':<26} {'measured':>12} {'predicted':>12} {'rel. error':>11}")
        for row in case.rows:
            error = "-" if row.relative_error is None else f"{row.relative_error:+.2%}"
            lines.append(f"  {row.quantity:<26} {_short(row.measured):>12} {_short(row.predicted):>12} {error:>11}")
    for description, reason in result.skipped:
        lines.append(f"skipped {description}: {reason}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Command line.


def configure_check_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments of ``hierarchy check`` to ``parser`` (a subcommand parser or a standalone one)."""
    parser.add_argument("config", metavar="CONFIG.toml", help="TOML file with a [check] grid and optional [solver] table")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory for check.csv and the figures, created if missing")
    parser.add_argument("--quiet", action="store_true", help="log only warnings and errors to stderr, not progress")
    return parser


def build_check_parser() -> argparse.ArgumentParser:
    """Return a standalone parser of the ``check`` arguments."""
    parser = argparse.ArgumentParser(
        prog="hierarchy check",
        description=(
            "Integrate a grid of problems, compare every closed-form phase prediction with its measurement, "
            "print the table and write check.csv and figures. Exit code 0 when every integration reached t_end, "
            "1 when one failed, 2 on invalid input."
        ),
    )
    return configure_check_parser(parser)


def run_check_command(arguments: argparse.Namespace) -> int:
    """Run ``hierarchy check`` for parsed ``arguments`` (``config``, ``out``, ``quiet``) and return the exit code."""
    package_logger = logging.getLogger("hierarchy")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    previous = (package_logger.level, package_logger.propagate)
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.WARNING if arguments.quiet else logging.INFO)
    package_logger.propagate = False
    try:
        try:
            config = load_check_config(arguments.config)
        except CheckConfigError as error:
            print(f"hierarchy check: error: {error}", file=sys.stderr)
            return EXIT_INVALID_INPUT
        specs, skipped = build_cases(config)
        if not specs:
            reasons = "; ".join(f"{description}: {reason}" for description, reason in skipped)
            print(f"hierarchy check: error: every case of the grid is skipped ({reasons})", file=sys.stderr)
            return EXIT_INVALID_INPUT
        result = run_check(config)
        try:
            paths = write_check_files(arguments.out, result)
        except OSError as error:
            print(f"hierarchy check: error: failed to write results to {arguments.out}: {error}", file=sys.stderr)
            return EXIT_INVALID_INPUT
        print(format_check_table(result))
        print("")
        print("files: " + ", ".join(str(path) for path in paths))
        return EXIT_SUCCESS if result.success else EXIT_INTEGRATION_FAILED
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(previous[0])
        package_logger.propagate = previous[1]


def main_check(argv=None) -> int:
    """Run ``hierarchy check`` with ``argv`` (the arguments after ``check``) and return its exit code."""
    parser = build_check_parser()
    try:
        arguments = parser.parse_args(argv)
    except SystemExit as exit_request:
        # argparse exits after --help (code 0) and on invalid arguments (code 2).
        return int(exit_request.code or 0)
    return run_check_command(arguments)
