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
from dataclasses import dataclass

import numpy as np

METHODS = ("gd", "sgd")

# Upper bound on the elements of one float64 matrix that a running seed keeps
# in memory: the n x d data of gd and the test_size x d held-out set.
# 1e8 elements are 800 MB.
MAX_MATRIX_ELEMENTS = 10**8

MAX_STEPS = 10**12
MAX_SEEDS = 10**4
MAX_RECORD_POINTS = 10**5


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
        Number of steps per seed, in ``[1, 1e12]``.
    seeds : tuple of int
        Seeds, each in ``[0, 2^63)``, distinct, at most ``1e4`` of them. Seed
        ``s`` fixes the initial point (as ``PowerLawSpec(seed=s)``), the
        training samples and the held-out set.
    n : int or None
        Number of training samples of ``gd``, at least 1; must be ``None``
        for ``sgd``, which never reuses a sample.
    batch : int or None
        Mini-batch size of ``sgd``, at least 1; ``None`` means 1. Must be
        ``None`` for ``gd``, whose batch is all ``n`` samples.
    test_size : int
        Number of held-out samples for the empirical test loss, at least 0;
        0 skips the test loss.
    record_points : int
        Number of log-spaced steps in ``[1, steps]`` at which the statistics
        are recorded, in ``[2, 1e5]``. Step 0 is always recorded too. Fewer
        points remain where rounding to integers merges some.
    """

    method: str
    eta: float
    steps: int
    seeds: tuple = (0,)
    n: int | None = None
    batch: int | None = None
    test_size: int = 1000
    record_points: int = 100

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
                self.batch is None or (_is_integer(self.batch) and self.batch >= 1),
                f"batch = {self.batch!r} is invalid: the mini-batch size must be an integer >= 1",
            )
        _require(
            _is_integer(self.test_size) and self.test_size >= 0,
            f"test_size = {self.test_size!r} is invalid: the held-out set size must be an integer >= 0",
        )
        _require(
            _is_integer(self.record_points) and 2 <= self.record_points <= MAX_RECORD_POINTS,
            f"record_points = {self.record_points!r} is invalid: it must be an integer in [2, {MAX_RECORD_POINTS}]",
        )

    def _check_seeds(self) -> None:
        _require(
            isinstance(self.seeds, (tuple, list)) and 1 <= len(self.seeds) <= MAX_SEEDS,
            f"seeds = {self.seeds!r} is invalid: it must be a tuple of 1 to {MAX_SEEDS} integer seeds",
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
        """Raise ``ValueError`` when the matrices of a run in dimension ``d`` exceed ``MAX_MATRIX_ELEMENTS``."""
        if self.method == "gd":
            _require(
                self.n * d <= MAX_MATRIX_ELEMENTS,
                f"n = {self.n} is too large for d = {d}: the n x d training data would have "
                f"{self.n * d:.3g} elements, above the limit of {MAX_MATRIX_ELEMENTS:.0e}; reduce n",
            )
        _require(
            self.test_size * d <= MAX_MATRIX_ELEMENTS,
            f"test_size = {self.test_size} is too large for d = {d}: the held-out set would have "
            f"{self.test_size * d:.3g} elements, above the limit of {MAX_MATRIX_ELEMENTS:.0e}; reduce test_size",
        )

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
        }


def record_steps(steps: int, record_points: int) -> np.ndarray:
    """Return the recorded steps: 0, then ``record_points`` log-spaced integers from 1 to ``steps``, without repeats."""
    spaced = np.rint(np.geomspace(1.0, float(steps), record_points)).astype(np.int64)
    spaced[-1] = steps
    return np.concatenate(([0], np.unique(spaced)))
