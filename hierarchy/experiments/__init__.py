"""Finite-sample training of phase retrieval: full-batch gradient descent and one-pass SGD.

``run_training`` trains one model per seed on samples ``x ~ N(0, Σ)`` and
records ``m_1``, ``q_1``, the population loss and a held-out loss on a
log-spaced grid of steps. Step ``k`` of step size ``eta`` is the flow time
``t = eta * k`` of ``dw/dt = -∇L``, for any batch size, because every step
moves ``w`` by ``-eta`` times an unbiased estimate of ``∇L``.

NOTE: the compiled loops hard-code the phase-retrieval gradient without label
noise or ridge, so other ``SingleIndexModel`` settings cannot be trained here.
"""

from .settings import (
    MAX_MATRIX_ELEMENTS,
    MAX_RESIDENT_ELEMENTS,
    MAX_SAMPLES,
    MAX_SEEDS,
    MAX_STEPS,
    MAX_WORKERS,
    METHODS,
    TrainingSettings,
    record_steps,
)
from .training import STATISTICS, SeedStatus, TrainingResult, run_training, seed_generators, seed_mean, seed_stderr

__all__ = [
    "MAX_MATRIX_ELEMENTS",
    "MAX_RESIDENT_ELEMENTS",
    "MAX_SAMPLES",
    "MAX_SEEDS",
    "MAX_STEPS",
    "MAX_WORKERS",
    "METHODS",
    "STATISTICS",
    "SeedStatus",
    "TrainingResult",
    "TrainingSettings",
    "record_steps",
    "run_training",
    "seed_generators",
    "seed_mean",
    "seed_stderr",
]
