"""Settings of a finite-sample training run and the log-spaced grid of recorded steps.

Both methods take steps ``w <- w - eta * g`` on the loss
``L(w) = 1/4 E[(ŷ - y)^2]``, with ``ŷ = (w·x)^2``, ``y = (w*·x)^2`` and the
per-sample gradient ``(ŷ - y)(w·x) x``:

- ``gd``: full-batch gradient descent, ``g`` is the mean per-sample gradient
  over ``n`` samples drawn once;
- ``sgd``: one-pass SGD, ``g`` is the mean per-sample gradient over
  ``batch`` fresh samples, so a run of ``steps`` steps reads
  ``steps * batch`` samples, each once.

In both cases ``E[g] = ∇L``, so step ``k`` corresponds to the time
``t = eta * k`` of the gradient flow ``dw/dt = -∇L``, for every batch size.
The ODEs are the limit ``n >> d`` (``gd``) and ``eta -> 0`` (``sgd``).
"""

import math
import os
from dataclasses import dataclass

import numpy as np

METHODS = ("gd", "sgd")

# Upper bound on the elements of one float64 matrix that a running seed keeps
# in memory: the n x d data of gd and the test_size x d held-out set.
# 1e8 elements are 800 MB.
MAX_MATRIX_ELEMENTS = 10**8

# Bounds on the work of one seed: the number of steps, and the samples that
# all its steps read (steps * batch for sgd, steps * n for gd). One sgd step
# draws batch * d sample coordinates, which MAX_MATRIX_ELEMENTS also bounds,
# so that one compiled call ends soon enough for the wall-clock check.
MAX_STEPS = 10**10
MAX_SAMPLES = 10**12
MAX_SEEDS = 10**4
MAX_RECORD_POINTS = 10**5

# Bounds on the seeds trained at the same time, one thread each: the count,
# and the estimated float64 elements that their data and held-out sets hold
# together (4e8 elements are 3.2 GB).
MAX_WORKERS = 256
MAX_RESIDENT_ELEMENTS = 4 * 10**8


def _is_integer(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class TrainingSettings:
    """How to train: method, step size, run length, seeds and what to record.

    Attributes
    ----------
    method : str
        ``"gd"`` (full-batch gradient descent on ``n`` fixed samples) or
        ``"sgd"`` (one-pass SGD on fresh samples).
    eta : float
        Step size, ``0 < eta <= 100``. Step ``k`` is the flow time ``eta * k``.
    steps : int
        Number of steps per seed, in ``[1, 1e10]``. The samples read by all
        steps of a seed, ``steps * batch`` (sgd) or ``steps * n`` (gd), are
        at most ``1e12``.
    seeds : tuple of int
        Seeds, each in ``[0, 2^63)``, distinct, at most ``1e4`` of them. Seed
        ``s`` fixes the initial point (as ``PowerLawSpec(seed=s)``), the
        training samples and the held-out set.
    n : int or None
        Number of training samples of ``gd``, at least 1; must be ``None``
        for ``sgd``, which never reuses a sample.
    batch : int or None
        Mini-batch size of ``sgd``, in ``[1, 1e8]``; ``None`` means 1. Must
        be ``None`` for ``gd``, whose batch is all ``n`` samples.
    test_size : int
        Number of held-out samples for the empirical test loss, at least 0;
        0 skips the test loss.
    record_points : int
        Number of log-spaced steps in ``[1, steps]`` at which the statistics
        are recorded, in ``[2, 1e5]``. Step 0 is always recorded too. Fewer
        points remain where rounding to integers merges some.
    max_wall_seconds : float or None
        Wall-clock limit of the training of all seeds together, in seconds,
        positive and finite; ``None`` means no limit. It is checked between
        compiled calls, each of which takes one step or more.
    """

    method: str
    eta: float
    steps: int
    seeds: tuple = (0,)
    n: int | None = None
    batch: int | None = None
    test_size: int = 1000
    record_points: int = 100
    max_wall_seconds: float | None = None

    def __post_init__(self):
        _require(
            self.method in METHODS,
            f"method = {self.method!r} is invalid: choose one of {list(METHODS)}",
        )
        _require(
            isinstance(self.eta, (int, float, np.integer, np.floating)) and not isinstance(self.eta, bool)
            and math.isfinite(self.eta) and 0.0 < self.eta <= 100.0,
            f"eta = {self.eta!r} is invalid: the step size must be a number in (0, 100]",
        )
        _require(
            _is_integer(self.steps) and 1 <= self.steps <= MAX_STEPS,
            f"steps = {self.steps!r} is invalid: the number of steps must be an integer in [1, {MAX_STEPS:.0e}]",
        )
        self._check_seeds()
        if self.method == "gd":
            _require(
                _is_integer(self.n) and self.n >= 1,
                f"n = {self.n!r} is invalid: gd needs the number of training samples, an integer >= 1",
            )
            _require(
                self.batch is None,
                f"batch = {self.batch!r} is invalid for gd: full-batch gradient descent uses all n samples; "
                "leave batch unset",
            )
        else:
            _require(
                self.n is None,
                f"n = {self.n!r} is invalid for sgd: one-pass SGD draws fresh samples at every step; leave n unset",
            )
            _require(
                self.batch is None or (_is_integer(self.batch) and 1 <= self.batch <= MAX_MATRIX_ELEMENTS),
                f"batch = {self.batch!r} is invalid: the mini-batch size must be an integer in "
                f"[1, {MAX_MATRIX_ELEMENTS:.0e}]",
            )
        self._check_samples()
        _require(
            _is_integer(self.test_size) and self.test_size >= 0,
            f"test_size = {self.test_size!r} is invalid: the held-out set size must be an integer >= 0",
        )
        _require(
            _is_integer(self.record_points) and 2 <= self.record_points <= MAX_RECORD_POINTS,
            f"record_points = {self.record_points!r} is invalid: it must be an integer in [2, {MAX_RECORD_POINTS}]",
        )
        _require(
            self.max_wall_seconds is None or (
                isinstance(self.max_wall_seconds, (int, float, np.integer, np.floating))
                and not isinstance(self.max_wall_seconds, bool)
                and 0.0 < self.max_wall_seconds < math.inf
            ),
            f"max_wall_seconds = {self.max_wall_seconds!r} is invalid: the wall-clock limit must be a positive, "
            "finite number of seconds; leave it unset for no limit",
        )

    def _check_samples(self) -> None:
        samples = int(self.steps) * self.batch_size
        size_name = "n" if self.method == "gd" else "batch"
        _require(
            samples <= MAX_SAMPLES,
            f"steps * {size_name} = {self.steps} * {self.batch_size} = {samples:.3g} is invalid: a seed may read at "
            f"most {MAX_SAMPLES:.0e} samples; reduce steps or {size_name}",
        )

    def _check_seeds(self) -> None:
        is_sequence = isinstance(self.seeds, (tuple, list))
        seeds_text = f"a list of {len(self.seeds)} seeds" if is_sequence and len(self.seeds) > 20 else repr(self.seeds)
        _require(
            is_sequence and 1 <= len(self.seeds) <= MAX_SEEDS,
            f"seeds = {seeds_text} is invalid: it must be a tuple of 1 to {MAX_SEEDS} integer seeds",
        )
        for seed in self.seeds:
            _require(
                _is_integer(seed) and 0 <= seed < 2**63,
                f"seeds contains {seed!r}, which is invalid: every seed must be an integer in [0, 2^63)",
            )
        _require(
            len(set(int(seed) for seed in self.seeds)) == len(self.seeds),
            f"seeds = {self.seeds!r} is invalid: the seeds must be distinct",
        )
        # A list would make the frozen dataclass unhashable.
        object.__setattr__(self, "seeds", tuple(int(seed) for seed in self.seeds))

    @property
    def batch_size(self) -> int:
        """Samples per step: ``n`` for ``gd``, ``batch`` (default 1) for ``sgd``."""
        if self.method == "gd":
            return int(self.n)
        return 1 if self.batch is None else int(self.batch)

    def check_dimension(self, d: int) -> None:
        """Raise ``ValueError`` when a matrix of a run in dimension ``d``, or one sgd step, exceeds ``MAX_MATRIX_ELEMENTS``."""
        if self.method == "gd":
            _require(
                self.n * d <= MAX_MATRIX_ELEMENTS,
                f"n = {self.n} is too large for d = {d}: the n x d training data would have "
                f"{self.n * d:.3g} elements, above the limit of {MAX_MATRIX_ELEMENTS:.0e}; reduce n",
            )
        else:
            _require(
                self.batch_size * d <= MAX_MATRIX_ELEMENTS,
                f"batch = {self.batch_size} is too large for d = {d}: one step would draw "
                f"{self.batch_size * d:.3g} sample coordinates, above the limit of {MAX_MATRIX_ELEMENTS:.0e}; "
                "reduce batch",
            )
        _require(
            self.test_size * d <= MAX_MATRIX_ELEMENTS,
            f"test_size = {self.test_size} is too large for d = {d}: the held-out set would have "
            f"{self.test_size * d:.3g} elements, above the limit of {MAX_MATRIX_ELEMENTS:.0e}; reduce test_size",
        )

    def seed_elements(self, d: int) -> int:
        """Return the float64 elements that one running seed keeps in memory: its gd data matrix and held-out set."""
        data = self.n * d if self.method == "gd" else 0
        return data + self.test_size * d

    def resolve_workers(self, d: int, workers: int | None = None) -> int:
        """Return the number of seeds to train at the same time, after checking it against the memory bound.

        ``None`` picks ``min(len(seeds), os.cpu_count())``, lowered until the
        running seeds hold at most ``MAX_RESIDENT_ELEMENTS`` elements. An
        explicit ``workers`` must be in ``[1, MAX_WORKERS]`` and within that
        memory bound, else ``ValueError`` is raised.
        """
        per_seed = max(1, self.seed_elements(d))
        fitting = max(1, MAX_RESIDENT_ELEMENTS // per_seed)
        if workers is None:
            return max(1, min(len(self.seeds), os.cpu_count() or 1, fitting, MAX_WORKERS))
        _require(
            _is_integer(workers) and 1 <= workers <= MAX_WORKERS,
            f"workers = {workers!r} is invalid: it must be an integer in [1, {MAX_WORKERS}]",
        )
        running = min(int(workers), len(self.seeds))
        _require(
            running * per_seed <= MAX_RESIDENT_ELEMENTS,
            f"workers = {workers} is too many for these data sizes: {running} seeds at the same time would hold "
            f"about {8 * running * per_seed / 1e9:.3g} GB of samples ({running} x {per_seed:.3g} float64 elements), "
            f"above the limit of {8 * MAX_RESIDENT_ELEMENTS / 1e9:.3g} GB; set workers to at most {fitting} "
            "or reduce n or test_size",
        )
        return int(workers)

    def to_dict(self) -> dict:
        """Return the settings as plain values."""
        return {
            "method": self.method,
            "eta": float(self.eta),
            "steps": int(self.steps),
            "seeds": list(self.seeds),
            "n": None if self.n is None else int(self.n),
            "batch": None if self.method == "gd" else self.batch_size,
            "test_size": int(self.test_size),
            "record_points": int(self.record_points),
            "max_wall_seconds": None if self.max_wall_seconds is None else float(self.max_wall_seconds),
        }


def record_steps(steps: int, record_points: int) -> np.ndarray:
    """Return the recorded steps: 0, then ``record_points`` log-spaced integers from 1 to ``steps``, without repeats."""
    spaced = np.rint(np.geomspace(1.0, float(steps), record_points)).astype(np.int64)
    spaced[-1] = steps
    return np.concatenate(([0], np.unique(spaced)))
