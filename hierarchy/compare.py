"""Comparison of truncation levels against a reference, the work of ``hierarchy compare``.

``run_comparison`` integrates a reference for one problem (the exact
d-dimensional flow, or spectral modes on a fine rule, the only choice for
d = inf), then every truncation that ``CompareOptions`` lists: spectral modes
on each rule, and the moment hierarchy with each closure at each order. Each
truncation becomes a ``ComparisonRow`` with its maximum relative errors in
``L``, ``|m_1|`` and ``q_1`` over the output times it reached and how its run
ended. A truncation that diverges or exhausts its budget is a result, not an
error, and an order that a closure rejects becomes a skipped row with the
builder's reason.

Errors are relative to the reference at the same output time. ``|m_1|`` is
compared because the flow may converge to ``-w*`` instead of ``w*``. The
loss error ignores output times where the reference loss is below
``rule_selection.LOSS_FLOOR_FRACTION`` times its initial value: there ``L``
is a difference of terms of order ``rho_1^2``, and the integration error of
``q_1, m_1`` alone gives it a large relative error.

``format_comparison``, ``write_comparison_csv`` and ``plot_comparison`` turn
a ``Comparison`` into the printed table, ``compare.csv`` and ``compare.png``.
Nothing in this module prints.
"""

import csv
import dataclasses
import math
import time
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .config import CompareConfig, CompareOptions
from .integrators import solve
from .pipeline import SolverOptions, TruncationOptions, build_system
from .rule_selection import LOSS_FLOOR_FRACTION
from .trajectory import Trajectory
from .truncation.moment_hierarchy import CLOSURES

CSV_FILE = "compare.csv"
PLOT_FILE = "compare.png"
CSV_COLUMNS = (
    "kind",
    "closure",
    "K",
    "state_size",
    "loss_max_rel_error",
    "m1_max_rel_error",
    "q1_max_rel_error",
    "t_loss_within_1_percent",
    "t_last_output",
    "t_stopped",
    "m1_final",
    "wall_seconds",
    "status",
    "message",
)

# The loss error ignores output times where the reference loss is below this
# fraction of its initial value.
# Relative loss error up to which a truncation counts as agreeing with the reference.
LOSS_AGREEMENT = 0.01
SKIPPED = "SKIPPED"
# Relative errors above this are drawn at the top of the error axis. Failing
# closures reach 1e5 to 1e25 before they stop, diverged ones up to 1e200.
ERROR_AXIS_TOP = 1e30
# Each series is shifted by this factor in K, so that the markers of
# closures at the same order do not hide each other.
SERIES_OFFSET = 1.05
# Resolution of compare.png; labels are placed at the same resolution.
FIGURE_DPI = 120
# Offset in points of a marker's label from the marker, and the gap in points
# between labels that would overlap and are stacked.
LABEL_OFFSET = (7.0, -3.0)
LABEL_GAP = 1.0


@dataclass
class ComparisonRow:
    """One compared truncation: its errors against the reference and how its run ended.

    Attributes
    ----------
    kind : str
        ``"spectral_modes"`` or ``"moments"``.
    closure : str
        The closure of a moment truncation, or the spectral rule as
        ``"bins_per_decade x rule_order"``.
    K : int or None
        Number of spectral modes, or the moment order. ``None`` for a skipped
        spectral rule, whose size is unknown.
    state_size : int or None
        Number of ODEs integrated; ``None`` when skipped.
    loss_error, m1_error, q1_error : float
        Maximum relative error of ``L``, ``|m_1|`` and ``q_1`` over the output
        times reached; ``nan`` when no output time was compared.
    t_loss_within_1_percent : float or None
        Last compared output time up to which the loss stayed within
        ``LOSS_AGREEMENT`` of the reference. ``None`` when the loss is
        already outside at the first compared time, or no time was compared.
    t_last_output, t_stopped : float or None
        Last output time reached, and the time at which the integration
        stopped (the end of the grid after a success).
    m1_final : float
        ``m_1`` at the last output time reached (``nan`` when none was reached).
    wall_seconds : float
        Time to build and integrate the truncation.
    status, message : str
        Integration status (``SUCCESS``, ``DIVERGED``, ``STEP_BUDGET``, ...,
        or ``SKIPPED``) and its explanation.
    trajectory : Trajectory or None
        The integrated trajectory; ``None`` when skipped.
    """

    kind: str
    closure: str
    K: int | None
    state_size: int | None
    loss_error: float
    m1_error: float
    q1_error: float
    t_loss_within_1_percent: float | None
    t_last_output: float | None
    t_stopped: float | None
    m1_final: float
    wall_seconds: float
    status: str
    message: str
    trajectory: Trajectory | None = field(default=None, repr=False)

    @property
    def skipped(self) -> bool:
        return self.status == SKIPPED

    @property
    def failed(self) -> bool:
        """Whether the truncation ran and stopped before the end of the output grid."""
        return not self.skipped and self.status != "SUCCESS"

    @property
    def label(self) -> str:
        if self.kind == "spectral_modes":
            size = f", K = {self.K}" if self.K is not None else ""
            return f"spectral modes {self.closure}{size}"
        return f"{self.closure} closure, K = {self.K}"


@dataclass
class Comparison:
    """Result of ``run_comparison``: the reference run and one row per compared truncation.

    ``reference_kind`` is ``"exact"`` or ``"finest_rule"``, and
    ``reference_label`` names the reference's system and rule. ``rows`` is
    empty when the reference failed, because nothing can be measured against it. ``loss_ignored`` counts the output times where the
    reference loss is below ``loss_floor``, which the loss errors skip, and
    ``t_loss_ignored_first`` is the first of them.
    """

    reference: Trajectory
    reference_kind: str
    reference_label: str
    reference_wall_seconds: float
    rows: list
    initial_loss: float
    loss_floor: float
    loss_ignored: int
    t_loss_ignored_first: float | None
    problem_description: dict

    @property
    def reference_succeeded(self) -> bool:
        return self.reference.success


@dataclass(frozen=True)
class TrajectoryErrors:
    """Maximum relative errors of one trajectory against the reference, as in ``ComparisonRow``."""

    loss: float
    m1: float
    q1: float
    t_loss_within_1_percent: float | None


def _relative_errors(values: np.ndarray, reference_values: np.ndarray) -> np.ndarray:
    """Return ``|values - reference| / |reference|``, with ``inf`` where a value is not finite."""
    with np.errstate(divide="ignore", invalid="ignore"):
        errors = np.abs(values - reference_values) / np.abs(reference_values)
    errors = np.where(values == reference_values, 0.0, errors)
    return np.where(np.isfinite(errors), errors, np.inf)


def _maximum(errors: np.ndarray) -> float:
    return float(np.max(errors)) if errors.size else math.nan


def measure_errors(trajectory: Trajectory, reference: Trajectory, loss_floor: float) -> TrajectoryErrors:
    """Compare ``trajectory`` with ``reference`` at the output times that ``trajectory`` reached.

    The loss is compared only where the reference loss is positive and at
    least ``loss_floor``. ``m_1`` is compared in absolute value.

    Raises
    ------
    ValueError
        When the output times of ``trajectory`` are not the first output times of ``reference``.
    """
    n = trajectory.t.size
    if n > reference.t.size or not np.array_equal(trajectory.t, reference.t[:n]):
        raise ValueError("the trajectory and the reference must share the output grid, up to where the trajectory stopped")

    reference_loss = reference.loss[:n]
    compared = (reference_loss >= loss_floor) & (reference_loss > 0.0)
    loss_errors = _relative_errors(trajectory.loss[compared], reference_loss[compared])
    m1_errors = _relative_errors(np.abs(trajectory.m1), np.abs(reference.m1[:n]))
    q1_errors = _relative_errors(trajectory.q1, reference.q1[:n])

    compared_times = trajectory.t[compared]
    outside = np.flatnonzero(loss_errors > LOSS_AGREEMENT)
    if compared_times.size == 0:
        t_within = None
    elif outside.size == 0:
        t_within = float(compared_times[-1])
    elif outside[0] == 0:
        t_within = None
    else:
        t_within = float(compared_times[outside[0] - 1])
    return TrajectoryErrors(_maximum(loss_errors), _maximum(m1_errors), _maximum(q1_errors), t_within)


@dataclass(frozen=True)
class _Run:
    trajectory: Trajectory
    t_stopped: float
    wall_seconds: float


def _integrate(problem, model, truncation: TruncationOptions, solver: SolverOptions) -> _Run:
    """Build and integrate one truncation, raising ``ValueError`` when the builder rejects its options.

    This calls ``solve`` itself, not ``pipeline.integrate_problem``, because a
    row needs the time at which a failed run stopped, which ``Trajectory`` drops.
    """
    started = time.perf_counter()
    system = build_system(problem, model, truncation, solver)
    solution = solve(
        system,
        solver.output_times(),
        method=solver.method,
        rtol=solver.rtol,
        atol=solver.atol,
        max_steps=solver.max_steps,
        max_wall_seconds=solver.max_wall_seconds,
    )
    trajectory = Trajectory.from_solution(solution, model, problem.rho(1), problem.rho(2), system.name, system.size)
    return _Run(trajectory, float(solution.t_reached), time.perf_counter() - started)


def reference_truncation(options: CompareOptions, infinite_dimension: bool) -> tuple:
    """Return the reference's ``TruncationOptions`` and its kind, ``"exact"`` or ``"finest_rule"``."""
    kind = options.resolved_reference(infinite_dimension)
    if kind == "exact":
        if infinite_dimension:
            raise ValueError('reference = "exact" is invalid for d = inf because there is no finite flow; use "finest_rule"')
        return TruncationOptions(kind="exact"), kind
    truncation = TruncationOptions(
        kind="spectral_modes",
        bins_per_decade=options.reference_bins_per_decade,
        rule_order=options.reference_rule_order,
        exact_top=options.exact_top,
    )
    return truncation, kind


def planned_truncations(options: CompareOptions) -> list:
    """Return ``(kind, closure or rule, moment order or None, TruncationOptions)`` for every compared truncation.

    Spectral rules come first, in the listed order, then each closure at each
    moment order.
    """
    planned = []
    for bins_per_decade, rule_order in options.spectral_rules:
        truncation = TruncationOptions(
            kind="spectral_modes", bins_per_decade=bins_per_decade, rule_order=rule_order, exact_top=options.exact_top
        )
        planned.append(("spectral_modes", f"{bins_per_decade} x {rule_order}", None, truncation))
    for closure in options.closures:
        for order in options.moment_orders:
            planned.append(("moments", closure, order, TruncationOptions(kind="moments", order=order, closure=closure)))
    return planned


def _skipped_row(kind: str, closure: str, order: int | None, reason: str) -> ComparisonRow:
    return ComparisonRow(
        kind=kind, closure=closure, K=order, state_size=None, loss_error=math.nan, m1_error=math.nan,
        q1_error=math.nan, t_loss_within_1_percent=None, t_last_output=None, t_stopped=None, m1_final=math.nan,
        wall_seconds=0.0, status=SKIPPED, message=reason,
    )


def _measured_row(kind: str, closure: str, order: int | None, run: _Run, reference: Trajectory, loss_floor: float):
    trajectory = run.trajectory
    errors = measure_errors(trajectory, reference, loss_floor)
    reached = trajectory.t.size > 0
    return ComparisonRow(
        kind=kind,
        closure=closure,
        K=order if order is not None else trajectory.state_size // 2,
        state_size=trajectory.state_size,
        loss_error=errors.loss,
        m1_error=errors.m1,
        q1_error=errors.q1,
        t_loss_within_1_percent=errors.t_loss_within_1_percent,
        t_last_output=float(trajectory.t[-1]) if reached else None,
        t_stopped=run.t_stopped,
        m1_final=float(trajectory.m1[-1]) if reached else math.nan,
        wall_seconds=run.wall_seconds,
        status=trajectory.status,
        message=trajectory.message,
        trajectory=trajectory,
    )


def run_comparison(config: CompareConfig, model=None) -> Comparison:
    """Integrate the reference and every truncation of ``config`` and measure their errors.

    The reference runs with the ``[solver]`` limits and each truncation with
    ``compare.max_steps`` and ``compare.max_wall_seconds``. When the
    reference fails no truncation runs and ``rows`` is empty.

    Raises
    ------
    ValueError
        When the builder rejects the reference's options. A compared
        truncation that the builder rejects becomes a ``SKIPPED`` row instead.
    """
    model = config.model if model is None else model
    problem = config.problem.build()
    options = config.compare

    reference_options, reference_kind = reference_truncation(options, config.problem.infinite)
    reference_run = _integrate(problem, model, reference_options, config.solver)
    reference = reference_run.trajectory
    reference_label = reference.truncation
    if reference_kind == "finest_rule":
        reference_label += f", rule {reference_options.bins_per_decade} x {reference_options.rule_order}"

    # NumPy scalars overflow to inf on absurd spectra instead of raising OverflowError.
    initial_loss = float(model.loss(np.float64(problem.q(1)), np.float64(problem.m(1)), np.float64(problem.rho1)))
    loss_floor = LOSS_FLOOR_FRACTION * initial_loss
    ignored = np.flatnonzero(~((reference.loss >= loss_floor) & (reference.loss > 0.0)))

    rows = []
    if reference.success:
        truncation_solver = dataclasses.replace(
            config.solver, max_steps=options.max_steps, max_wall_seconds=options.max_wall_seconds
        )
        for kind, closure, order, truncation in planned_truncations(options):
            try:
                run = _integrate(problem, model, truncation, truncation_solver)
            except ValueError as error:
                # The builders reject the orders a closure cannot handle
                # (ratio below K = 2, quadrature above its maximum order).
                rows.append(_skipped_row(kind, closure, order, str(error)))
                continue
            rows.append(_measured_row(kind, closure, order, run, reference, loss_floor))

    return Comparison(
        reference=reference,
        reference_kind=reference_kind,
        reference_label=reference_label,
        reference_wall_seconds=reference_run.wall_seconds,
        rows=rows,
        initial_loss=initial_loss,
        loss_floor=loss_floor,
        loss_ignored=int(ignored.size),
        t_loss_ignored_first=float(reference.t[ignored[0]]) if ignored.size else None,
        problem_description=problem.describe(),
    )


# Output: the printed table, compare.csv and compare.png.


def _format_number(value, spec: str = ".3g", missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)


def _format_problem(description: dict) -> str:
    parts = []
    for name in ("d", "a", "b", "sigma0", "seed", "init_teacher_scale", "init_isotropic_exponent"):
        if name in description:
            value = description[name]
            parts.append(f"{name} = {value:g}" if isinstance(value, (int, float)) else f"{name} = {value}")
    return ", ".join(parts)


def format_comparison(comparison: Comparison) -> str:
    """Return the table of ``comparison`` that ``hierarchy compare`` prints, one line per truncation."""
    description = comparison.problem_description
    reference = comparison.reference
    lines = [
        f"problem:    {_format_problem(description)}",
        f"            rho_1 = {description['rho1']:.6g}, rho_2 = {description['rho2']:.6g}, "
        f"m_1(0) = {description['m1_initial']:.4g}, q_1(0) = {description['q1_initial']:.4g}, "
        f"L(0) = {comparison.initial_loss:.4g}",
        f"reference:  {comparison.reference_label}, {reference.status} ({reference.message}), "
        f"{comparison.reference_wall_seconds:.3g} s",
    ]
    if not comparison.reference_succeeded:
        lines.append("            the reference failed, so no truncation was compared")
        return "\n".join(lines)

    lines.append("errors:     maximum relative error against the reference over the output times each run reached")
    lines.append(
        f"            (m_1 in absolute value); 'L ok to t' is the last time up to which L stayed within "
        f"{LOSS_AGREEMENT:.0%} of the reference"
    )
    if comparison.loss_ignored:
        lines.append(
            f"            the L error ignores the {comparison.loss_ignored} output times from "
            f"t = {comparison.t_loss_ignored_first:.4g} on where the reference loss is below "
            f"{LOSS_FLOOR_FRACTION:g} L(0) = {comparison.loss_floor:.3g}"
        )
    lines.append("")

    header = (
        f"{'kind':<15} {'closure/rule':<12} {'K':>5} {'size':>5} {'err L':>10} {'err |m_1|':>10} {'err q_1':>10} "
        f"{'L ok to t':>10} {'m_1 final':>10} {'time s':>7}  status"
    )
    lines.append(header)
    lines.append("-" * len(header))
    for row in comparison.rows:
        line = (
            f"{row.kind:<15} {row.closure:<12} {_format_number(row.K, 'd'):>5} {_format_number(row.state_size, 'd'):>5} "
            f"{_format_number(row.loss_error, '.3e'):>10} {_format_number(row.m1_error, '.3e'):>10} "
            f"{_format_number(row.q1_error, '.3e'):>10} "
            f"{_format_number(row.t_loss_within_1_percent, '.4g', 'never' if not row.skipped else '-'):>10} "
            f"{_format_number(row.m1_final, '.4g'):>10} {row.wall_seconds:7.2f}  {row.status}"
        )
        if row.status != "SUCCESS":
            line += f": {row.message}"
        lines.append(line)
    return "\n".join(lines)


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        # repr is the shortest text that reads back to the same float.
        return repr(value)
    return str(value)


def write_comparison_csv(path, comparison: Comparison) -> Path:
    """Write one line per compared truncation, under the header ``CSV_COLUMNS``, to ``path``.

    Floats are written in full precision, ``nan`` for an error that could not
    be measured and an empty field for a time or size that does not exist.
    """
    path = Path(path)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in comparison.rows:
            values = (
                row.kind, row.closure, row.K, row.state_size, row.loss_error, row.m1_error, row.q1_error,
                row.t_loss_within_1_percent, row.t_last_output, row.t_stopped, row.m1_final, row.wall_seconds,
                row.status, row.message,
            )
            writer.writerow([_csv_value(value) for value in values])
    return path


def _error_axis_limits(rows: list) -> tuple:
    finite = [row.loss_error for row in rows if math.isfinite(row.loss_error) and row.loss_error > 0.0]
    if not finite:
        return ERROR_AXIS_TOP * 1e-6, ERROR_AXIS_TOP
    top = min(10.0 * max(finite), ERROR_AXIS_TOP)
    bottom = min(0.1 * min(finite), 0.01 * top)
    return bottom, top


# Each series keeps its colour in both panels: spectral modes first, then the closures.
SERIES_NAMES = ("spectral modes", *(f"{closure} closure" for closure in CLOSURES))


def _series_name(row) -> str:
    return "spectral modes" if row.kind == "spectral_modes" else f"{row.closure} closure"


def _series_color(name: str) -> str:
    return f"C{SERIES_NAMES.index(name) % 10}"


def _draw_error_panel(axes, rows: list) -> list:
    """Draw the maximum relative loss error against K, one line per closure and one for spectral modes.

    Returns the text labels of failed runs and of errors drawn at the top of
    the axis, for :func:`_separate_labels`.
    """
    bottom, top = _error_axis_limits(rows)
    labels = []
    series = {}
    for row in rows:
        if not row.skipped:
            series.setdefault(_series_name(row), []).append(row)

    failed_labelled = False
    for index, (name, members) in enumerate(series.items()):
        members = sorted(members, key=lambda row: row.K)
        K = np.array([row.K for row in members], dtype=np.float64) * SERIES_OFFSET**index
        errors = np.array([row.loss_error for row in members], dtype=np.float64)
        # Errors that could not be measured or lie above the axis are drawn at its top.
        at_top = ~np.isfinite(errors) | (errors > top)
        drawn = np.clip(np.where(at_top, top, errors), bottom, top)
        line = axes.plot(K, drawn, marker="o", label=name, color=_series_color(name))[0]

        for row, k, value, clipped in zip(members, K, drawn, at_top):
            if row.failed:
                axes.scatter(
                    [k], [value], marker="X", s=110, color=line.get_color(), edgecolors="black", zorder=3,
                    label=None if failed_labelled else "failed run (error before it stopped)",
                )
                failed_labelled = True
                labels.append(axes.annotate(
                    row.status, (k, value), textcoords="offset points", xytext=LABEL_OFFSET,
                    fontsize="xx-small", color=line.get_color(),
                ))
            elif clipped:
                axes.scatter([k], [value], marker="^", s=70, color=line.get_color(), zorder=3)
                labels.append(axes.annotate(
                    _format_number(row.loss_error, ".1e", "no data"), (k, value),
                    textcoords="offset points", xytext=LABEL_OFFSET, fontsize="xx-small",
                ))

    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_ylim(bottom, top * 1.5)
    axes.set_xlabel(f"K (spectral modes, or moment order; series shifted by factors of {SERIES_OFFSET:g})")
    axes.set_ylabel(f"max relative error of L\n(times with L_ref < {LOSS_FLOOR_FRACTION:g} L(0) ignored)")
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    # The labels must not move the axes, so that stacking them cannot change the layout they were measured in.
    for label in labels:
        label.set_in_layout(False)
    return labels


def _separate_labels(figure: Figure, axes, labels: list) -> None:
    """Shift labels vertically until no two of their boxes overlap.

    The figure is laid out first, so the boxes are measured where they will
    be drawn. A label that would cross the right edge of the axes moves to
    the left of its marker. Labels are placed from left to right and top to
    bottom. Each keeps its place when that is free, else it moves by whole
    label heights, alternately down and up, to the nearest free place,
    preferring places inside the axes. A placed label of at most twice the
    height blocks at most three of these places, so the ``3n + 1`` tried in
    each direction for ``n`` labels always include a free one.
    """
    if not labels:
        return
    figure.draw_without_rendering()
    renderer = figure.canvas.get_renderer()
    axes_box = axes.get_window_extent(renderer)
    gap = LABEL_GAP * figure.dpi / 72.0

    for label in labels:
        if label.get_window_extent(renderer).x1 > axes_box.x1:
            x_offset, y_offset = label.xyann
            label.xyann = (-x_offset, y_offset)
            label.set_horizontalalignment("right")

    boxes = {id(label): label.get_window_extent(renderer) for label in labels}
    order = sorted(labels, key=lambda label: (boxes[id(label)].x0, -boxes[id(label)].y1))
    placed = []
    for label in order:
        box = boxes[id(label)]
        step = box.height + gap
        candidates = [0.0]
        for multiple in range(1, 3 * len(labels) + 2):
            candidates += [-multiple * step, multiple * step]
        # The nearest free place inside the axes, else the nearest free place.
        shift = None
        first_free = None
        for candidate in candidates:
            moved = box.translated(0.0, candidate)
            if any(_boxes_overlap(moved, other, gap) for other in placed):
                continue
            if _box_inside(moved, axes_box):
                shift = candidate
                break
            if first_free is None:
                first_free = candidate
        if shift is None:
            shift = first_free

        x_offset, y_offset = label.xyann
        label.xyann = (x_offset, y_offset + shift * 72.0 / figure.dpi)
        placed.append(box.translated(0.0, shift))


def _boxes_overlap(first, second, gap: float) -> bool:
    """Check whether two display boxes come closer than ``gap`` pixels in both directions."""
    return (
        first.x0 < second.x1 + gap and second.x0 < first.x1 + gap
        and first.y0 < second.y1 + gap and second.y0 < first.y1 + gap
    )


def _box_inside(box, outer) -> bool:
    return outer.x0 <= box.x0 and box.x1 <= outer.x1 and outer.y0 <= box.y0 and box.y1 <= outer.y1


def representative_rows(rows: list) -> list:
    """Return the coarsest and finest spectral rules and, per closure, the row that went furthest with the smallest loss error."""
    spectral = [row for row in rows if row.kind == "spectral_modes" and not row.skipped]
    chosen = []
    if spectral:
        chosen.append(spectral[0])
        if len(spectral) > 1:
            chosen.append(spectral[-1])

    closures = []
    for row in rows:
        if row.kind == "moments" and row.closure not in closures:
            closures.append(row.closure)
    for closure in closures:
        candidates = [row for row in rows if row.kind == "moments" and row.closure == closure and not row.skipped]
        if not candidates:
            continue

        def rank(row):
            error = row.loss_error if math.isfinite(row.loss_error) else math.inf
            return (row.status == "SUCCESS", row.trajectory.t.size, -error)

        chosen.append(max(candidates, key=rank))
    return chosen


def _draw_loss_panel(axes, comparison: Comparison) -> None:
    """Draw the loss of the reference and of the representative truncations against time."""
    reference = comparison.reference

    def positive(values):
        # Non-positive values (rounding near L = 0) cannot be drawn on a log axis.
        return np.where(values > 0.0, values, np.nan)

    axes.plot(
        reference.t, positive(reference.loss), color="black", linewidth=2.5,
        label=f"reference: {comparison.reference_label}",
    )
    styles = ("--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1)), (0, (1, 1)))
    for index, row in enumerate(representative_rows(comparison.rows)):
        label = row.label if row.status == "SUCCESS" else f"{row.label} ({row.status})"
        axes.plot(
            row.trajectory.t, positive(row.trajectory.loss), linestyle=styles[index % len(styles)], label=label,
            color=_series_color(_series_name(row)),
        )

    axes.set_xscale("log")
    axes.set_yscale("log")
    reference_loss = reference.loss[np.isfinite(reference.loss) & (reference.loss > 0.0)]
    if reference_loss.size and comparison.loss_floor > 0.0:
        axes.set_ylim(0.1 * comparison.loss_floor, 10.0 * max(reference_loss.max(), comparison.initial_loss))
    axes.axhline(comparison.loss_floor, color="gray", linewidth=0.8, linestyle=":", label=f"{LOSS_FLOOR_FRACTION:g} L(0)")
    axes.set_xlabel("time t")
    axes.set_ylabel("loss L")
    axes.legend(loc="lower left", fontsize="x-small")


def draw_comparison(comparison: Comparison) -> Figure:
    """Draw the error against K and the loss curves of ``comparison`` into a new figure.

    The top panel has one line per closure and one for spectral modes.
    A failed run gets an ``X`` and its status as a label, at the error it
    reached before stopping, or at the top of the axis when that error is
    not finite or lies above ``ERROR_AXIS_TOP``. Labels that would overlap
    are stacked. The bottom panel shows the loss of the reference and of a
    few representative truncations.
    """
    figure = Figure(figsize=(8.0, 10.0), dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    error_axes, loss_axes = figure.subplots(2, 1)

    labels = []
    if comparison.rows:
        labels = _draw_error_panel(error_axes, comparison.rows)
    else:
        error_axes.text(0.5, 0.5, "no truncation was compared", transform=error_axes.transAxes, ha="center")
    _draw_loss_panel(loss_axes, comparison)

    title = f"truncation levels: {_format_problem(comparison.problem_description)}"
    title += f"\nreference: {comparison.reference_label}"
    if not comparison.reference_succeeded:
        title += "\n" + textwrap.fill(
            f"reference failed, {comparison.reference.status}: {comparison.reference.message}", width=90
        )
    figure.suptitle(title, fontsize="medium")
    _separate_labels(figure, error_axes, labels)
    return figure


def plot_comparison(path, comparison: Comparison) -> Path:
    """Draw ``comparison`` with :func:`draw_comparison` and save it as a PNG at ``path``."""
    path = Path(path)
    draw_comparison(comparison).savefig(path, dpi=FIGURE_DPI)
    return path


def write_comparison(directory, comparison: Comparison) -> dict:
    """Create ``directory`` if needed, write ``compare.csv`` and ``compare.png`` there and return their paths by name."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return {
        "csv": write_comparison_csv(directory / CSV_FILE, comparison),
        "plot": plot_comparison(directory / PLOT_FILE, comparison),
    }
