"""Result files of a run: ``trajectory.csv`` and ``summary.json``.

``trajectory.csv`` has a header line and one row per reached output time.
The first columns are always ``t,loss,m1,q1``, and extra columns (such as
``loss_tail_prediction``) may follow. Numbers are written with 17
significant digits, so they read back bit for bit. Non-finite values are
written as ``nan``, ``inf`` or ``-inf``.

``summary.json`` is strict JSON (non-finite numbers become ``null``) with
the package version and git revision, the configuration, the problem, how
the integration ended, its step statistics and the phase report.
"""

import json
from pathlib import Path

import numpy as np

from .config import RunConfig
from .json_values import to_json_value
from .phases import PhaseReport
from .provenance import git_revision, package_version
from .spectrum import Problem
from .trajectory import Trajectory

TRAJECTORY_FILE = "trajectory.csv"
SUMMARY_FILE = "summary.json"
TRAJECTORY_COLUMNS = ("t", "loss", "m1", "q1")


def write_trajectory_csv(path, trajectory: Trajectory, extra_columns: dict | None = None) -> Path:
    """Write ``t,loss,m1,q1`` and the ``extra_columns`` (name to array of length ``len(t)``) to ``path``."""
    path = Path(path)
    names = list(TRAJECTORY_COLUMNS)
    columns = [trajectory.t, trajectory.loss, trajectory.m1, trajectory.q1]
    for name, values in (extra_columns or {}).items():
        if name in names or "," in name or not name:
            raise ValueError(f"extra column name {name!r} is invalid: it must be new, non-empty and contain no comma")
        values = np.asarray(values, dtype=np.float64)
        if values.shape != trajectory.t.shape:
            raise ValueError(f"extra column {name!r} has shape {values.shape}, expected {trajectory.t.shape}")
        names.append(name)
        columns.append(values)

    table = np.column_stack([np.asarray(column, dtype=np.float64) for column in columns])
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        handle.write(",".join(names) + "\n")
        np.savetxt(handle, table, fmt="%.17g", delimiter=",")
    return path


def read_trajectory_csv(path) -> dict:
    """Read a ``trajectory.csv`` and return one float64 array per column, keyed by the header names.

    Raises ``ValueError`` when the header does not start with ``t,loss,m1,q1``
    or a row has the wrong number of fields.
    """
    path = Path(path)
    with path.open("r", encoding="utf-8") as handle:
        header = handle.readline().strip()
        names = header.split(",")
        if tuple(names[: len(TRAJECTORY_COLUMNS)]) != TRAJECTORY_COLUMNS:
            raise ValueError(f"{path}: the header {header!r} does not start with {','.join(TRAJECTORY_COLUMNS)}")
        rows = []
        for line_number, line in enumerate(handle, start=2):
            line = line.strip()
            if not line:
                continue
            fields = line.split(",")
            if len(fields) != len(names):
                raise ValueError(f"{path}, line {line_number}: expected {len(names)} fields, found {len(fields)}")
            rows.append([float(value) for value in fields])

    table = np.array(rows, dtype=np.float64).reshape(len(rows), len(names))
    return {name: table[:, index].copy() for index, name in enumerate(names)}


def build_summary(config: RunConfig, problem: Problem, trajectory: Trajectory, report: PhaseReport) -> dict:
    """Collect the run's configuration, problem, outcome and phase report as plain JSON types."""
    t_reached = float(trajectory.t[-1]) if trajectory.t.size else None
    summary = {
        "package_version": package_version(),
        "git_revision": git_revision(),
        "config": config.to_dict(),
        "problem": problem.describe(),
        "truncation": trajectory.truncation,
        "state_size": trajectory.state_size,
        "status": trajectory.status,
        "message": trajectory.message,
        "success": trajectory.success,
        "outputs_reached": int(trajectory.t.size),
        "t_last_output": t_reached,
        "t_requested_end": trajectory.t_requested_end,
        "stats": dict(trajectory.stats),
        "wall_seconds": trajectory.wall_seconds,
        "phases": report.to_dict(),
    }
    return to_json_value(summary)


def write_summary_json(path, summary: dict) -> Path:
    """Write ``summary`` as indented strict JSON to ``path``."""
    path = Path(path)
    text = json.dumps(to_json_value(summary), indent=2, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def write_run(
    directory,
    config: RunConfig,
    problem: Problem,
    trajectory: Trajectory,
    report: PhaseReport,
    tail_prediction=None,
    extra_summary: dict | None = None,
) -> dict:
    """Create ``directory`` if needed, write both result files there and return their paths by name.

    ``tail_prediction``, the phase-3 loss at every output time, becomes the
    ``loss_tail_prediction`` column of the CSV when given; ``extra_summary``
    entries are added to the JSON summary.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    extra_columns = {} if tail_prediction is None else {"loss_tail_prediction": tail_prediction}
    trajectory_path = write_trajectory_csv(directory / TRAJECTORY_FILE, trajectory, extra_columns)
    summary = build_summary(config, problem, trajectory, report)
    summary.update(extra_summary or {})
    summary_path = write_summary_json(directory / SUMMARY_FILE, summary)
    return {"trajectory": trajectory_path, "summary": summary_path}
