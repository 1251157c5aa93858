"""Power-law spectra, teacher profiles, initial points and their summary statistics.

Data ``x ~ N(0, Sigma)`` with ``Sigma = diag(lam_1 >= lam_2 >= ...)`` and
``lam_i = i^(-a)``. The teacher has ``w*_i^2 = c^2 i^(-b)`` with ``c`` fixed
by ``rho_1 = w*^T Sigma w* = 1``.

Finite ``d``: the student starts at ``w(0) = s w* + sigma0 g / sqrt(d)`` with
``s = init_teacher_scale`` (0 by default), ``g ~ N(0, I_d)`` drawn from
``seed``, and the sign of the random part chosen so that ``m_1(0) > 0``.

Infinite ``d``: a random start has spectral measures that vanish as
``d -> inf``, so the start is deterministic, described by its measures: a
teacher part ``s w*`` (``s > 0`` is needed, otherwise ``m_1`` stays 0) and
an isotropic part uncorrelated with the teacher whose coordinates have
second moments ``v_i^2 = kappa i^(-e)``, ``e = init_isotropic_exponent``,
with ``kappa`` fixed by ``sum_i lam_i v_i^2 = sigma0^2``. Hence
``w_i(0)^2 = s^2 w*_i^2 + v_i^2`` and ``w_i(0) w*_i = s w*_i^2`` as measures
(the isotropic part averages out of the cross term, as a random sign
would). This needs ``a + b > 1`` and ``a + e > 1`` so that every sum is finite.

Summary statistics (``k >= 0``): ``q_k = w^T Sigma^k w``,
``m_k = w^T Sigma^k w*``, ``rho_k = w*^T Sigma^k w*``.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import zeta

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
    d : int or inf
        Dimension, an integer in ``[1, 1e8]``, or ``math.inf``.
    a : float
        Spectral decay, ``lam_i = i^(-a)``, ``0 <= a <= 10``.
    b : float
        Teacher (source) exponent, ``w*_i^2 ∝ i^(-b)``, ``-5 <= b <= 10``.
    sigma0 : float
        Scale of the random initial point, ``w(0) = sigma0 g / sqrt(d)``, ``0 < sigma0 <= 100``.
    seed : int
        Seed of the initial point, ``0 <= seed < 2^63`` (finite ``d`` only).
    init_teacher_scale : float
        Multiple ``s`` of the teacher in ``w(0)``, ``0 <= s <= 10``; must be
        positive for ``d = inf``.
    init_isotropic_exponent : float
        Decay ``e`` of the isotropic part of ``w(0)`` for ``d = inf``,
        ``v_i^2 ∝ i^(-e)``, ``-5 <= e <= 10`` with ``a + e > 1``.
    """

    d: int | float
    a: float
    b: float = 0.0
    sigma0: float = 0.1
    seed: int = 0
    init_teacher_scale: float = 0.0
    init_isotropic_exponent: float = 0.0

    @property
    def infinite(self) -> bool:
        return isinstance(self.d, float) and math.isinf(self.d) and self.d > 0

    def __post_init__(self):
        finite_dimension = isinstance(self.d, (int, np.integer)) and not isinstance(self.d, bool) and 1 <= self.d <= MAX_DIMENSION
        _require(
            finite_dimension or self.infinite,
            f"d = {self.d!r} is invalid: the dimension must be an integer in [1, {MAX_DIMENSION}] or inf",
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
        _require(
            _is_real(self.init_teacher_scale) and 0.0 <= self.init_teacher_scale <= 10.0,
            f"init_teacher_scale = {self.init_teacher_scale!r} is invalid: it must be a number in [0, 10]",
        )
        _require(
            _is_real(self.init_isotropic_exponent) and -5.0 <= self.init_isotropic_exponent <= 10.0,
            f"init_isotropic_exponent = {self.init_isotropic_exponent!r} is invalid: it must be a number in [-5, 10]",
        )
        if self.infinite:
            _require(
                self.a + self.b > 1.0,
                f"a + b = {self.a + self.b:g} is invalid for d = inf: rho_1 = sum_i i^(-a-b) is finite only for a + b > 1",
            )
            _require(
                self.a + self.init_isotropic_exponent > 1.0,
                f"a + init_isotropic_exponent = {self.a + self.init_isotropic_exponent:g} is invalid for d = inf: "
                "the isotropic part of w(0) has finite q_1 only when it exceeds 1",
            )
            _require(
                self.init_teacher_scale > 0.0,
                "init_teacher_scale = 0 is invalid for d = inf: with no teacher component m_1 stays 0 forever; "
                "set a small positive value such as 1e-3",
            )

    def build(self):
        """Return the concrete problem: a ``Problem`` for finite ``d``, an ``InfinitePowerLawProblem`` for ``d = inf``."""
        if self.infinite:
            return InfinitePowerLawProblem(self)
        index = np.arange(1, self.d + 1, dtype=np.float64)
        lam = index ** (-float(self.a))

        teacher_profile = index ** (-0.5 * float(self.b))
        c = 1.0 / math.sqrt(float(np.sum(lam * teacher_profile**2)))
        wstar = c * teacher_profile

        rng = np.random.default_rng(self.seed)
        random_part = self.sigma0 * rng.standard_normal(self.d) / math.sqrt(self.d)
        if np.sum(lam * random_part * wstar) < 0:
            random_part = -random_part
        w0 = self.init_teacher_scale * wstar + random_part
        return Problem(lam=lam, wstar=wstar, w0=w0, spec=self)


@dataclass(frozen=True)
class Problem:
    """A concrete problem: spectrum ``lam``, teacher ``wstar`` and initial point ``w0``."""

    lam: np.ndarray
    wstar: np.ndarray
    w0: np.ndarray
    spec: "PowerLawSpec | EmpiricalSpec | None" = None

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
        if isinstance(self.spec, PowerLawSpec):
            summary.update(d=self.spec.d, a=self.spec.a)
        elif self.spec is not None:
            summary.update(d=self.d, spectrum=self.spec.source)
            if self.spec.provenance:
                summary.update(self.spec.provenance)
        if self.spec is not None:
            summary.update(b=self.spec.b, sigma0=self.spec.sigma0, seed=self.spec.seed)
            if self.spec.init_teacher_scale:
                summary.update(init_teacher_scale=self.spec.init_teacher_scale)
        summary.update(rho1=self.rho(1), rho2=self.rho(2), m1_initial=self.m(1), q1_initial=self.q(1))
        return summary


class InfinitePowerLawProblem:
    """The ``d = inf`` problem of a ``PowerLawSpec``, described by moments and spectral measures.

    Every statistic is a Hurwitz zeta value: ``rho_k = c^2 zeta(k a + b)``,
    ``m_k(0) = s rho_k`` and ``q_k(0) = s^2 rho_k + kappa zeta(k a + e)``.
    """

    def __init__(self, spec: PowerLawSpec):
        self.spec = spec
        self.a = float(spec.a)
        self.b = float(spec.b)
        self.teacher_scale = float(spec.init_teacher_scale)
        self.isotropic_exponent = float(spec.init_isotropic_exponent)
        # c^2 and kappa from rho_1 = 1 and sum_i lam_i v_i^2 = sigma0^2.
        self.teacher_constant = 1.0 / float(zeta(self.a + self.b))
        self.isotropic_constant = float(spec.sigma0) ** 2 / float(zeta(self.a + self.isotropic_exponent))

    d = math.inf

    def rho(self, k: int) -> float:
        """Return ``rho_k = w*^T Sigma^k w* = c^2 zeta(k a + b)``."""
        return self.teacher_constant * float(zeta(k * self.a + self.b))

    def m(self, k: int) -> float:
        """Return ``m_k(0) = s rho_k``."""
        return self.teacher_scale * self.rho(k)

    def q(self, k: int) -> float:
        """Return ``q_k(0) = s^2 rho_k + kappa zeta(k a + e)``."""
        return self.teacher_scale**2 * self.rho(k) + self.isotropic_constant * float(zeta(k * self.a + self.isotropic_exponent))

    @property
    def rho1(self) -> float:
        return self.rho(1)

    def measure_terms(self) -> list:
        """Return the ``lam``-weighted spectral measures as power laws in the index.

        Three lists of ``(C, p)``, for ``lam w(0)^2``, ``lam w(0) w*`` and
        ``lam w*^2``; the atom weight at ``lam_i = i^(-a)`` is ``sum C i^(-p)``.
        """
        teacher = (self.teacher_constant, self.a + self.b)
        scale = self.teacher_scale
        return [
            [(scale**2 * teacher[0], teacher[1]), (self.isotropic_constant, self.a + self.isotropic_exponent)],
            [(scale * teacher[0], teacher[1])],
            [teacher],
        ]

    def describe(self) -> dict:
        """Return the parameters and initial summary statistics as plain numbers."""
        spec = self.spec
        return {
            "d": "inf", "a": spec.a, "b": spec.b, "sigma0": spec.sigma0,
            "init_teacher_scale": spec.init_teacher_scale, "init_isotropic_exponent": spec.init_isotropic_exponent,
            "rho1": self.rho(1), "rho2": self.rho(2), "m1_initial": self.m(1), "q1_initial": self.q(1),
        }


@dataclass(frozen=True)
class EmpiricalSpec:
    """A problem on a given (measured) spectrum, with the power-law teacher and random start of ``PowerLawSpec``.

    ``eigenvalues`` are sorted in decreasing order; the teacher profile
    ``w*_i^2 ∝ i^(-b)`` follows the rank ``i`` of the eigenvalue, and
    ``w(0) = s w* + sigma0 g / sqrt(d)`` as for finite power laws.
    ``fit_first`` and ``fit_last`` (default: the last eigenvalue) bound the
    index range of the power law fitted for comparison; a fit needs at least
    three eigenvalues in that range.
    """

    eigenvalues: tuple
    source: str
    b: float = 0.0
    sigma0: float = 0.1
    seed: int = 0
    init_teacher_scale: float = 0.0
    provenance: dict | None = None
    fit_first: int = 2
    fit_last: int | None = None

    infinite = False

    def __hash__(self):
        return hash((self.eigenvalues, self.source, self.b, self.sigma0, self.seed, self.init_teacher_scale))

    def __post_init__(self):
        values = np.asarray(self.eigenvalues, dtype=np.float64)
        _require(values.ndim == 1 and values.size >= 1, "eigenvalues must be a non-empty list of numbers")
        _require(bool(np.all(np.isfinite(values))) and bool(np.all(values > 0)), "eigenvalues must be finite and positive")
        _require(values.size <= MAX_DIMENSION, f"the spectrum has {values.size} eigenvalues, more than {MAX_DIMENSION}")
        last = values.size if self.fit_last is None else self.fit_last
        last_text = f"{last} (the default, the number of eigenvalues)" if self.fit_last is None else repr(last)
        # A spectrum of fewer than 3 eigenvalues has no fit, so its default range is accepted and never used.
        first_valid = isinstance(self.fit_first, int) and self.fit_first >= 1
        range_valid = values.size < 3 and self.fit_last is None or (
            isinstance(last, int) and self.fit_first < last <= values.size
        )
        _require(
            first_valid and range_valid,
            f"fit_first = {self.fit_first!r}, fit_last = {last_text} is invalid: the power-law fit range must "
            f"satisfy 1 <= fit_first < fit_last <= {values.size} (the number of eigenvalues)",
        )
        # Range checks shared with the power-law problem.
        PowerLawSpec(d=int(values.size), a=0.0, b=self.b, sigma0=self.sigma0, seed=self.seed,
                     init_teacher_scale=self.init_teacher_scale)

    @property
    def d(self) -> int:
        return len(self.eigenvalues)

    def build(self) -> "Problem":
        """Draw the initial point and return the concrete problem on this spectrum."""
        lam = np.sort(np.asarray(self.eigenvalues, dtype=np.float64))[::-1]
        index = np.arange(1, lam.size + 1, dtype=np.float64)
        teacher_profile = index ** (-0.5 * float(self.b))
        wstar = teacher_profile / math.sqrt(float(np.sum(lam * teacher_profile**2)))

        rng = np.random.default_rng(self.seed)
        random_part = self.sigma0 * rng.standard_normal(lam.size) / math.sqrt(lam.size)
        if np.sum(lam * random_part * wstar) < 0:
            random_part = -random_part
        w0 = self.init_teacher_scale * wstar + random_part
        return Problem(lam=lam, wstar=wstar, w0=w0, spec=self)
