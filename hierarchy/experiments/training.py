"""Train phase retrieval by full-batch GD or one-pass SGD for several seeds and record the statistics.

Seed ``s`` fixes three independent random streams: the initial point (the
one of ``PowerLawSpec(seed=s)``) and two children of
``numpy.random.SeedSequence(s)``, one for the training samples and one for
the held-out set. The statistics are recorded on a log-spaced grid of steps
(:func:`record_steps`), so memory does not grow with the number of steps.

SGD draws its samples inside the compiled loop from a NumPy ``Generator``
passed in as an argument, which Numba supports since 0.56. Its state lives in
the Python object, so it carries over between the calls into which a long
run is cut. The legacy ``np.random`` functions keep one hidden state per
thread instead, and drew normals about 5 times more slowly (22 against 4 ns
per draw with Numba 0.68 on x86-64).
"""

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np

from ..model import PhaseRetrieval
from ..spectrum import PowerLawSpec
from . import kernels
from .settings import TrainingSettings, record_steps

logger = logging.getLogger(__name__)

# Sample coordinates processed per compiled call (about 0.2 s of SGD), so a
# long run reports progress between calls.
WORK_PER_CALL = 5 * 10**7
LOG_INTERVAL_SECONDS = 5.0

STATISTICS = ("loss", "m1", "abs_m1", "q1", "test_loss", "train_loss")

ProgressCallback = Callable[[int, int, int], None]


class SeedStatus(str, Enum):
    """Outcome of the training of one seed."""

    COMPLETED = "COMPLETED"
    DIVERGED = "DIVERGED"
    TIMED_OUT = "TIMED_OUT"


@dataclass
class TrainingResult:
    """Statistics of every seed on the recorded steps.

    Attributes
    ----------
    settings : TrainingSettings
        The training settings; ``settings.seeds`` orders the rows below.
    spec : PowerLawSpec
        The problem; its ``seed`` is replaced by each training seed.
    steps : array of int, shape (G,)
        Recorded steps, starting with 0.
    t : array, shape (G,)
        Flow times ``eta * steps``.
    rho1 : float
        ``w*ᵀΣw*`` of the problem.
    m1, q1 : arrays, shape (S, G)
        ``wᵀΣw*`` and ``wᵀΣw`` per seed and recorded step.
    loss : array, shape (S, G)
        Population loss ``PhaseRetrieval().loss(q1, m1, rho1)``.
    test_loss : array, shape (S, G)
        Empirical loss ``1/4 mean((ŷ - y)^2)`` on the held-out set of the seed;
        ``nan`` when ``test_size = 0``.
    train_loss : array, shape (S, G)
        Empirical loss on the ``n`` training samples (``gd``); ``nan`` for ``sgd``.
    status : tuple of SeedStatus
        How each seed ended.
    messages : tuple of str
        Explanation of each status.
    steps_completed : array of int, shape (S,)
        Steps taken by each seed before it completed, diverged or reached
        the wall-clock limit.
    wall_seconds : array, shape (S,)
        Run time of each seed.

    Values after a divergence or the wall-clock limit are ``nan``; values
    recorded before it are kept.
    """

    settings: TrainingSettings
    spec: PowerLawSpec
    steps: np.ndarray
    t: np.ndarray
    rho1: float
    m1: np.ndarray
    q1: np.ndarray
    loss: np.ndarray
    test_loss: np.ndarray
    train_loss: np.ndarray
    status: tuple
    messages: tuple
    steps_completed: np.ndarray
    wall_seconds: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def seeds(self) -> tuple:
        return self.settings.seeds

    @property
    def abs_m1(self) -> np.ndarray:
        """``|m_1|`` per seed; about half of random starts converge to ``-w*``."""
        return np.abs(self.m1)

    @property
    def all_completed(self) -> bool:
        return all(status is SeedStatus.COMPLETED for status in self.status)

    def statistic(self, name: str) -> np.ndarray:
        """Return the ``(S, G)`` array of a statistic named in ``STATISTICS``."""
        if name not in STATISTICS:
            raise ValueError(f"statistic {name!r} is not available; choose one of {list(STATISTICS)}")
        return getattr(self, name)

    def mean(self, name: str) -> np.ndarray:
        """Return the mean over seeds of a statistic, over the seeds with a finite value at each step."""
        return seed_mean(self.statistic(name))

    def stderr(self, name: str) -> np.ndarray:
        """Return the standard error of :meth:`mean`; ``nan`` where fewer than two seeds have a finite value."""
        return seed_stderr(self.statistic(name))


def seed_mean(values: np.ndarray) -> np.ndarray:
    """Return the mean over the first axis of the finite entries; ``nan`` where there are none."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    count = finite.sum(axis=0)
    # A seed about to diverge records values near the float64 maximum, so
    # the sums may overflow. The mean reported is then inf.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        total = np.where(finite, values, 0.0).sum(axis=0)
        return np.where(count > 0, total / count, np.nan)


def seed_stderr(values: np.ndarray) -> np.ndarray:
    """Return the standard error of :func:`seed_mean`, ``std(ddof=1) / sqrt(count)``; ``nan`` where count < 2."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    count = finite.sum(axis=0)
    mean = seed_mean(values)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        squares = np.where(finite, (values - mean) ** 2, 0.0).sum(axis=0)
        return np.where(count > 1, np.sqrt(squares / ((count - 1) * count)), np.nan)


def seed_generators(seed: int) -> tuple:
    """Return the generators of the training samples and of the held-out set of ``seed``.

    They are the two children of ``SeedSequence(seed)``, whose spawn keys keep
    them independent of each other, of other seeds and of the stream
    ``default_rng(seed)`` that draws the initial point.
    """
    training_sequence, test_sequence = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(training_sequence), np.random.default_rng(test_sequence)


def _draw_samples(generator, count: int, sqrt_lam: np.ndarray) -> np.ndarray:
    samples = generator.standard_normal((count, sqrt_lam.size))
    samples *= sqrt_lam
    return samples


class _ProgressReporter:
    """Log progress every few seconds per seed and forward it to the callback, one call at a time."""

    def __init__(self, method: str, total_steps: int, callback: ProgressCallback | None):
        self.method = method
        self.total_steps = total_steps
        self.callback = callback
        self.lock = threading.Lock()

    def start(self) -> dict:
        now = time.perf_counter()
        return {"started": now, "last_logged": now}

    def update(self, clock: dict, seed: int, steps_done: int) -> None:
        now = time.perf_counter()
        if now - clock["last_logged"] >= LOG_INTERVAL_SECONDS:
            logger.info(
                "%s seed %d: %d/%d steps (%.0f %%), %.1f s",
                self.method, seed, steps_done, self.total_steps,
                100.0 * steps_done / self.total_steps, now - clock["started"],
            )
            clock["last_logged"] = now
        if self.callback is not None:
            with self.lock:
                self.callback(seed, steps_done, self.total_steps)


@dataclass
class _SeedRun:
    m1: np.ndarray
    q1: np.ndarray
    test_loss: np.ndarray
    train_loss: np.ndarray
    status: SeedStatus
    message: str
    steps_completed: int
    wall_seconds: float


class _SeedTrainer:
    """State of one seed: the weights, its data or sample stream, and the held-out set."""

    def __init__(self, spec: PowerLawSpec, settings: TrainingSettings, seed: int):
        problem = replace(spec, seed=seed).build()
        self.settings = settings
        self.lam = problem.lam
        self.wstar = problem.wstar
        self.w = problem.w0.copy()
        self.sqrt_lam = np.sqrt(problem.lam)
        training_generator, test_generator = seed_generators(seed)

        self.test_data = _draw_samples(test_generator, settings.test_size, self.sqrt_lam)
        self.test_projection = np.empty(settings.test_size)
        kernels.project_rows(self.test_data, self.wstar, self.test_projection)

        self.gradient = np.zeros(problem.d)
        if settings.method == "gd":
            self.data = _draw_samples(training_generator, settings.n, self.sqrt_lam)
            self.teacher_projection = np.empty(settings.n)
            kernels.project_rows(self.data, self.wstar, self.teacher_projection)
        else:
            self.generator = training_generator
            self.sample = np.zeros(problem.d)

    def advance(self, n_steps: int) -> int:
        """Take up to ``n_steps`` steps and return how many were completed."""
        if self.settings.method == "gd":
            return int(
                kernels.gd_advance(self.w, self.data, self.teacher_projection, float(self.settings.eta), n_steps, self.gradient)
            )
        return int(
            kernels.sgd_advance(
                self.w, self.wstar, self.sqrt_lam, float(self.settings.eta), self.settings.batch_size, n_steps,
                self.generator, self.sample, self.gradient,
            )
        )

    def observe(self) -> tuple:
        """Return ``(m_1, q_1, test loss, training loss)`` at the current weights."""
        with np.errstate(over="ignore", invalid="ignore"):
            m1 = float(np.sum(self.lam * self.w * self.wstar))
            q1 = float(np.sum(self.lam * self.w * self.w))
        test_loss = math.nan
        if self.settings.test_size > 0:
            test_loss = float(kernels.empirical_loss(self.test_data, self.test_projection, self.w))
        train_loss = math.nan
        if self.settings.method == "gd":
            train_loss = float(kernels.empirical_loss(self.data, self.teacher_projection, self.w))
        return m1, q1, test_loss, train_loss


def _train_seed(
    spec, settings: TrainingSettings, seed: int, grid: np.ndarray, reporter: _ProgressReporter, deadline: float
) -> _SeedRun:
    """Train one seed up to the last step of ``grid``, or until it diverges or ``time.perf_counter()`` passes ``deadline``."""
    clock = reporter.start()
    trainer = _SeedTrainer(spec, settings, seed)
    records = np.full((4, grid.size), np.nan)
    records[:, 0] = trainer.observe()
    chunk_steps = max(1, WORK_PER_CALL // (settings.batch_size * trainer.w.size))

    steps_done = 0
    status = SeedStatus.COMPLETED
    for index in range(1, grid.size):
        while steps_done < grid[index] and status is SeedStatus.COMPLETED:
            if time.perf_counter() >= deadline:
                status = SeedStatus.TIMED_OUT
                break
            requested = int(min(grid[index] - steps_done, chunk_steps))
            completed = trainer.advance(requested)
            steps_done += completed
            reporter.update(clock, seed, steps_done)
            if completed < requested:
                status = SeedStatus.DIVERGED
        if status is not SeedStatus.COMPLETED:
            break
        observed = trainer.observe()
        if not (math.isfinite(observed[0]) and math.isfinite(observed[1])):
            status = SeedStatus.DIVERGED
            break
        records[:, index] = observed

    wall_seconds = time.perf_counter() - clock["started"]
    message = _describe_seed_end(status, settings, steps_done)
    if status is SeedStatus.COMPLETED:
        logger.debug("%s seed %d %s in %.1f s", settings.method, seed, message, wall_seconds)
    else:
        logger.warning("%s seed %d %s", settings.method, seed, message)
    return _SeedRun(*records, status=status, message=message, steps_completed=steps_done, wall_seconds=wall_seconds)


def _describe_seed_end(status: SeedStatus, settings: TrainingSettings, steps_done: int) -> str:
    eta = settings.eta
    reached = f"{steps_done} steps (t = {eta * steps_done:.6g})"
    if status is SeedStatus.DIVERGED:
        return (
            f"diverged after {reached}: w or its gradient became non-finite; eta = {eta:g} is too large for this "
            "problem, reduce it"
        )
    if status is SeedStatus.TIMED_OUT:
        return (
            f"timed out after {reached} of {settings.steps}: the training reached its wall-clock limit of "
            f"max_wall_seconds = {settings.max_wall_seconds:g} s; the steps recorded before are kept. Raise the "
            "limit or reduce steps"
        )
    return f"completed {reached}"


def run_training(
    spec: PowerLawSpec,
    settings: TrainingSettings,
    *,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> TrainingResult:
    """Train every seed of ``settings`` on the problem ``spec`` and return the recorded statistics.

    Parameters
    ----------
    spec : PowerLawSpec
        The problem, with finite ``d``; its ``seed`` is replaced by each seed
        of ``settings`` to draw that seed's initial point.
    settings : TrainingSettings
        Method, step size, number of steps, seeds and what to record.
    workers : int or None
        Seeds trained at the same time, in threads, at most ``MAX_WORKERS``;
        ``None`` means ``min(len(seeds), os.cpu_count())``, lowered to fit
        the memory bound. Each running seed
        keeps its data matrix and held-out set in memory, and together they
        may hold at most ``MAX_RESIDENT_ELEMENTS`` float64 elements (see
        :meth:`TrainingSettings.resolve_workers`). Unless the wall-clock
        limit stops the run, the result does not depend on the number of
        workers.
    progress : callable or None
        Called as ``progress(seed, steps_done, steps_total)`` after every
        compiled call (about every 0.2 s of work) from the worker threads,
        one call at a time.

    A seed that diverges stops with status ``DIVERGED`` and keeps what it
    recorded before; the other seeds carry on. When the training of all
    seeds has run for ``settings.max_wall_seconds``, every seed still
    training stops with status ``TIMED_OUT`` and keeps what it recorded, and
    seeds not started yet stop after recording step 0.
    """
    if not isinstance(spec, PowerLawSpec) or spec.infinite:
        raise ValueError(f"spec = {spec!r} is invalid: training needs a PowerLawSpec with finite d")
    if not isinstance(settings, TrainingSettings):
        raise ValueError(f"settings must be a TrainingSettings, got {type(settings).__name__}")
    settings.check_dimension(int(spec.d))
    seeds = settings.seeds
    workers = settings.resolve_workers(int(spec.d), workers)

    grid = record_steps(settings.steps, settings.record_points)
    reporter = _ProgressReporter(settings.method, settings.steps, progress)
    logger.info(
        "%s: d = %d, eta = %g, %d steps, batch %d, %d seeds on %d workers",
        settings.method, spec.d, settings.eta, settings.steps, settings.batch_size, len(seeds), workers,
    )
    started = time.perf_counter()
    deadline = math.inf if settings.max_wall_seconds is None else started + settings.max_wall_seconds
    if workers == 1:
        runs = [_train_seed(spec, settings, seed, grid, reporter, deadline) for seed in seeds]
    else:
        with ThreadPoolExecutor(max_workers=workers) as executor:
            futures = [executor.submit(_train_seed, spec, settings, seed, grid, reporter, deadline) for seed in seeds]
            runs = [future.result() for future in futures]
    logger.info("%s: %d seeds trained in %.1f s", settings.method, len(seeds), time.perf_counter() - started)

    m1 = np.array([run.m1 for run in runs])
    q1 = np.array([run.q1 for run in runs])
    rho1 = replace(spec, seed=seeds[0]).build().rho1
    with np.errstate(invalid="ignore", over="ignore"):
        # np.sum of d products of three factors gives q_1 and m_1.
        loss = PhaseRetrieval().loss(
            q1, m1, rho1, statistics_operations=int(spec.d) + 2, description="the population loss of the trained weights"
        )
        loss = np.asarray(loss, dtype=np.float64)
    return TrainingResult(
        settings=settings,
        spec=spec,
        steps=grid,
        t=settings.eta * grid.astype(np.float64),
        rho1=float(rho1),
        m1=m1,
        q1=q1,
        loss=loss,
        test_loss=np.array([run.test_loss for run in runs]),
        train_loss=np.array([run.train_loss for run in runs]),
        status=tuple(run.status for run in runs),
        messages=tuple(run.message for run in runs),
        steps_completed=np.array([run.steps_completed for run in runs], dtype=np.int64),
        wall_seconds=np.array([run.wall_seconds for run in runs]),
    )
