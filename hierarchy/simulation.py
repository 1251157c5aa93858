"""Finite-sample training next to the exact gradient flow: the job behind ``hierarchy simulate``.

For every seed the model is trained (``gd`` or ``sgd``, :mod:`hierarchy.experiments`)
and the exact d-dimensional flow is integrated from the same initial point,
with outputs at the flow times ``t = eta * step`` of the recorded steps. The
result is written as ``simulation.csv`` and ``simulation.png``.

Comparisons use ``|m_1|`` because about half of the random starts converge
to ``-w*``. The training loss and the flow loss of one seed share the initial
point, so their per-seed relative difference removes most of the spread of
escape times between seeds. The mean of that difference over seeds, with its
standard error, is the measured bias of training against the flow.
"""

import logging
import math
import textwrap
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .experiments import TrainingResult, TrainingSettings, run_training, seed_mean, seed_stderr
from .integrators import solve
from .model import PhaseRetrieval
from .phases import find_escape_time
from .pipeline import SolverOptions, TruncationOptions, build_system
from .spectrum import PowerLawSpec
from .trajectory import Trajectory

logger = logging.getLogger(__name__)

CSV_FILE = "simulation.csv"
PLOT_FILE = "simulation.png"

# Above this multiple of rho_1 the |m_1| and q_1 panels switch to a symlog
# axis, so that a diverging seed stays readable.
_LINEAR_AXIS_LIMIT = 10.0


@dataclass
class SimulationResult:
    """Training statistics and the exact flow of every seed on the same flow times.

    Attributes
    ----------
    training : TrainingResult
        Recorded statistics of the training runs, shape ``(S, G)``.
    ode : tuple of Trajectory
        Exact flow of each seed, at the output times it reached.
    ode_loss, ode_m1, ode_q1 : arrays, shape (S, G)
        The flow on ``training.t``; ``nan`` past the end of a failed integration.
    solver : SolverOptions
        Settings of the integrations.
    files : dict
        Paths of the written files by name, empty when none were written.
    """

    training: TrainingResult
    ode: tuple
    ode_loss: np.ndarray
    ode_m1: np.ndarray
    ode_q1: np.ndarray
    solver: SolverOptions
    files: dict = field(default_factory=dict)

    @property
    def t(self) -> np.ndarray:
        return self.training.t

    @property
    def steps(self) -> np.ndarray:
        return self.training.steps

    @property
    def ode_succeeded(self) -> bool:
        return all(trajectory.success for trajectory in self.ode)

    @property
    def succeeded(self) -> bool:
        """True when every seed completed its training and every flow integration reached the last time."""
        return self.training.all_completed and self.ode_succeeded

    def ode_failures(self) -> list:
        """Return ``(seed, t_reached, trajectory)`` for each seed whose flow integration failed, earliest stop first.

        ``t_reached`` is the last output time the integration reached, 0 when
        it reached none.
        """
        failures = []
        for seed, trajectory in zip(self.training.seeds, self.ode):
            if not trajectory.success:
                t_reached = float(trajectory.t[-1]) if trajectory.t.size else 0.0
                failures.append((seed, t_reached, trajectory))
        return sorted(failures, key=lambda failure: failure[1])

    def ode_mean(self, name: str) -> np.ndarray:
        """Return the mean over seeds of the flow's ``loss``, ``m1``, ``abs_m1`` or ``q1``."""
        values = {
            "loss": self.ode_loss,
            "m1": self.ode_m1,
            "abs_m1": np.abs(self.ode_m1),
            "q1": self.ode_q1,
        }
        if name not in values:
            raise ValueError(f"flow statistic {name!r} is not available; choose one of {sorted(values)}")
        return seed_mean(values[name])

    def relative_loss_difference(self) -> tuple:
        """Return the mean over seeds of ``(loss - ode_loss) / ode_loss`` and its standard error, per flow time."""
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            difference = (self.training.loss - self.ode_loss) / self.ode_loss
        return seed_mean(difference), seed_stderr(difference)

    def escape_times(self) -> tuple:
        """Return the per-seed times at which ``|m_1| / rho_1`` first reaches 1/2, in training and in the flow.

        ``nan`` marks a seed that does not reach it on the recorded steps.
        """
        rho1 = self.training.rho1
        measured = [find_escape_time(self.t[1:], m1[1:], rho1) for m1 in self.training.m1]
        predicted = [find_escape_time(self.t[1:], m1[1:], rho1) for m1 in self.ode_m1]
        return (
            np.array([math.nan if value is None else value for value in measured]),
            np.array([math.nan if value is None else value for value in predicted]),
        )

    def describe(self) -> dict:
        """Return the settings, how each seed ended and the escape times, as plain values."""
        training = self.training
        measured, predicted = self.escape_times()
        spec = training.spec
        return {
            "problem": {"d": spec.d, "a": spec.a, "b": spec.b, "sigma0": spec.sigma0},
            "training": training.settings.to_dict(),
            "seeds": [
                {
                    "seed": seed,
                    "status": training.status[index].value,
                    "message": training.messages[index],
                    "wall_seconds": float(training.wall_seconds[index]),
                    "escape_time": float(measured[index]),
                    "ode_status": self.ode[index].status,
                    "ode_message": self.ode[index].message,
                    "ode_escape_time": float(predicted[index]),
                }
                for index, seed in enumerate(training.seeds)
            ],
            "files": {name: str(path) for name, path in self.files.items()},
        }


def integrate_seed_flows(spec: PowerLawSpec, seeds, t: np.ndarray, solver: SolverOptions) -> tuple:
    """Integrate the exact flow of each seed's initial point with outputs at the times ``t``.

    Returns the trajectories and the ``(S, len(t))`` arrays of loss, ``m_1``
    and ``q_1``, padded with ``nan`` after a failed integration.
    """
    model = PhaseRetrieval()
    trajectories = []
    columns = np.full((3, len(seeds), t.size), np.nan)
    for index, seed in enumerate(seeds):
        problem = replace(spec, seed=seed).build()
        system = build_system(problem, model, TruncationOptions(kind="exact"), solver)
        solution = solve(
            system,
            t,
            method=solver.method,
            rtol=solver.rtol,
            atol=solver.atol,
            max_steps=solver.max_steps,
            max_wall_seconds=solver.max_wall_seconds,
        )
        trajectory = Trajectory.from_solution(solution, model, problem.rho(1), problem.rho(2), system.name, system.size)
        if not trajectory.success:
            logger.warning("exact flow of seed %d: %s", seed, trajectory.message)
        reached = trajectory.t.size
        columns[0, index, :reached] = trajectory.loss
        columns[1, index, :reached] = trajectory.m1
        columns[2, index, :reached] = trajectory.q1
        trajectories.append(trajectory)
    return tuple(trajectories), columns[0], columns[1], columns[2]


def run_simulation(
    spec: PowerLawSpec,
    training: TrainingSettings,
    solver: SolverOptions | None = None,
    directory=None,
    *,
    workers: int | None = None,
    progress=None,
) -> SimulationResult:
    """Train every seed, integrate its exact flow on the same times, and write the result files.

    Parameters
    ----------
    spec : PowerLawSpec
        The problem, finite ``d``; each training seed replaces ``spec.seed``.
    training : TrainingSettings
        Method, step size, steps, seeds and held-out size.
    solver : SolverOptions or None
        Method, tolerances and limits of the flow integrations (default
        ``SolverOptions()``). Its output grid (``t_first``, ``t_end``,
        ``n_out``) is not used: the outputs are the flow times
        ``eta * step`` of the recorded steps.
    directory : path or None
        Where ``simulation.csv`` and ``simulation.png`` go; created if
        needed. ``None`` writes nothing.
    workers, progress
        Passed to :func:`hierarchy.experiments.run_training`.
    """
    solver = SolverOptions() if solver is None else solver
    if not isinstance(solver, SolverOptions):
        raise ValueError(f"solver must be a SolverOptions, got {type(solver).__name__}")
    trained = run_training(spec, training, workers=workers, progress=progress)
    logger.info("integrating the exact flow of %d seeds to t = %.4g", len(training.seeds), trained.t[-1])
    ode, ode_loss, ode_m1, ode_q1 = integrate_seed_flows(spec, training.seeds, trained.t, solver)
    result = SimulationResult(trained, ode, ode_loss, ode_m1, ode_q1, solver)
    if directory is not None:
        result.files = write_simulation(directory, result)
    return result


def write_simulation(directory, result: SimulationResult) -> dict:
    """Create ``directory`` if needed, write ``simulation.csv`` and ``simulation.png`` there and return their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return {
        "csv": write_simulation_csv(directory / CSV_FILE, result),
        "plot": plot_simulation(directory / PLOT_FILE, result),
    }


# simulation.csv


def simulation_columns(result: SimulationResult) -> dict:
    """Return the columns of ``simulation.csv`` by name, in file order.

    The columns are ``step`` and ``t``, then, for each of ``loss``, ``m1``,
    ``q1``, ``test_loss`` and (``gd`` only) ``train_loss``, one
    ``NAME_seedS`` column per seed ``S`` followed by ``NAME_mean`` and
    ``NAME_stderr`` over seeds. For ``m1`` the per-seed columns keep the
    sign, and the summary columns are ``abs_m1_mean`` and ``abs_m1_stderr``.
    Next come the flow's ``ode_loss``, ``ode_m1`` and ``ode_q1`` per seed,
    with ``ode_loss_mean``, ``ode_abs_m1_mean`` and ``ode_q1_mean``. The last
    two columns are the mean and standard error over seeds of the relative
    loss difference ``(loss - ode_loss) / ode_loss``.
    """
    training = result.training
    seeds = training.seeds
    columns = {"step": training.steps.astype(np.float64), "t": training.t}

    names = ["loss", "m1", "q1", "test_loss"]
    if training.settings.method == "gd":
        names.append("train_loss")
    for name in names:
        values = training.statistic(name)
        for index, seed in enumerate(seeds):
            columns[f"{name}_seed{seed}"] = values[index]
        summary_name = "abs_m1" if name == "m1" else name
        columns[f"{summary_name}_mean"] = training.mean(summary_name)
        columns[f"{summary_name}_stderr"] = training.stderr(summary_name)

    for name, values in (("loss", result.ode_loss), ("m1", result.ode_m1), ("q1", result.ode_q1)):
        for index, seed in enumerate(seeds):
            columns[f"ode_{name}_seed{seed}"] = values[index]
        summary_name = "abs_m1" if name == "m1" else name
        columns[f"ode_{summary_name}_mean"] = result.ode_mean(summary_name)

    mean, stderr = result.relative_loss_difference()
    columns["loss_relative_difference_mean"] = mean
    columns["loss_relative_difference_stderr"] = stderr
    return columns


def write_simulation_csv(path, result: SimulationResult) -> Path:
    """Write :func:`simulation_columns` to ``path`` with a header line and 17 significant digits."""
    path = Path(path)
    columns = simulation_columns(result)
    table = np.column_stack([np.asarray(values, dtype=np.float64) for values in columns.values()])
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write(",".join(columns) + "\n")
        np.savetxt(handle, table, fmt="%.17g", delimiter=",")
    return path


def read_simulation_csv(path) -> dict:
    """Read a ``simulation.csv`` and return one float64 array per column, keyed by the header names."""
    path = Path(path)
    with path.open("r", encoding="utf-8") as handle:
        names = handle.readline().strip().split(",")
        if names[:2] != ["step", "t"]:
            raise ValueError(f"{path}: the header does not start with step,t")
        table = np.loadtxt(handle, delimiter=",", ndmin=2)
    if table.shape[1] != len(names):
        raise ValueError(f"{path}: the header has {len(names)} columns but the rows have {table.shape[1]}")
    return {name: table[:, index].copy() for index, name in enumerate(names)}


# simulation.png


def _positive(values: np.ndarray) -> np.ndarray:
    return np.where(values > 0.0, values, np.nan)


def _seed_range(values: np.ndarray) -> tuple:
    """Return the minimum and maximum over seeds of the finite values, ``nan`` where there are none."""
    finite = np.isfinite(values)
    has_value = finite.any(axis=0)
    lower = np.where(finite, values, np.inf).min(axis=0)
    upper = np.where(finite, values, -np.inf).max(axis=0)
    return np.where(has_value, lower, np.nan), np.where(has_value, upper, np.nan)


def _draw_training_band(axes, t, values, label: str, color: str, positive_only: bool) -> None:
    mean = seed_mean(values)
    lower, upper = _seed_range(values)
    if positive_only:
        mean, lower, upper = _positive(mean), _positive(lower), _positive(upper)
    axes.fill_between(t, lower, upper, color=color, alpha=0.2, linewidth=0.0, label=f"{label}, range over seeds")
    axes.plot(t, mean, color=color, label=f"{label}, mean over seeds")


def _scale_statistic_axis(axes, values: np.ndarray, rho1: float) -> None:
    finite = values[np.isfinite(values)]
    if finite.size and np.max(np.abs(finite)) > _LINEAR_AXIS_LIMIT * rho1:
        axes.set_yscale("symlog", linthresh=rho1)


def _title(result: SimulationResult) -> str:
    training = result.training
    settings = training.settings
    spec = training.spec
    if settings.method == "gd":
        method = f"full-batch GD, n = {settings.n}"
    else:
        method = f"one-pass SGD, batch = {settings.batch_size}"
    title = (
        f"phase retrieval: d = {spec.d}, a = {spec.a:g}, b = {spec.b:g}, sigma0 = {spec.sigma0:g}\n"
        f"{method}, eta = {settings.eta:g}, {len(training.seeds)} seeds, t = eta * step"
    )
    notes = []
    diverged = sum(status.value == "DIVERGED" for status in training.status)
    if diverged:
        notes.append(f"{diverged} of {len(training.seeds)} seeds diverged; their curves stop there")
    timed_out = sum(status.value == "TIMED_OUT" for status in training.status)
    if timed_out:
        notes.append(f"{timed_out} of {len(training.seeds)} seeds reached the wall-clock limit; their curves stop there")
    failed = [trajectory for trajectory in result.ode if not trajectory.success]
    if failed:
        notes.append(f"the flow integration failed for {len(failed)} seeds: {failed[0].message}")
    for note in notes:
        title += "\n" + textwrap.fill(note, width=90)
    return title


def plot_simulation(path, result: SimulationResult) -> Path:
    """Draw the training statistics over the exact flow and save the figure as a PNG at ``path``.

    Three panels share a logarithmic time axis (step 0 is left out): the
    population loss and the held-out loss on log axes, ``|m_1|`` with
    ``rho_1``, and ``q_1`` with ``rho_1`` and ``rho_1 / 3``. Training curves
    are the mean over seeds, with the range over seeds shaded. The dashed
    flow curve is the mean over seeds of each seed's exact flow.
    """
    training = result.training
    rho1 = training.rho1
    t = result.t[1:]
    figure = Figure(figsize=(8.0, 10.0), layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, overlap_axes, norm_axes = figure.subplots(3, 1, sharex=True)

    _draw_training_band(loss_axes, t, training.loss[:, 1:], "population loss", "tab:blue", positive_only=True)
    if training.settings.test_size > 0:
        loss_axes.plot(t, _positive(training.mean("test_loss")[1:]), color="tab:orange", linestyle=":",
                       label="held-out loss, mean over seeds")
    loss_axes.plot(t, _positive(result.ode_mean("loss")[1:]), color="black", linestyle="--",
                   label="exact flow, mean over seeds")
    loss_axes.set_yscale("log")
    flow_loss = result.ode_loss[:, 1:]
    if np.isfinite(flow_loss).any():
        # A diverging seed would stretch the axis by hundreds of decades.
        loss_axes.set_ylim(top=10.0 * max(np.nanmax(flow_loss), np.nanmax(training.loss[:, 0])))
    loss_axes.set_ylabel("loss L")
    loss_axes.legend(loc="lower left", fontsize="small")

    _draw_training_band(overlap_axes, t, training.abs_m1[:, 1:], r"$|m_1|$", "tab:blue", positive_only=False)
    overlap_axes.plot(t, result.ode_mean("abs_m1")[1:], color="black", linestyle="--", label="exact flow")
    overlap_axes.axhline(rho1, color="gray", linewidth=0.8, label=r"$\rho_1$")
    overlap_axes.set_ylabel(r"overlap $|m_1| = |w^T \Sigma w^*|$")
    _scale_statistic_axis(overlap_axes, training.abs_m1, rho1)
    overlap_axes.legend(loc="upper left", fontsize="small")

    _draw_training_band(norm_axes, t, training.q1[:, 1:], r"$q_1$", "tab:blue", positive_only=False)
    norm_axes.plot(t, result.ode_mean("q1")[1:], color="black", linestyle="--", label="exact flow")
    norm_axes.axhline(rho1, color="gray", linewidth=0.8, label=r"$\rho_1$")
    norm_axes.axhline(rho1 / 3.0, color="gray", linewidth=0.8, linestyle=":", label=r"$\rho_1 / 3$")
    norm_axes.set_ylabel(r"norm $q_1 = w^T \Sigma w$")
    _scale_statistic_axis(norm_axes, training.q1, rho1)
    norm_axes.legend(loc="upper left", fontsize="small")

    norm_axes.set_xscale("log")
    norm_axes.set_xlabel("time t = eta * step")
    figure.suptitle(_title(result), fontsize="medium")

    path = Path(path)
    figure.savefig(path, dpi=120)
    return path
