"""Figure of one run: loss, ``m_1`` and ``q_1`` against time, with the phase times marked.

The figure is drawn on a ``matplotlib.figure.Figure`` with the Agg canvas
directly, so no display and no global ``pyplot`` state are involved.
"""

import textwrap
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .phases import PhaseReport
from .trajectory import Trajectory

PLOT_FILE = "trajectory.png"
# Above this multiple of rho_1 the m_1 and q_1 panels switch to a symlog axis,
# so that a diverging run stays readable.
_LINEAR_AXIS_LIMIT = 10.0


def _format_parameters(problem_description: dict) -> str:
    names = ("d", "a", "b", "sigma0", "seed", "init_teacher_scale")
    parts = []
    for name in names:
        if name in problem_description:
            value = problem_description[name]
            parts.append(f"{name} = {value:g}" if isinstance(value, (int, float)) else f"{name} = {value}")
    return ", ".join(parts)


def _mark_phase_times(axes, report: PhaseReport, with_labels: bool) -> None:
    if report.escape_time is not None:
        axes.axvline(
            report.escape_time, color="tab:red", linestyle="--", linewidth=1.0,
            label=f"escape, t = {report.escape_time:.3g}" if with_labels else None,
        )
    if report.convergence_time is not None:
        axes.axvline(
            report.convergence_time, color="tab:green", linestyle="--", linewidth=1.0,
            label=f"convergence, t = {report.convergence_time:.3g}" if with_labels else None,
        )


def _scale_statistic_axis(axes, values: np.ndarray, rho1: float) -> None:
    finite = values[np.isfinite(values)]
    if finite.size and np.max(np.abs(finite)) > _LINEAR_AXIS_LIMIT * abs(rho1):
        axes.set_yscale("symlog", linthresh=abs(rho1))
        # On a side that the values do not pass beyond -rho_1 or rho_1, the axis
        # stops at 1.5 rho_1, so the empty half of the symlog axis stays small.
        if np.min(finite) >= -abs(rho1):
            axes.set_ylim(bottom=-1.5 * abs(rho1))
        if np.max(finite) <= abs(rho1):
            axes.set_ylim(top=1.5 * abs(rho1))


def _draw_loss_panel(axes, trajectory: Trajectory, report: PhaseReport, tail_prediction) -> None:
    t = trajectory.t
    # Non-positive values (rounding near L = 0) cannot be drawn on a log axis.
    drawn = [np.where(trajectory.loss > 0.0, trajectory.loss, np.nan)]
    axes.plot(t, drawn[0], color="black", label="L(t), integrated")
    if tail_prediction is not None:
        predicted = np.asarray(tail_prediction, dtype=np.float64)
        drawn.append(np.where(predicted > 0.0, predicted, np.nan))
        axes.plot(
            t, drawn[1], color="tab:blue", linestyle=":",
            label=r"phase 3: $\rho_1 \sum_i \lambda_i w_i^{*2} e^{-4 \rho_1 \lambda_i t}$",
        )
    axes.set_ylabel("loss L")

    measured = drawn[0][np.isfinite(drawn[0])]
    if measured.size:
        top = measured.max()
        for values in drawn[1:]:
            top = max(top, np.nanmax(values, initial=0.0))
        axes.set_yscale("log")
        # The prediction keeps decaying far below rounding level, so the axis
        # stops a decade under the smallest positive integrated loss.
        axes.set_ylim(0.1 * measured.min(), 10.0 * top)
    _mark_phase_times(axes, report, with_labels=True)
    axes.legend(loc="lower left", fontsize="small")


def _draw_statistic_panel(axes, t, values, references, ylabel: str, label: str, report: PhaseReport, rho1: float):
    axes.plot(t, values, color="black", label=label)
    for value, style, reference_label in references:
        axes.axhline(value, color="gray", linewidth=0.8, linestyle=style, label=reference_label)
    axes.set_ylabel(ylabel)
    _scale_statistic_axis(axes, values, rho1)
    _mark_phase_times(axes, report, with_labels=False)
    axes.legend(loc="upper left", fontsize="small")


def plot_run(
    path,
    trajectory: Trajectory,
    report: PhaseReport,
    problem_description: dict,
    tail_prediction=None,
    model_name: str = "phase retrieval",
) -> Path:
    """Draw the three panels of a run and save them as a PNG at ``path``.

    Panels share the logarithmic time axis: ``L(t)`` on log-log axes with
    the phase-3 prediction ``tail_prediction`` (optional, one value per
    output time), then ``m_1`` with ``±rho_1``, then ``q_1`` with ``rho_1``
    and, for phase retrieval, ``rho_1 / 3``. Dashed vertical lines mark the
    escape and convergence times of ``report``. The title gives the model
    ``model_name``, the problem parameters and the
    truncation, and the status and message of a failed run. A run that
    reached no output time gives empty panels with a note.
    """
    t = trajectory.t
    rho1 = trajectory.rho1
    figure = Figure(figsize=(8.0, 10.0), layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, overlap_axes, norm_axes = figure.subplots(3, 1, sharex=True)

    _draw_loss_panel(loss_axes, trajectory, report, tail_prediction)
    _draw_statistic_panel(
        overlap_axes, t, trajectory.m1, [(rho1, "-", r"$\pm\rho_1$"), (-rho1, "-", None)],
        r"overlap $m_1 = w^T \Sigma w^*$", r"$m_1$", report, rho1,
    )
    # alpha = rho_1 - 3 q_1 vanishes at rho_1 / 3 for phase retrieval only.
    norm_references = [(rho1, "-", r"$\rho_1$")]
    if model_name == "phase retrieval":
        norm_references.append((rho1 / 3.0, ":", r"$\rho_1 / 3$"))
    _draw_statistic_panel(
        norm_axes, t, trajectory.q1, norm_references, r"norm $q_1 = w^T \Sigma w$", r"$q_1$", report, rho1,
    )
    norm_axes.set_xlabel("time t")
    if t.size and np.all(t > 0.0):
        norm_axes.set_xscale("log")
    else:
        loss_axes.text(0.5, 0.5, "no output time was reached", transform=loss_axes.transAxes, ha="center")

    title = f"{model_name}: {_format_parameters(problem_description)}\n{trajectory.truncation}"
    if not trajectory.success:
        failure = f"integration failed, {trajectory.status}: {trajectory.message}"
        title += "\n" + textwrap.fill(failure, width=90)
    figure.suptitle(title, fontsize="medium")

    path = Path(path)
    figure.savefig(path, dpi=120)
    return path
