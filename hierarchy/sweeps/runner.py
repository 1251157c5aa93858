"""Run the points of a sweep on Dask, one task per point, and store each result as it arrives.

:func:`run_sweep` starts a ``distributed.LocalCluster`` on 127.0.0.1 (one
thread per worker process, no dashboard), or connects to an existing
scheduler when given its address. Without a dashboard the local scheduler
still serves Dask's health and metrics HTTP routes, also on 127.0.0.1 (port
8787, or a free port when that one is taken). Each point is one task that receives the
point's configuration as a plain dict, builds the problem inside the worker
and runs the pipeline (:func:`compute_point`). This process writes every
result to the store (:mod:`hierarchy.sweeps.store`) as soon as it arrives.

A point whose computation raises is stored with ``status = "ERROR"`` and the
sweep goes on. Running the same sweep again on the same directory skips the
points already stored without error, so a killed sweep finishes where it
stopped, and computes the ``ERROR`` points again. A directory that contains a
different sweep is rejected before anything runs.
"""

import contextlib
import functools
import logging
import os
import sys
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from distributed import Client, LocalCluster, as_completed
from tqdm import tqdm

from ..config import parse_config
from ..phases import analyze_phases, predict_tail_loss
from ..pipeline import integrate_problem
from ..provenance import git_revision
from .grid import SweepSpec, load_sweep, parse_sweep
from .store import (
    COMPUTE_LIBRARIES,
    STORE_LIBRARIES,
    PointRecord,
    StoreMetadata,
    SweepStore,
    library_versions,
)

logger = logging.getLogger(__name__)

# Default seconds to wait for an existing scheduler to accept the connection and to report a worker.
CONNECT_TIMEOUT_SECONDS = 30.0
LOOPBACK_HOST = "127.0.0.1"


def max_local_workers() -> int:
    """Return the maximum number of worker processes of a local cluster: the CPUs this process may run on.

    Points are CPU-bound and each worker runs one thread, so more workers
    than CPUs only add processes and memory.
    """
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def default_local_workers() -> int:
    """Return the default number of worker processes of a local cluster: 2, or 1 on a single CPU."""
    return min(2, max_local_workers())


class SweepRunError(RuntimeError):
    """A sweep that cannot start: no scheduler at the address, or a scheduler without workers."""


@dataclass
class SweepResult:
    """Outcome of :func:`run_sweep`.

    Attributes
    ----------
    directory : Path
        The sweep directory.
    spec : SweepSpec
        The expanded sweep.
    records : list of PointRecord
        One record per point, in point order.
    summary_path : Path
        ``summary.csv`` in ``directory``.
    computed, reused : int
        Points computed by this call, and points found complete in the store.
    """

    directory: Path
    spec: SweepSpec
    records: list
    summary_path: Path
    computed: int
    reused: int

    @property
    def failed(self) -> list:
        """Records of the points whose computation raised (``status = "ERROR"``)."""
        return [record for record in self.records if record.failed]

    @property
    def unsuccessful(self) -> list:
        """Records of the points that did not reach ``t_end``: integration failures such as ``DIVERGED``, and errors."""
        return [record for record in self.records if record.status != "SUCCESS"]

    @property
    def ok(self) -> bool:
        """Whether every point reached ``t_end`` (status ``SUCCESS``)."""
        return not self.unsuccessful


@functools.lru_cache(maxsize=1)
def _compute_library_versions() -> dict:
    return library_versions(COMPUTE_LIBRARIES)


def compute_point(document: dict) -> dict:
    """Build, integrate and analyze one point of a sweep; this is the Dask task.

    ``document`` is the point's run configuration as parsed TOML (plain
    dicts, lists, numbers and strings). Returns plain data: the trajectory
    arrays, the integrator's status, message and step statistics, the phase
    report as a dict, the versions of the libraries that computed it and
    ``run_seconds``. Any exception becomes an ``error`` entry with its type,
    message and traceback text instead of propagating, so that the sweep
    stores it and goes on.
    """
    started = time.perf_counter()
    try:
        result = _integrate_point(document)
    except Exception as error:  # noqa: BLE001 - every failure of a point is recorded in the store, whatever its type
        result = {
            "error": {
                "type": type(error).__name__,
                "message": str(error),
                "traceback": "".join(traceback.format_exception(error)),
            }
        }
    result["run_seconds"] = time.perf_counter() - started
    result["versions"] = dict(_compute_library_versions())
    return result


def _integrate_point(document: dict) -> dict:
    config = parse_config(document)
    problem = config.problem.build()
    model = config.model
    trajectory = integrate_problem(problem, model, config.truncation, config.solver)

    # NumPy scalars overflow to inf on absurd spectra instead of raising OverflowError.
    initial_loss = float(model.loss(np.float64(problem.q(1)), np.float64(problem.m(1)), np.float64(problem.rho1)))
    covers = bool(getattr(model, "is_phase_retrieval", False))
    tail_prediction = predict_tail_loss(problem, trajectory.t) if covers else None
    report = analyze_phases(
        trajectory, problem, initial_loss=initial_loss, tail_prediction=tail_prediction, model=model
    )
    return {
        "t": trajectory.t,
        "loss": trajectory.loss,
        "m1": trajectory.m1,
        "q1": trajectory.q1,
        "loss_tail_prediction": tail_prediction,
        "status": trajectory.status,
        "message": trajectory.message,
        "truncation": trajectory.truncation,
        "state_size": trajectory.state_size,
        "t_requested_end": trajectory.t_requested_end,
        "stats": dict(trajectory.stats),
        "wall_seconds": trajectory.wall_seconds,
        "event_times": dict(trajectory.event_times),
        "phases": report.to_dict(),
    }


def _error_result(error: BaseException) -> dict:
    """Describe a task that Dask could not finish (a killed worker, a lost scheduler) like a failed point."""
    return {
        "error": {
            "type": type(error).__name__,
            "message": str(error),
            "traceback": "".join(traceback.format_exception(error)),
        },
        "run_seconds": None,
        "versions": {},
    }


@contextlib.contextmanager
def _dask_client(scheduler_address: str | None, n_workers: int, connect_timeout: float):
    """Yield a client of a new local cluster on 127.0.0.1, or of the scheduler at ``scheduler_address``."""
    if scheduler_address is None:
        with LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host=LOOPBACK_HOST,
            dashboard_address=None,
        ) as cluster, Client(cluster) as client:
            logger.info("started a local Dask cluster at %s with %d workers", cluster.scheduler_address, n_workers)
            try:
                yield client
            finally:
                logger.info("stopping the local Dask cluster at %s", cluster.scheduler_address)
        return

    try:
        client = Client(scheduler_address, timeout=connect_timeout)
    except (OSError, ValueError) as error:
        raise SweepRunError(f"failed to connect to the Dask scheduler at {scheduler_address}: {error}") from None
    with client:
        try:
            client.wait_for_workers(1, timeout=connect_timeout)
        except TimeoutError:
            raise SweepRunError(
                f"the Dask scheduler at {scheduler_address} has no workers after {connect_timeout:g} s; "
                "start workers with `dask worker ADDRESS`"
            ) from None
        logger.info("connected to the Dask scheduler at %s", scheduler_address)
        yield client


def _as_spec(path_or_config) -> SweepSpec:
    if isinstance(path_or_config, SweepSpec):
        return path_or_config
    if isinstance(path_or_config, dict):
        return parse_sweep(path_or_config)
    return load_sweep(path_or_config)


def run_sweep(
    path_or_config,
    out_dir,
    scheduler_address: str | None = None,
    n_workers: int | None = None,
    progress: bool = True,
    on_point_stored: Callable[[PointRecord], None] | None = None,
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
) -> SweepResult:
    """Run every point of a sweep that is not yet stored in ``out_dir`` and return the outcome.

    Parameters
    ----------
    path_or_config : str, Path, dict or SweepSpec
        A sweep file, a parsed sweep document or an expanded sweep; see
        :mod:`hierarchy.sweeps.grid`. Every point is validated before
        anything runs.
    out_dir : str or Path
        Sweep directory, created if needed; see :mod:`hierarchy.sweeps.store`.
    scheduler_address : str, optional
        Address of a running Dask scheduler (``tcp://host:port``). Without
        it a local cluster of ``n_workers`` processes with one thread each is
        started on 127.0.0.1 and stopped at the end.
    n_workers : int, optional
        Worker processes of the local cluster, from 1 to
        :func:`max_local_workers`; by default :func:`default_local_workers`.
        Ignored with ``scheduler_address``.
    progress : bool
        Show a progress bar on stderr.
    on_point_stored : callable, optional
        Called with the :class:`PointRecord` of each point after it is
        stored and ``summary.csv`` is rewritten. An exception it raises
        stops the sweep, and the points stored so far stay in the store.
    connect_timeout : float
        Seconds to wait for the scheduler at ``scheduler_address`` to accept
        the connection, and again for it to have at least one worker.

    Raises
    ------
    SweepConfigError
        When the sweep file or one of its points is invalid; nothing runs.
    SweepStoreError
        When the directory cannot be written, another sweep writes to it, or
        it contains a different sweep (other parameters or points).
    ValueError
        When ``n_workers`` is not an integer from 1 to :func:`max_local_workers`.
    SweepRunError
        When the scheduler cannot be reached or has no workers.
    """
    spec = _as_spec(path_or_config)
    if n_workers is None:
        n_workers = default_local_workers()
    maximum = max_local_workers()
    if not (isinstance(n_workers, int) and not isinstance(n_workers, bool) and 1 <= n_workers <= maximum):
        raise ValueError(
            f"n_workers = {n_workers!r} is invalid: it must be an integer from 1 to {maximum} "
            "(the CPUs available to this process)"
        )
    metadata = StoreMetadata(git_revision=git_revision(), versions=library_versions(STORE_LIBRARIES))

    with SweepStore(out_dir) as store:
        store.check_manifest(spec)
        store.write_manifest(spec, metadata)
        records = {}
        pending = []
        for point in spec.points:
            record = store.read_record(point)
            if record is not None and not record.failed:
                records[point.index] = record
            else:
                pending.append(point)
        reused = len(records)
        summary_path = store.write_summary(spec, records.values())
        logger.info("sweep of %d points in %s: %d already stored, %d to compute",
                    len(spec.points), store.directory, reused, len(pending))

        if pending:
            with _dask_client(scheduler_address, n_workers, connect_timeout) as client:
                _run_points(client, store, spec, pending, records, metadata, progress, on_point_stored)

    return SweepResult(
        directory=Path(out_dir),
        spec=spec,
        records=[records[point.index] for point in spec.points],
        summary_path=summary_path,
        computed=len(pending),
        reused=reused,
    )


def _run_points(client, store, spec, pending, records, metadata, progress, on_point_stored) -> None:
    """Submit one task per pending point and store each result as it completes."""
    run_token = uuid.uuid4().hex[:8]
    futures = {}
    for point in pending:
        key = f"hierarchy-sweep-{run_token}-point-{point.index}"
        futures[client.submit(compute_point, point.document, key=key, retries=0)] = point

    with tqdm(
        total=len(spec.points),
        initial=len(spec.points) - len(pending),
        unit="point",
        desc="sweep",
        file=sys.stderr,
        disable=not progress,
    ) as progress_bar:
        for future in as_completed(futures):
            point = futures.pop(future)
            try:
                result = future.result()
            except Exception as error:  # noqa: BLE001 - compute_point catches its own errors, so these come from Dask
                result = _error_result(error)
            future.release()

            record = store.write_point(point, result, metadata)
            records[point.index] = record
            store.write_summary(spec, records.values())
            if record.failed:
                logger.error("point %d (%s; id %s) failed: %s", point.index, point.describe(), point.point_id,
                             record.message)
            progress_bar.update(1)
            if on_point_stored is not None:
                on_point_stored(record)
