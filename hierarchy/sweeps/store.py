"""Results store of a sweep: one Zarr dataset per point, a manifest and a summary table.

A sweep directory contains::

    sweep.json           the sweep: source, base directory, mode, swept parameters, [base]
                         tables, and the index, id and swept values of every point; written
                         when a sweep starts
    summary.csv          one row per stored point, rewritten after each point
    points/<id>.zarr/    one dataset per stored point (Zarr format 2, consolidated metadata)
    .sweep.lock          locked while a sweep writes to the directory

Everything is readable without this package: ``xarray.open_zarr(path)`` or
``zarr.open_group(path, mode="r")`` for a point, ``json`` for the manifest
and any CSV reader for the summary. A point dataset contains

* the coordinate ``t`` (output times reached) and the variables ``loss``,
  ``m1``, ``q1`` and ``loss_tail_prediction`` on it. The phase-3 prediction
  exists for phase retrieval only, so for other models
  ``loss_tail_prediction`` is NaN at every time and its ``comment``
  attribute says why;
* the attributes (Zarr's JSON attributes, ``null`` for a time never
  reached or a non-finite number)

  - ``point_id``, ``point_index``, ``parameters`` (the swept values) and
    ``config`` (the canonical JSON whose SHA-256 is the point id);
  - ``status``, ``message``, ``success``, ``truncation``, ``escape_time``,
    ``convergence_time``, ``final_loss``, ``t_last_output``,
    ``t_requested_end``, ``state_size``, ``wall_seconds`` (integration),
    ``run_seconds`` (the whole point in its worker), ``stats`` (step
    statistics of the integrator), ``event_times`` and ``phase_report``
    (predictions and the phase-3 table of :class:`hierarchy.phases.PhaseReport`);
  - ``versions``, ``git_revision`` and ``created`` (UTC, ISO 8601).

A point whose computation raised has ``status = "ERROR"``, an empty ``t``,
``null`` results and the attributes ``error_type``, ``error_message`` and
``error_traceback``. Integration failures such as ``DIVERGED`` are results,
not errors: they keep the status of the integrator and the part of the
trajectory that was reached.

Each point is written under a hidden temporary name in ``points/`` and then
renamed, so ``points/<id>.zarr`` is either absent or complete. A killed
writer can leave hidden temporaries behind, and the next sweep on the
directory removes them. A failed write raises :class:`SweepStoreError`,
naming the path, after removing its temporary file.

A directory contains one sweep: :meth:`SweepStore.check_manifest` rejects a
sweep whose parameters or point ids differ from those in ``sweep.json``.
"""

import csv
import datetime
import errno
import importlib.metadata
import io
import json
import logging
import math
import os
import platform
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from .grid import SweepPoint, SweepSpec, format_value, json_safe

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no fcntl
    fcntl = None

logger = logging.getLogger(__name__)

MANIFEST_FILE = "sweep.json"
SUMMARY_FILE = "summary.csv"
POINTS_DIRECTORY = "points"
LOCK_FILE = ".sweep.lock"
POINT_SUFFIX = ".zarr"
POINT_FORMAT = "hierarchy-sweep-point"
SWEEP_FORMAT = "hierarchy-sweep"
FORMAT_VERSION = 1
STATUS_ERROR = "ERROR"
# Zarr format 2, which zarr-python 2 reads too (it cannot read format 3).
ZARR_FORMAT = 2

# Libraries whose versions each point records: those that compute a point
# (reported by the worker) and those that write the store (this process).
COMPUTE_LIBRARIES = ("hierarchy", "numpy", "scipy", "numba", "sympy")
STORE_LIBRARIES = ("dask", "distributed", "xarray", "zarr", "numcodecs")

SUMMARY_QUANTITIES = ("status", "escape_time", "convergence_time", "final_loss", "run_seconds", "message")
_TRAJECTORY_VARIABLES = {
    "loss": "loss F(q_1, m_1; rho_1)",
    "m1": "overlap m_1 = w^T Sigma w*",
    "q1": "norm q_1 = w^T Sigma w",
    "loss_tail_prediction": "phase-3 prediction rho_1 sum_i lam_i w*_i^2 exp(-4 rho_1 lam_i t)",
}
TAIL_PREDICTION_MISSING = "not available: the phase-3 prediction is derived for phase retrieval only"
# Attributes of a computed point that an ERROR point sets to null.
_SUMMARY_ATTRIBUTES = (
    "truncation", "escape_time", "convergence_time", "final_loss", "t_last_output", "t_requested_end",
    "state_size", "wall_seconds", "run_seconds", "stats", "event_times", "phase_report",
)


class SweepStoreError(RuntimeError):
    """A sweep directory that cannot be locked, read or written, or that contains a different sweep."""


@dataclass
class PointRecord:
    """Summary of one stored point, one row of ``summary.csv``.

    ``reused`` is true when the point was already complete in the store
    and was not computed again.
    """

    index: int
    point_id: str
    values: dict
    status: str
    message: str = ""
    escape_time: float | None = None
    convergence_time: float | None = None
    final_loss: float | None = None
    run_seconds: float | None = None
    error_type: str | None = None
    reused: bool = False

    @property
    def failed(self) -> bool:
        """Whether computing the point raised, as opposed to an integration that ended with a status."""
        return self.status == STATUS_ERROR


@dataclass
class StoreMetadata:
    """Provenance written into every point: the git revision and the versions of the store libraries."""

    git_revision: str
    versions: dict = field(default_factory=dict)


def library_versions(names) -> dict:
    """Return the installed version of each distribution in ``names``, ``"not installed"`` when missing."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["python"] = platform.python_version()
    return versions


def _finite_or_none(value) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def build_point_dataset(point: SweepPoint, result: dict, metadata: StoreMetadata) -> xr.Dataset:
    """Build the dataset of one point from the plain result of :func:`hierarchy.sweeps.runner.compute_point`.

    ``result`` has either the trajectory and phase keys of a computed point
    or an ``error`` dict with ``type``, ``message`` and ``traceback``.
    """
    versions = dict(result.get("versions") or {})
    versions.update(metadata.versions)
    attrs = {
        "format": POINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "point_id": point.point_id,
        "point_index": point.index,
        "parameters": json_safe(point.values),
        "config": point.config_json,
    }

    variable_attributes = {name: {"long_name": long_name} for name, long_name in _TRAJECTORY_VARIABLES.items()}
    error = result.get("error")
    if error is not None:
        t = np.zeros(0, dtype=np.float64)
        arrays = {name: t for name in _TRAJECTORY_VARIABLES}
        attrs.update(
            status=STATUS_ERROR,
            message=f"{error['type']}: {error['message']}",
            success=False,
            error_type=error["type"],
            error_message=error["message"],
            error_traceback=error.get("traceback") or "",
        )
        attrs.update({name: None for name in _SUMMARY_ATTRIBUTES})
        attrs["run_seconds"] = _finite_or_none(result.get("run_seconds"))
    else:
        t = np.asarray(result["t"], dtype=np.float64)
        arrays = {name: np.asarray(result[name], dtype=np.float64) for name in ("loss", "m1", "q1")}
        if result["loss_tail_prediction"] is None:
            # Models other than phase retrieval have no prediction: NaN keeps the variable on t for every point.
            arrays["loss_tail_prediction"] = np.full(t.shape, np.nan)
            variable_attributes["loss_tail_prediction"]["comment"] = TAIL_PREDICTION_MISSING
        else:
            arrays["loss_tail_prediction"] = np.asarray(result["loss_tail_prediction"], dtype=np.float64)
        phases = result["phases"]
        loss = arrays["loss"]
        attrs.update(
            status=result["status"],
            message=result["message"],
            success=result["status"] == "SUCCESS",
            truncation=result["truncation"],
            escape_time=_finite_or_none(phases.get("escape_time")),
            convergence_time=_finite_or_none(phases.get("convergence_time")),
            final_loss=_finite_or_none(loss[-1]) if loss.size else None,
            t_last_output=_finite_or_none(t[-1]) if t.size else None,
            t_requested_end=_finite_or_none(result["t_requested_end"]),
            state_size=int(result["state_size"]),
            wall_seconds=_finite_or_none(result["wall_seconds"]),
            run_seconds=_finite_or_none(result["run_seconds"]),
            stats={name: int(value) for name, value in result["stats"].items()},
            event_times={name: _finite_or_none(value) for name, value in result["event_times"].items()},
            phase_report=phases,
        )
    attrs.update(versions=versions, git_revision=metadata.git_revision, created=_utc_now())

    data_vars = {name: ("t", values, variable_attributes[name]) for name, values in arrays.items()}
    return xr.Dataset(data_vars, coords={"t": ("t", t, {"long_name": "output time"})}, attrs=attrs)


def _record_from_attributes(point: SweepPoint, attrs: dict) -> PointRecord:
    return PointRecord(
        index=point.index,
        point_id=point.point_id,
        values=dict(point.values),
        status=str(attrs.get("status", "")),
        message=str(attrs.get("message", "")),
        escape_time=attrs.get("escape_time"),
        convergence_time=attrs.get("convergence_time"),
        final_loss=attrs.get("final_loss"),
        run_seconds=attrs.get("run_seconds"),
        error_type=attrs.get("error_type"),
    )


def _csv_cell(value) -> str:
    """Write ``None`` as an empty cell and a float with the 17 digits that read back bit for bit."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


class SweepStore:
    """The results of a sweep in one directory; see the module documentation for the layout.

    Use it as a context manager: entering creates the directory, takes an
    exclusive lock on ``.sweep.lock`` (released when the process ends, even
    when it is killed) and removes temporaries of killed writers.
    """

    def __init__(self, directory):
        self.directory = Path(directory)
        self.points_directory = self.directory / POINTS_DIRECTORY
        self._lock_handle = None

    def __enter__(self) -> "SweepStore":
        try:
            self.points_directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SweepStoreError(f"failed to create the sweep directory {self.points_directory}: {error}") from None
        self._lock()
        self._remove_temporaries()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    def _lock(self) -> None:
        try:
            handle = (self.directory / LOCK_FILE).open("a")
        except OSError as error:
            raise SweepStoreError(f"failed to open the lock file in {self.directory}: {error}") from None
        if fcntl is None:
            # NOTE: without fcntl (Windows) two sweeps on one directory are not detected.
            self._lock_handle = handle
            return
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.close()
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise SweepStoreError(
                    f"another sweep is writing to {self.directory}; wait for it to finish or choose another directory"
                ) from None
            raise SweepStoreError(f"failed to lock {handle.name}: {error}") from None
        self._lock_handle = handle

    def _remove_temporaries(self) -> None:
        leftovers = list(self.points_directory.glob(".*"))
        for name in (MANIFEST_FILE, SUMMARY_FILE):
            leftovers.extend(self.directory.glob(f".{name}.*.tmp"))
        for path in leftovers:
            logger.info("removing %s, left behind by an interrupted write", path)
            _remove_path(path)

    def check_manifest(self, spec: SweepSpec) -> None:
        """Raise :class:`SweepStoreError` unless the directory is new or contains the same sweep as ``spec``.

        Two sweeps are the same when they list the same parameter paths and
        the same point ids in the same order. A rerun therefore resumes from
        any working directory, while a changed value, parameter or order of
        points is rejected instead of mixing two sweeps in one directory.
        """
        stored = self._read_manifest()
        if stored is None:
            return
        stored_parameters = stored.get("parameters")
        stored_points = stored.get("points")
        stored_ids = []
        if isinstance(stored_points, list):
            stored_ids = [item.get("point_id") for item in stored_points if isinstance(item, dict)]
        if stored_parameters == list(spec.parameters) and stored_ids == [point.point_id for point in spec.points]:
            return

        requested = spec.source or "the requested sweep"
        if stored_parameters != list(spec.parameters):
            stored_names = ", ".join(map(str, stored_parameters)) if isinstance(stored_parameters, list) else "nothing"
            difference = f"it sweeps {stored_names} and {requested} sweeps {', '.join(spec.parameters)}"
        else:
            known = set(stored_ids)
            new_count = sum(point.point_id not in known for point in spec.points)
            difference = (
                f"the stored points differ from those of {requested} ({len(stored_ids)} stored, "
                f"{len(spec.points)} requested, {new_count} requested points not stored)"
            )
        raise SweepStoreError(
            f"{self.directory} contains a different sweep, from {stored.get('source') or 'an unnamed sweep'}: "
            f"{difference}; choose another output directory (--out) or remove {self.directory}"
        )

    def _read_manifest(self) -> dict | None:
        """Return the parsed ``sweep.json``, or ``None`` when there is none."""
        path = self.directory / MANIFEST_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as error:
            raise SweepStoreError(f"failed to read the sweep manifest {path}: {error.strerror or error}") from None
        except UnicodeDecodeError as error:
            raise SweepStoreError(f"failed to read the sweep manifest {path}: it is not UTF-8 ({error.reason})") from None

        restart = f"choose another output directory (--out) or remove {self.directory}"
        try:
            manifest = json.loads(text)
        except json.JSONDecodeError as error:
            raise SweepStoreError(f"{path} is not a sweep manifest (invalid JSON: {error}); {restart}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != SWEEP_FORMAT:
            raise SweepStoreError(f"{path} is not a sweep manifest (its format is not {SWEEP_FORMAT!r}); {restart}")
        return manifest

    def point_path(self, point_id: str) -> Path:
        """Return the path of the dataset of the point ``point_id``."""
        return self.points_directory / f"{point_id}{POINT_SUFFIX}"

    def read_record(self, point: SweepPoint) -> PointRecord | None:
        """Return the summary of ``point`` from its stored dataset, or ``None`` when it is not stored.

        A dataset that cannot be read, or whose configuration differs from
        the point's, counts as not stored (and is logged), so the point is
        computed again.
        """
        path = self.point_path(point.point_id)
        if not path.exists():
            return None
        try:
            group = zarr.open_group(str(path), mode="r")
            attrs = group.attrs.asdict()
        except Exception as error:  # noqa: BLE001 - any unreadable dataset is recomputed, whatever the reason
            logger.warning("point %d (%s): stored dataset %s is unreadable and will be recomputed: %s",
                           point.index, point.point_id, path, error)
            return None
        if attrs.get("format") != POINT_FORMAT or attrs.get("config") != point.config_json:
            logger.warning("point %d (%s): stored dataset %s does not match the point and will be recomputed",
                           point.index, point.point_id, path)
            return None
        record = _record_from_attributes(point, attrs)
        record.reused = True
        return record

    def write_point(self, point: SweepPoint, result: dict, metadata: StoreMetadata) -> PointRecord:
        """Write the dataset of ``point`` atomically and return its summary.

        The dataset is written under a hidden name in ``points/`` and renamed
        into place. A dataset already stored for the point (an earlier error)
        is replaced.

        NOTE: nothing is fsynced, so the rename protects against a killed
        process but not against a crash of the operating system.
        """
        dataset = build_point_dataset(point, result, metadata)
        final_path = self.point_path(point.point_id)
        temporary_path = self.points_directory / f".{point.point_id}{POINT_SUFFIX}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            dataset.to_zarr(str(temporary_path), mode="w-", zarr_format=ZARR_FORMAT, consolidated=True)
            if final_path.exists():
                retired_path = self.points_directory / f".{point.point_id}{POINT_SUFFIX}.old-{uuid.uuid4().hex[:12]}"
                os.rename(final_path, retired_path)
                os.rename(temporary_path, final_path)
                shutil.rmtree(retired_path, ignore_errors=True)
            else:
                os.rename(temporary_path, final_path)
        except OSError as error:
            _remove_path(temporary_path)
            raise SweepStoreError(
                f"failed to write the dataset of point {point.index} to {final_path}: {error.strerror or error}"
            ) from None
        except BaseException:
            _remove_path(temporary_path)
            raise

        return _record_from_attributes(point, dataset.attrs)

    def write_manifest(self, spec: SweepSpec, metadata: StoreMetadata) -> Path:
        """Write ``sweep.json`` atomically: the sweep, its points, the git revision and the versions."""
        manifest = {"format": SWEEP_FORMAT, "format_version": FORMAT_VERSION, **spec.to_dict()}
        manifest.update(git_revision=metadata.git_revision, versions=metadata.versions, created=_utc_now())
        text = json.dumps(manifest, indent=2, allow_nan=False) + "\n"
        return self._replace_file(MANIFEST_FILE, text)

    def write_summary(self, spec: SweepSpec, records) -> Path:
        """Rewrite ``summary.csv`` atomically with one row per record, in point order.

        Columns: ``point`` (index), ``point_id``, one column per swept
        parameter path, then ``status``, ``escape_time``,
        ``convergence_time``, ``final_loss``, ``run_seconds`` (seconds) and
        ``message``. A time that was not reached is an empty cell.
        """
        columns = ["point", "point_id", *spec.parameters, *SUMMARY_QUANTITIES]
        rows = []
        for record in sorted(records, key=lambda item: item.index):
            row = {"point": record.index, "point_id": record.point_id}
            for path in spec.parameters:
                value = record.values[path]
                row[path] = value if isinstance(value, str) else format_value(value)
            for name in SUMMARY_QUANTITIES:
                row[name] = _csv_cell(getattr(record, name))
            rows.append(row)

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        # NOTE: the whole table is rewritten after every point, so a sweep of n points writes O(n^2) rows in total.
        return self._replace_file(SUMMARY_FILE, buffer.getvalue())

    def _replace_file(self, name: str, text: str) -> Path:
        """Write ``text`` to a hidden temporary file in the directory and rename it to ``name``.

        Raises :class:`SweepStoreError` naming the file when writing or
        renaming fails, for instance when ``name`` is a directory, and
        removes the temporary file first.
        """
        final_path = self.directory / name
        temporary_path = None
        try:
            with tempfile.NamedTemporaryFile(
                "w", dir=self.directory, prefix=f".{name}.", suffix=".tmp", delete=False, newline="", encoding="utf-8"
            ) as handle:
                temporary_path = Path(handle.name)
                handle.write(text)
            # Temporary files are private (0600); the result is as readable as the other output files.
            os.chmod(temporary_path, 0o644)
            os.replace(temporary_path, final_path)
        except OSError as error:
            _remove_path(temporary_path)
            raise SweepStoreError(f"failed to write {final_path}: {error.strerror or error}") from None
        except BaseException:
            _remove_path(temporary_path)
            raise
        return final_path


def _remove_path(path: Path | None) -> None:
    """Remove a file or directory tree if it exists, logging a failure instead of raising it."""
    if path is None or not os.path.lexists(path):
        return
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError as error:
        logger.warning("failed to remove the temporary %s: %s", path, error)
