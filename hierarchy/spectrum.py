"""Power-law spectra, teacher profiles, random initial points and their summary statistics.

Data ``x ~ N(0, Sigma)`` with ``Sigma = diag(lam_1 >= ... >= lam_d)`` and
``lam_i = i^(-a)``. The teacher has ``w*_i^2 = c^2 i^(-b)`` with ``c`` fixed
by ``rho_1 = w*^T Sigma w* = 1``. The student starts at
``w(0) = sigma0 g / sqrt(d)`` with ``g ~ N(0, I_d)`` drawn from ``seed``, with
its sign chosen so that ``m_1(0) > 0``.

Summary statistics (``k >= 0``): ``q_k = w^T Sigma^k w``,
``m_k = w^T Sigma^k w*``, ``rho_k = w*^T Sigma^k w*``.
"""

import math
from dataclasses import dataclass

import numpy as np

# Largest dimension accepted: the exact flow stores several d-vectors and
# the spectral-mode rule sorts the spectrum, both fine up to this size.
MAX_DIMENSION = 10**8


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _is_real(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


@dataclass(frozen=True)
class PowerLawSpec:
    """Parameters of a phase-retrieval problem with a power-law spectrum.

    Attributes
    ----------
    d : int
        Dimension, ``1 <= d <= 1e8``.
    a : float
        Spectral decay, ``lam_i = i^(-a)``, ``0 <= a <= 10``.
    b : float
        Teacher (source) exponent, ``w*_i^2 ∝ i^(-b)``, ``-5 <= b <= 10``.
    sigma0 : float
        Scale of the random initial point, ``w(0) = sigma0 g / sqrt(d)``, ``0 < sigma0 <= 100``.
    seed : int
        Seed of the initial point, ``0 <= seed < 2^63``.
    """

    d: int
    a: float
    b: float = 0.0
    sigma0: float = 0.1
    seed: int = 0

    def __post_init__(self):
        _require(
            isinstance(self.d, (int, np.integer)) and not isinstance(self.d, bool) and 1 <= self.d <= MAX_DIMENSION,
            f"d = {self.d!r} is invalid: the dimension must be an integer in [1, {MAX_DIMENSION}]",
        )
        _require(
            _is_real(self.a) and 0.0 <= self.a <= 10.0,
            f"a = {self.a!r} is invalid: the spectral exponent must be a number in [0, 10]",
        )
        _require(
            _is_real(self.b) and -5.0 <= self.b <= 10.0,
            f"b = {self.b!r} is invalid: the teacher exponent must be a number in [-5, 10]",
        )
        _require(
            _is_real(self.sigma0) and 0.0 < self.sigma0 <= 100.0,
            f"sigma0 = {self.sigma0!r} is invalid: the initial scale must be a number in (0, 100]",
        )
        _require(
            isinstance(self.seed, (int, np.integer)) and not isinstance(self.seed, bool) and 0 <= self.seed < 2**63,
            f"seed = {self.seed!r} is invalid: the seed must be an integer in [0, 2^63)",
        )

    def build(self) -> "Problem":
        """Draw the initial point and return the concrete problem."""
        index = np.arange(1, self.d + 1, dtype=np.float64)
        lam = index ** (-float(self.a))

        teacher_profile = index ** (-0.5 * float(self.b))
        c = 1.0 / math.sqrt(float(np.sum(lam * teacher_profile**2)))
        wstar = c * teacher_profile

        rng = np.random.default_rng(self.seed)
        w0 = self.sigma0 * rng.standard_normal(self.d) / math.sqrt(self.d)
        if np.sum(lam * w0 * wstar) < 0:
            w0 = -w0
        return Problem(lam=lam, wstar=wstar, w0=w0, spec=self)


@dataclass(frozen=True)
class Problem:
    """A concrete problem: spectrum ``lam``, teacher ``wstar`` and initial point ``w0``."""

    lam: np.ndarray
    wstar: np.ndarray
    w0: np.ndarray
    spec: PowerLawSpec | None = None

    def __post_init__(self):
        d = self.lam.size
        _require(self.lam.ndim == 1 and d >= 1, "lam must be a non-empty 1-D array")
        _require(self.wstar.shape == (d,), f"wstar must have shape ({d},), got {self.wstar.shape}")
        _require(self.w0.shape == (d,), f"w0 must have shape ({d},), got {self.w0.shape}")
        _require(bool(np.all(self.lam > 0)) and bool(np.all(np.isfinite(self.lam))), "lam must be finite and positive")
        _require(bool(np.all(np.diff(self.lam) <= 0)), "lam must be sorted in decreasing order")
        _require(bool(np.all(np.isfinite(self.wstar))), "wstar must be finite")
        _require(bool(np.all(np.isfinite(self.w0))), "w0 must be finite")

    @property
    def d(self) -> int:
        return self.lam.size

    def rho(self, k: int) -> float:
        """Return ``rho_k = w*^T Sigma^k w*``."""
        return float(np.sum(self.lam**k * self.wstar**2))

    def m(self, k: int, w: np.ndarray | None = None) -> float:
        """Return ``m_k = w^T Sigma^k w*`` (at ``w(0)`` by default)."""
        w = self.w0 if w is None else w
        return float(np.sum(self.lam**k * w * self.wstar))

    def q(self, k: int, w: np.ndarray | None = None) -> float:
        """Return ``q_k = w^T Sigma^k w`` (at ``w(0)`` by default)."""
        w = self.w0 if w is None else w
        return float(np.sum(self.lam**k * w * w))

    @property
    def rho1(self) -> float:
        return self.rho(1)

    def describe(self) -> dict:
        """Return the parameters and initial summary statistics as plain numbers."""
        summary = {}
        if self.spec is not None:
            summary.update(d=self.spec.d, a=self.spec.a, b=self.spec.b, sigma0=self.spec.sigma0, seed=self.spec.seed)
        summary.update(rho1=self.rho(1), rho2=self.rho(2), m1_initial=self.m(1), q1_initial=self.q(1))
        return summary
