"""Parameter sweeps: grids of run configurations computed on Dask and kept in a results store.

``grid`` reads a sweep file and expands it into validated points, ``store``
writes one Zarr dataset per point with a manifest and ``summary.csv``, and
``runner`` computes the points on a Dask cluster. :func:`run_sweep` ties
them together.
"""

from .grid import SweepConfigError, SweepPoint, SweepSpec, load_sweep, parse_sweep
from .runner import (
    SweepResult,
    SweepRunError,
    compute_point,
    default_local_workers,
    max_local_workers,
    run_sweep,
)
from .store import PointRecord, SweepStore, SweepStoreError

__all__ = [
    "PointRecord",
    "SweepConfigError",
    "SweepPoint",
    "SweepResult",
    "SweepRunError",
    "SweepSpec",
    "SweepStore",
    "SweepStoreError",
    "compute_point",
    "default_local_workers",
    "load_sweep",
    "max_local_workers",
    "parse_sweep",
    "run_sweep",
]
