"""A measured spectrum against the pure power law fitted to it: same dimension, teacher and start.

For a problem on a measured spectrum, ``compare_with_fitted_power_law``
fits ``lam_i ≈ C i^(-a)`` over an index range, builds the problem on the
fitted eigenvalues ``C i^(-a)``, ``i = 1..d``, normalised as the measured
spectrum was (top eigenvalue 1 or unit trace), with the same teacher exponent,
``sigma0`` and seed, so the same random start), integrates both with the
same truncation and solver, and measures the escape time and the tail
exponent of each. ``plot_spectrum_comparison`` draws the spectrum with the
fit and both loss curves.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .data_spectra import PowerLawFit, fit_power_law
from .phases import detect_phases
from .pipeline import SolverOptions, TruncationOptions, integrate_problem
from .spectrum import EmpiricalSpec
from .trajectory import Trajectory

SPECTRUM_PLOT_FILE = "spectrum.png"


@dataclass
class SpectrumComparison:
    """The fit and, for the measured and the fitted spectrum, the trajectory and its phases."""

    fit: PowerLawFit
    measured: Trajectory
    fitted: Trajectory
    measured_escape_time: float | None
    fitted_escape_time: float | None
    measured_tail_exponent: float | None
    fitted_tail_exponent: float | None
    eigenvalues: np.ndarray

    def to_dict(self) -> dict:
        """Return the comparison as plain JSON types."""
        def plain(value):
            return None if value is None or not math.isfinite(value) else float(value)

        return {
            "fit": {
                "a": self.fit.a, "a_error": self.fit.a_error, "prefactor": self.fit.prefactor,
                "first": self.fit.first, "last": self.fit.last, "residual_rms": self.fit.residual_rms,
            },
            "measured_spectrum": {
                "escape_time": plain(self.measured_escape_time),
                "tail_exponent": plain(self.measured_tail_exponent),
                "status": self.measured.status,
            },
            "fitted_power_law": {
                "escape_time": plain(self.fitted_escape_time),
                "tail_exponent": plain(self.fitted_tail_exponent),
                "status": self.fitted.status,
            },
        }


def _tail_exponent(trajectory: Trajectory) -> float | None:
    detection = detect_phases(trajectory)
    return None if detection.power_law is None else detection.power_law.exponent


def compare_with_fitted_power_law(
    spec: EmpiricalSpec,
    model,
    truncation: TruncationOptions,
    solver: SolverOptions,
    measured: Trajectory,
) -> SpectrumComparison:
    """Fit a power law to ``spec``'s eigenvalues over ``[spec.fit_first, spec.fit_last]`` and integrate the fitted problem.

    ``measured`` is the trajectory already integrated on the measured spectrum.
    """
    eigenvalues = np.asarray(spec.eigenvalues, dtype=np.float64)
    d = eigenvalues.size
    last = d if spec.fit_last is None else int(spec.fit_last)
    fit = fit_power_law(eigenvalues, first=spec.fit_first, last=last)

    fitted_eigenvalues = fit.predict(np.arange(1, d + 1))
    normalisation = (spec.provenance or {}).get("normalisation", "none")
    if normalisation == "top":
        fitted_eigenvalues = fitted_eigenvalues / fitted_eigenvalues[0]
    elif normalisation == "trace":
        fitted_eigenvalues = fitted_eigenvalues / np.sum(fitted_eigenvalues)
    fitted_spec = EmpiricalSpec(
        eigenvalues=tuple(float(value) for value in fitted_eigenvalues),
        source=f"power law a = {fit.a:.3f} fitted to {spec.source}",
        b=spec.b, sigma0=spec.sigma0, seed=spec.seed, init_teacher_scale=spec.init_teacher_scale,
    )
    fitted = integrate_problem(fitted_spec.build(), model, truncation, solver)
    return SpectrumComparison(
        fit=fit,
        measured=measured,
        fitted=fitted,
        measured_escape_time=measured.event_times.get("escape"),
        fitted_escape_time=fitted.event_times.get("escape"),
        measured_tail_exponent=_tail_exponent(measured),
        fitted_tail_exponent=_tail_exponent(fitted),
        eigenvalues=eigenvalues,
    )


def format_spectrum_comparison(comparison: SpectrumComparison) -> list:
    """Return the lines of the printed comparison."""
    fit = comparison.fit

    def number(value):
        return "not found" if value is None else f"{value:.4g}"

    return [
        f"power-law fit: a = {fit.a:.4f} ± {fit.a_error:.4f} over eigenvalues {fit.first}..{fit.last} "
        "(standard error assuming independent residuals, a lower bound for a sample covariance)",
        f"                      {'measured':>12}  {'fitted law':>12}",
        f"escape time           {number(comparison.measured_escape_time):>12}  {number(comparison.fitted_escape_time):>12}",
        f"tail exponent         {number(comparison.measured_tail_exponent):>12}  {number(comparison.fitted_tail_exponent):>12}"
        "  (fitted over the longest power-law window of the loss after convergence)",
    ]


def plot_spectrum_comparison(path, comparison: SpectrumComparison, title: str) -> Path:
    """Draw the spectrum with the fitted law (log-log) and both loss curves, and save a PNG at ``path``."""
    figure = Figure(figsize=(10.0, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    spectrum_axes, loss_axes = figure.subplots(1, 2)

    index = np.arange(1, comparison.eigenvalues.size + 1)
    fit = comparison.fit
    spectrum_axes.loglog(index, comparison.eigenvalues, marker=".", linestyle="none", color="black", label="measured")
    spectrum_axes.loglog(index, fit.predict(index), color="tab:red", label=f"fit, a = {fit.a:.3f} ± {fit.a_error:.3f}")
    spectrum_axes.axvspan(fit.first, fit.last, color="tab:red", alpha=0.08, label="fit range")
    spectrum_axes.set_xlabel("index i")
    spectrum_axes.set_ylabel("eigenvalue")
    spectrum_axes.legend(fontsize="small")

    for trajectory, label, style in ((comparison.measured, "measured spectrum", "-"), (comparison.fitted, "fitted power law", "--")):
        positive = trajectory.loss > 0
        loss_axes.loglog(trajectory.t[positive], trajectory.loss[positive], linestyle=style, label=label)
    loss_axes.set_xlabel("time t")
    loss_axes.set_ylabel("loss L")
    loss_axes.legend(fontsize="small")
    figure.suptitle(title, fontsize="medium")

    path = Path(path)
    figure.savefig(path, dpi=110)
    return path
