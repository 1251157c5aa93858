"""Closed-form predictions of the three phases, compiled from the SymPy expressions of the derivation.

Every formula comes from :mod:`hierarchy.symbolic.phase_formulas` through
``sympy.lambdify`` (numpy and scipy functions), the same expression objects
that ``derivations/phase_predictions.py`` derives and checks; ``FORMULAS``
lists them. This module adds only the numerical glue: sums over spectral
nodes, one-dimensional root finding and the choice of a regime.

Spectral sums run over a :class:`SpectralNodes` object, which contains the
eigenvalues and the three ``lam``-weighted spectral measures of the start.
The nodes are exact for a finite problem of moderate size or with a single
distinct eigenvalue. Otherwise (large finite ``d`` and ``d = inf``) they are
a fine quadrature rule of the package.

Predictions (see the derivation for assumptions and validity windows):

- escape: :func:`predict_escape` (leading order, two-stage, corrected) and
  :func:`isotropic_escape_time` (exact for ``Σ = I``);
- relaxation near ``w*``: :func:`hessian_top_eigenvalue`,
  :func:`slowest_relaxation_rate`, :func:`relaxation_deviations`,
  :func:`predict_convergence_time`;
- spectral tail: :func:`tail_exponent`, :func:`tail_power_law` and its
  finite-``d`` forms, :func:`tail_loss_sum`, :func:`tail_loss_initial` and
  :func:`tail_loss_corrected`.
"""

import math
from dataclasses import dataclass

import mpmath
import numpy as np
import sympy
from scipy.optimize import brentq
from scipy.special import hyp2f1

from .spectrum import InfinitePowerLawProblem, PowerLawSpec
from .symbolic import phase_formulas as pf
from .truncation import build_spectral_rule, log_gauss_rule, spectral_measures

# Escape is the first time |m_1| / rho_1 reaches this level.
ESCAPE_LEVEL = 0.5
# Finite problems up to this dimension use their exact atoms as nodes (the
# feedback correction, quadratic in the number of nodes, uses a lower limit).
EXACT_ATOM_LIMIT = 4096
FEEDBACK_ATOM_LIMIT = 512
# Quadrature rule of the tail sums: (bins_per_decade, rule_order, exact_top, exact_bottom).
SUM_RULE = (12, 8, 16, 32)
# Coarser rule of the feedback correction, whose cost is quadratic in the number of nodes.
FEEDBACK_RULE = (8, 6, 16, 32)
# Horizon of a d = inf rule when the caller gives none.
DEFAULT_HORIZON = 1e12
# Maximum number of doublings when a root search looks for a bracket.
_MAX_DOUBLINGS = 200


def _upper_incomplete_gamma(s, x):
    """Return ``Gamma(s, x)`` for any real ``s`` and ``x > 0``, elementwise (scipy's ``gammaincc`` needs ``s > 0``)."""
    values = np.asarray(x, dtype=np.float64)
    orders = np.broadcast_to(np.asarray(s, dtype=np.float64), values.shape)
    result = np.empty(values.shape)
    for index in np.ndindex(values.shape):
        result[index] = float(mpmath.gammainc(float(orders[index]), float(values[index])))
    return result if result.shape else float(result)


def _gauss_hypergeometric(upper, lower, z):
    """Evaluate SymPy's ``hyper([a1, a2], [b1], z)`` with scipy's ``hyp2f1``."""
    if len(upper) != 2 or len(lower) != 1:
        raise ValueError(f"only 2F1 is supported, got {len(upper)}F{len(lower)}")
    return hyp2f1(upper[0], upper[1], lower[0], z)


_UPPER_GAMMA = sympy.Function("upper_incomplete_gamma")
_MODULES = [
    {"hyper": _gauss_hypergeometric, "upper_incomplete_gamma": _upper_incomplete_gamma},
    "scipy",
    "numpy",
]


@dataclass(frozen=True)
class CompiledFormula:
    """A function compiled from the expression ``phase_formulas.<name>`` with arguments ``arguments``."""

    name: str
    expression: sympy.Expr
    arguments: tuple
    function: object

    def __call__(self, *values):
        return self.function(*values)


def _compile(name: str, arguments: tuple) -> CompiledFormula:
    expression = getattr(pf, name)
    # scipy's printer writes uppergamma as gamma * gammaincc, which fails for s <= 0.
    printable = sympy.sympify(expression).replace(sympy.uppergamma, _UPPER_GAMMA)
    return CompiledFormula(name, expression, tuple(arguments), sympy.lambdify(arguments, printable, modules=_MODULES))


_NODE = (pf.lam, pf.weight_initial, pf.weight_cross, pf.weight_teacher)
_POWER_LAW = (pf.a, pf.b, pf.rho1, pf.c2, pf.t)
_ISOTROPIC_START = (pf.m_initial, pf.q_initial, pf.rho)

FORMULAS = {
    formula.name: formula
    for formula in (
        _compile("ISOTROPIC_RATIO", _ISOTROPIC_START),
        _compile("ISOTROPIC_TRANSIENT", _ISOTROPIC_START),
        _compile("ISOTROPIC_OVERLAP_SQUARED", (pf.isotropic_ratio, pf.isotropic_transient, pf.rho, pf.t)),
        _compile("ISOTROPIC_ESCAPE_CUBIC", (pf.isotropic_ratio, pf.isotropic_transient, pf.rho, pf.m_escape)),
        _compile("ISOTROPIC_ESCAPE_TIME_ASYMPTOTIC", (*_ISOTROPIC_START, pf.m_escape)),
        _compile("ESCAPE_TIME_LEADING", (pf.m_initial, pf.rho2, pf.m_escape)),
        _compile("SECULAR_SUMMAND", (pf.lam, pf.weight_teacher, pf.mu, pf.rho1)),
        _compile("RESOLVENT_CROSS_SUMMAND", (pf.lam, pf.weight_cross, pf.mu, pf.rho1)),
        _compile("SECULAR_SLOPE_SUMMAND", (pf.lam, pf.weight_teacher, pf.mu, pf.rho1)),
        _compile("TOP_AMPLITUDE", (pf.resolvent_cross_sum, pf.secular_slope_sum)),
        _compile("LINEAR_PHI", (pf.lam, pf.rho1, pf.t)),
        _compile("LINEAR_PSI", (pf.lam, pf.rho1, pf.mu, pf.amplitude, pf.t)),
        _compile("RELAXED_PHI", (pf.lam, pf.log_propagator)),
        _compile("OVERLAP_SUMMAND", (pf.phi, pf.psi, *_NODE)),
        _compile("NORM_SUMMAND", (pf.phi, pf.psi, *_NODE)),
        _compile("SECOND_NORM_SUMMAND", (pf.phi, pf.psi, *_NODE)),
        _compile("SATURATION_CONSTANT", (pf.rho2, pf.rho3, pf.switch_second_norm)),
        _compile("ESCAPE_TIME_TWO_STAGE", (pf.switch_time, pf.switch_overlap, pf.rho2, pf.m_escape)),
        _compile("ESCAPE_TIME_CORRECTED", (pf.switch_time, pf.switch_overlap, pf.rho2, pf.m_escape, pf.saturation)),
        _compile("HESSIAN_SECULAR_SUMMAND", (pf.lam, pf.weight_teacher, pf.nu, pf.rho1)),
        _compile("OVERLAP_DEVIATION", (pf.bare_overlap, pf.tail_norm)),
        _compile("NORM_DEVIATION", (pf.bare_overlap,)),
        _compile("DRIVE_SUM_DEVIATION", (pf.bare_overlap, pf.tail_norm)),
        _compile("BARE_OVERLAP_SUMMAND", (*_NODE, pf.rho1, pf.t)),
        _compile("TAIL_NORM_SUMMAND", (*_NODE, pf.rho1, pf.t)),
        _compile("TAIL_NORM_SLOPE_SUMMAND", (*_NODE, pf.rho1, pf.t)),
        _compile("BARE_OVERLAP_INTEGRAL_SUMMAND", (*_NODE, pf.rho1, pf.t)),
        _compile("CONVOLUTION_KERNEL", (pf.lam, pf.rate, pf.rho1, pf.t)),
        _compile("FEEDBACK_ALPHA_TERM", (pf.bare_overlap_integral, pf.tail_norm_slope)),
        _compile("FEEDBACK_SIGMA_SUMMAND", (*_NODE, pf.rho1, pf.t, pf.convolution)),
        _compile("FEEDBACK_SQUARE_SUMMAND", (*_NODE, pf.convolution)),
        _compile(
            "TAIL_LOSS_CORRECTED",
            (pf.rho1, pf.tail_norm, pf.bare_overlap, pf.feedback_alpha, pf.feedback_sigma, pf.feedback_square),
        ),
        _compile("TAIL_EXPONENT", (pf.a, pf.b)),
        _compile("TAIL_SUMMAND", (*_NODE, pf.rho1, pf.t)),
        _compile("TAIL_INITIAL_SUMMAND", (*_NODE, pf.rho1, pf.t)),
        _compile("TAIL_POWER_LAW", _POWER_LAW),
        _compile("TAIL_FINITE_DIMENSION_SHIFT", (pf.a, pf.b, pf.d, pf.rho1, pf.c2)),
        _compile("TAIL_CONTINUUM", (pf.a, pf.b, pf.d, pf.rho1, pf.c2, pf.t)),
        _compile("TAIL_LOGARITHMIC", (pf.a, pf.d, pf.rho1, pf.c2, pf.t)),
        _compile("TAIL_BOTTOM_CONTINUUM", (pf.a, pf.b, pf.d, pf.rho1, pf.c2, pf.t)),
        _compile("TAIL_LAST_MODE", (pf.a, pf.b, pf.d, pf.rho1, pf.c2, pf.t)),
        _compile("INITIAL_TAIL_FACTOR", (pf.teacher_scale, pf.isotropic_ratio_to_teacher)),
        _compile(
            "TAIL_FEEDBACK_RATIO_POWER_LAW",
            (pf.a, pf.b, pf.rho1, pf.c2, pf.teacher_scale, pf.isotropic_ratio_to_teacher, pf.t),
        ),
        _compile(
            "TAIL_POWER_LAW_CORRECTED",
            (pf.a, pf.b, pf.rho1, pf.c2, pf.teacher_scale, pf.isotropic_ratio_to_teacher, pf.t),
        ),
    )
}
_F = FORMULAS


# ---------------------------------------------------------------------------
# Spectral nodes.


@dataclass(frozen=True)
class SpectralNodes:
    """Eigenvalue nodes with the weights of ``lam w(0)^2``, ``lam w(0) w*`` and ``lam w*^2``.

    ``exact`` is true when the nodes are the distinct eigenvalues (every sum
    is then exact) and false for a quadrature rule.
    """

    lam: np.ndarray
    initial: np.ndarray
    cross: np.ndarray
    teacher: np.ndarray
    rho1: float
    exact: bool

    def rho(self, k: int) -> float:
        """Return ``rho_k = sum_i lam_i^k w*_i^2`` over the nodes."""
        return float(np.sum(self.lam ** (k - 1) * self.teacher))

    @property
    def q1(self) -> float:
        return float(np.sum(self.initial))

    @property
    def m1(self) -> float:
        return float(np.sum(self.cross))


def spectral_nodes(
    problem, horizon: float | None = None, rule=SUM_RULE, exact_atom_limit: int = EXACT_ATOM_LIMIT
) -> SpectralNodes:
    """Return the nodes of ``problem`` on which the predictions sum.

    A finite problem whose eigenvalues are all equal (``a = 0``) is lumped into
    one exact node. Up to ``exact_atom_limit`` eigenvalues every atom is a
    node. Beyond that, and for ``d = inf``, the nodes are the quadrature
    ``rule = (bins_per_decade, rule_order, exact_top, exact_bottom)``. A
    ``d = inf`` rule covers the times up to ``horizon`` (``DEFAULT_HORIZON``
    when ``None``).
    """
    bins_per_decade, rule_order, exact_top, exact_bottom = rule
    if isinstance(problem, InfinitePowerLawProblem):
        horizon = DEFAULT_HORIZON if horizon is None else max(float(horizon), 1.0)
        spectral_rule = build_spectral_rule(problem, bins_per_decade, rule_order, exact_top, 0, t_end=horizon)
        return SpectralNodes(spectral_rule.nodes, *spectral_rule.weights, problem.rho1, exact=False)

    lam = np.asarray(problem.lam, dtype=np.float64)
    measures = spectral_measures(problem)
    if lam[0] == lam[-1]:
        return SpectralNodes(lam[:1].copy(), *measures.sum(axis=1)[:, None], problem.rho1, exact=True)
    if lam.size <= exact_atom_limit:
        return SpectralNodes(lam.copy(), *measures, problem.rho1, exact=True)
    spectral_rule = log_gauss_rule(lam, measures, bins_per_decade, rule_order, exact_top, exact_bottom)
    return SpectralNodes(spectral_rule.nodes, *spectral_rule.weights, problem.rho1, exact=False)


# ---------------------------------------------------------------------------
# Escape.


def escape_time_leading(m1_initial: float, rho1: float, rho2: float, level: float = ESCAPE_LEVEL) -> float | None:
    """Return ``ln(m_esc / |m_1(0)|) / (2 rho_2)``, or ``None`` where it does not apply.

    ``None`` for ``m_1(0) = 0``, ``|m_1(0)| >= m_esc = level rho_1``,
    ``rho_2 <= 0`` or a non-finite argument.
    """
    m_escape = level * rho1
    start = abs(m1_initial)
    if not all(math.isfinite(value) for value in (start, m_escape, rho2)):
        return None
    if start == 0.0 or start >= m_escape or rho2 <= 0.0:
        return None
    return float(_F["ESCAPE_TIME_LEADING"](start, rho2, m_escape))


def isotropic_escape_time(m1_initial: float, q1_initial: float, rho: float, level: float = ESCAPE_LEVEL) -> float | None:
    """Return the exact escape time of the isotropic system ``Σ = I`` from ``(m_1(0), q_1(0))``.

    The isotropic flow has the closed-form solution of the derivation; the
    escape ``m^2 = m_esc^2`` is the smallest root ``x = e^{2 rho t} >= 1`` of a
    cubic. Returns ``0`` when ``|m_1(0)| >= m_esc`` and ``None`` when the start
    has no norm orthogonal to ``w*`` (``q_1(0) <= m_1(0)^2 / rho``) or the
    overlap never reaches the level.
    """
    m_escape = level * rho
    start = abs(m1_initial)
    if start >= m_escape:
        return 0.0
    if start == 0.0 or not q1_initial > start**2 / rho:
        return None
    ratio = float(_F["ISOTROPIC_RATIO"](start, q1_initial, rho))
    transient = float(_F["ISOTROPIC_TRANSIENT"](start, q1_initial, rho))
    coefficients = np.asarray(_F["ISOTROPIC_ESCAPE_CUBIC"](ratio, transient, rho, m_escape), dtype=np.float64)
    roots = np.roots(coefficients)
    growth = np.sort(roots[(np.abs(roots.imag) <= 1e-9 * np.abs(roots)) & (roots.real >= 1.0)].real)
    if growth.size == 0:
        return None
    return float(math.log(growth[0]) / (2.0 * rho))


@dataclass(frozen=True)
class EscapePrediction:
    """Predicted escape times of one start, with the quantities of the matched stages.

    Attributes
    ----------
    level : float
        Escape means ``|m_1| / rho_1 >= level``.
    leading : float or None
        ``ln(m_esc / |m_1(0)|) / (2 rho_2)``.
    two_stage : float or None
        Linear growth (or norm relaxation) until ``q_1 = rho_1/3``, then growth
        at ``2 rho_2`` from ``m_s`` to ``m_esc``.
    corrected : float or None
        ``two_stage`` with the saturation ``d ln m_1/dt = 2 rho_2 (1 - k m_1^2)``
        of the saddle stage; for ``Σ = I`` the exact isotropic time.
    regime : str
        ``linear growth`` (``q_1(0) < rho_1/3``), ``norm relaxation``
        (``q_1(0) >= rho_1/3``), ``escape in the linear regime`` (``m_1``
        reaches ``m_esc`` before ``q_1`` reaches ``rho_1/3``) or ``isotropic exact``.
    growth_rate, amplitude : float or None
        Top eigenvalue ``mu`` of the linear regime and the amplitude of ``m_1 ~ amplitude e^{mu t}``.
    switch_time, switch_overlap, switch_second_norm : float or None
        ``t_s``, ``|m_1(t_s)|`` and ``q_2(t_s)`` where the saddle stage starts.
    saturation_constant : float or None
        ``k = 3 rho_3^2 / (rho_2^3 (2 rho_2 + 3 q_2(t_s)))``.
    message : str
        Why a prediction is ``None``, empty otherwise.
    """

    level: float
    leading: float | None
    two_stage: float | None
    corrected: float | None
    regime: str
    growth_rate: float | None = None
    amplitude: float | None = None
    switch_time: float | None = None
    switch_overlap: float | None = None
    switch_second_norm: float | None = None
    saturation_constant: float | None = None
    message: str = ""


def _sum(formula: str, *arguments) -> float:
    return float(np.sum(_F[formula](*arguments)))


def linear_growth_rate(nodes: SpectralNodes) -> float | None:
    """Return the top eigenvalue ``mu`` of ``rho_1 Σ + 2 Σw* w*ᵀΣ``, the root of ``1 = sum 2 lam W / (mu - rho_1 lam)``.

    ``mu`` lies in ``(rho_1 lam_top, rho_1 lam_top + 2 rho_2]`` with ``lam_top`` the
    largest node carrying teacher weight. Returns ``None`` when no root lies above.
    """
    carrying = nodes.teacher > 0.0
    if not np.any(carrying):
        return None
    top = float(np.max(nodes.lam[carrying])) * nodes.rho1
    upper = top + 2.0 * nodes.rho(2)

    def secular(value):
        return _sum("SECULAR_SUMMAND", nodes.lam, nodes.teacher, value, nodes.rho1) - 1.0

    lower = top * (1.0 + 1e-14) + 1e-300
    if not secular(lower) > 0.0:
        return None
    return float(brentq(secular, lower, upper, xtol=1e-15, rtol=1e-14))


def _linear_statistics(nodes: SpectralNodes, growth_rate: float, amplitude: float, time: float):
    """Return ``(m_1, q_1, q_2)`` of the linear regime at ``time``."""
    phi = _F["LINEAR_PHI"](nodes.lam, nodes.rho1, time)
    psi = _F["LINEAR_PSI"](nodes.lam, nodes.rho1, growth_rate, amplitude, time)
    node = (nodes.lam, nodes.initial, nodes.cross, nodes.teacher)
    return (
        _sum("OVERLAP_SUMMAND", phi, psi, *node),
        _sum("NORM_SUMMAND", phi, psi, *node),
        _sum("SECOND_NORM_SUMMAND", phi, psi, *node),
    )


def _bracket_upward(function, start: float) -> float | None:
    """Return a point where ``function`` is non-negative, doubling from ``start``; ``None`` if none is found."""
    point = start
    for _ in range(_MAX_DOUBLINGS):
        value = function(point)
        if math.isfinite(value) and value >= 0.0:
            return point
        point *= 2.0
    return None


def predict_escape(problem, level: float = ESCAPE_LEVEL, nodes: SpectralNodes | None = None) -> EscapePrediction:
    """Predict the escape time of ``problem``: leading order, two-stage and corrected.

    Stage 1 is the linear regime ``dw/dt = (rho_1 Σ + 2 Σw* w*ᵀΣ) w`` with its
    top mode, until ``q_1 = rho_1/3``. A start with ``q_1(0) >= rho_1/3``
    instead relaxes its norm at once, to ``sum W00 e^{2 lam A} = rho_1/3``.
    Stage 2 is the saddle, where ``m_1`` grows at ``2 rho_2`` and saturates as
    ``1 - k m_1^2``. For a problem with a single distinct eigenvalue 1
    (``Σ = I``) the corrected time is the exact isotropic one.
    """
    nodes = spectral_nodes(problem, horizon=1e3) if nodes is None else nodes
    rho1 = nodes.rho1
    rho2, rho3 = nodes.rho(2), nodes.rho(3)
    m_escape = level * rho1
    m_start = abs(nodes.m1)
    leading = escape_time_leading(m_start, rho1, rho2, level)

    if nodes.exact and nodes.lam.size == 1 and nodes.lam[0] == 1.0:
        exact = isotropic_escape_time(m_start, nodes.q1, rho1, level)
        return EscapePrediction(level, leading, exact, exact, "isotropic exact")
    if m_start >= m_escape:
        return EscapePrediction(level, leading, 0.0, 0.0, "escaped at the start", message="|m_1(0)| >= m_esc")
    if m_start == 0.0:
        return EscapePrediction(level, None, None, None, "no overlap", message="m_1(0) = 0: the overlap never grows")

    if nodes.q1 < rho1 / 3.0:
        prediction = _escape_from_linear_growth(nodes, level, leading)
        if prediction.regime != "linear growth":
            return prediction
        switch_time, switch_overlap, switch_second_norm = (
            prediction.switch_time, prediction.switch_overlap, prediction.switch_second_norm,
        )
        growth_rate, amplitude, regime = prediction.growth_rate, prediction.amplitude, prediction.regime
    else:
        switch_time, switch_overlap, switch_second_norm = _norm_relaxation(nodes)
        growth_rate = amplitude = None
        regime = "norm relaxation"

    if switch_overlap == 0.0:
        return EscapePrediction(level, leading, None, None, regime, message="the overlap vanishes at the saddle")
    two_stage = float(_F["ESCAPE_TIME_TWO_STAGE"](switch_time, switch_overlap, rho2, m_escape))
    saturation = float(_F["SATURATION_CONSTANT"](rho2, rho3, switch_second_norm))
    corrected = None
    message = ""
    if saturation * m_escape**2 < 1.0 and switch_overlap < m_escape:
        corrected = float(_F["ESCAPE_TIME_CORRECTED"](switch_time, switch_overlap, rho2, m_escape, saturation))
    else:
        message = (
            f"the saturation k m_esc^2 = {saturation * m_escape**2:.3g} >= 1 (or m_s >= m_esc): the saddle-stage "
            "model does not reach the escape level"
        )
    return EscapePrediction(
        level, leading, two_stage, corrected, regime, growth_rate, amplitude,
        switch_time, switch_overlap, switch_second_norm, saturation, message,
    )


def _escape_from_linear_growth(nodes: SpectralNodes, level: float, leading: float | None) -> EscapePrediction:
    """Stage 1 for ``q_1(0) < rho_1/3``: the top mode of the linear regime until ``q_1 = rho_1/3``."""
    rho1 = nodes.rho1
    m_escape = level * rho1
    growth_rate = linear_growth_rate(nodes)
    if growth_rate is None:
        return EscapePrediction(level, leading, None, None, "no growth", message="the linear regime has no growing mode")
    resolvent = _sum("RESOLVENT_CROSS_SUMMAND", nodes.lam, nodes.cross, growth_rate, rho1)
    slope = _sum("SECULAR_SLOPE_SUMMAND", nodes.lam, nodes.teacher, growth_rate, rho1)
    amplitude = float(_F["TOP_AMPLITUDE"](resolvent, slope))

    def norm_excess(time):
        return _linear_statistics(nodes, growth_rate, amplitude, time)[1] - rho1 / 3.0

    upper = _bracket_upward(norm_excess, 1.0 / growth_rate)
    if upper is None:
        return EscapePrediction(
            level, leading, None, None, "no growth", growth_rate, amplitude,
            message="q_1 of the linear regime never reaches rho_1/3",
        )
    switch_time = float(brentq(norm_excess, 0.0, upper, xtol=1e-12))
    switch_overlap, _, switch_second_norm = _linear_statistics(nodes, growth_rate, amplitude, switch_time)
    switch_overlap = abs(switch_overlap)

    if switch_overlap >= m_escape:
        def overlap_excess(time):
            return abs(_linear_statistics(nodes, growth_rate, amplitude, time)[0]) - m_escape

        escape = float(brentq(overlap_excess, 0.0, switch_time, xtol=1e-12))
        return EscapePrediction(
            level, leading, escape, escape, "escape in the linear regime", growth_rate, amplitude,
            switch_time, switch_overlap, switch_second_norm,
        )
    return EscapePrediction(
        level, leading, None, None, "linear growth", growth_rate, amplitude,
        switch_time, switch_overlap, switch_second_norm,
    )


def _norm_relaxation(nodes: SpectralNodes):
    """Stage 1 for ``q_1(0) >= rho_1/3``: ``(0, |m_s|, q_2)`` after the instantaneous norm relaxation."""
    node = (nodes.lam, nodes.initial, nodes.cross, nodes.teacher)

    def norm_excess(log_propagator):
        phi = _F["RELAXED_PHI"](nodes.lam, log_propagator)
        return _sum("NORM_SUMMAND", phi, 0.0, *node) - nodes.rho1 / 3.0

    lower = -1.0
    for _ in range(_MAX_DOUBLINGS):
        if norm_excess(lower) < 0.0:
            break
        lower *= 2.0
    log_propagator = float(brentq(norm_excess, lower, 0.0, xtol=1e-14)) if norm_excess(0.0) > 0.0 else 0.0
    phi = _F["RELAXED_PHI"](nodes.lam, log_propagator)
    overlap = abs(_sum("OVERLAP_SUMMAND", phi, 0.0, *node))
    second_norm = _sum("SECOND_NORM_SUMMAND", phi, 0.0, *node)
    return 0.0, overlap, second_norm


# ---------------------------------------------------------------------------
# Relaxation near ±w*.


def hessian_top_eigenvalue(nodes: SpectralNodes) -> float:
    """Return the largest eigenvalue of ``2 rho_1 Σ + 4 Σw* w*ᵀΣ``, the root above ``2 rho_1 lam_top`` of its secular equation."""
    carrying = nodes.teacher > 0.0
    top = 2.0 * nodes.rho1 * float(np.max(nodes.lam[carrying]))
    upper = top + 4.0 * nodes.rho(2)

    def secular(value):
        return _sum("HESSIAN_SECULAR_SUMMAND", nodes.lam, nodes.teacher, value, nodes.rho1) - 1.0

    return float(brentq(secular, top * (1.0 + 1e-14) + 1e-300, upper, xtol=1e-15, rtol=1e-14))


def slowest_relaxation_rate(problem) -> float:
    """Return the smallest eigenvalue of the Hessian ``2 rho_1 Σ + 4 Σw* w*ᵀΣ`` of a finite problem.

    With a repeated smallest eigenvalue ``lam_d`` (``a = 0``) the rank-one term
    leaves ``2 rho_1 lam_d`` in place. Otherwise the eigenvalue is the root of
    the secular equation between ``2 rho_1 lam_d`` and ``2 rho_1 lam_{d-1}``.
    The loss then decays as ``exp(-2 nu_min t)``.
    """
    lam = np.asarray(problem.lam, dtype=np.float64)
    teacher = lam * np.asarray(problem.wstar, dtype=np.float64) ** 2
    rho1 = problem.rho1
    bottom = 2.0 * rho1 * lam[-1]
    if lam.size == 1:
        return float(bottom + 4.0 * lam[0] * teacher[0])
    if lam[-2] == lam[-1] or teacher[-1] == 0.0:
        return float(bottom)
    above = 2.0 * rho1 * lam[-2]

    def secular(value):
        return _sum("HESSIAN_SECULAR_SUMMAND", lam, teacher, value, rho1) - 1.0

    # The secular function runs from +inf just above the bottom pole to -inf just
    # below the next one; 1e-10 of the gap keeps both ends representable.
    low = bottom + (above - bottom) * 1e-10
    high = above - (above - bottom) * 1e-10
    return float(brentq(secular, low, high, xtol=1e-300, rtol=1e-15))


def relaxation_deviations(nodes: SpectralNodes, t) -> tuple:
    """Return ``(m_1 - rho_1, q_1 - rho_1)`` predicted near ``w*`` at times ``t`` (overlap sign taken positive).

    ``delta_m = D/3 - Q/2`` and ``delta_q = 2 D/3`` with the bare overlap
    deviation ``D(t) = sum (W0* - W**) e^{-2 rho_1 lam t}`` and the tail norm
    ``Q(t) = sum (W00 - 2 W0* + W**) e^{-4 rho_1 lam t}``. Valid after the
    escape, once the modes that relax faster than ``1/t`` follow the slow ones.
    """
    times = np.atleast_1d(np.asarray(t, dtype=np.float64))
    overlap = np.array([_bare_overlap(nodes, time) for time in times])
    tail = np.array([_tail_norm(nodes, time) for time in times])
    delta_m = _F["OVERLAP_DEVIATION"](overlap, tail)
    delta_q = _F["NORM_DEVIATION"](overlap)
    return np.broadcast_to(delta_m, times.shape).copy(), np.broadcast_to(delta_q, times.shape).copy()


def predict_convergence_time(
    nodes: SpectralNodes, tolerance: float, start: float, horizon: float
) -> float | None:
    """Predict the last time in ``[start, horizon]`` at which ``max(|delta_m|, |delta_q|) / rho_1 = tolerance``.

    Uses :func:`relaxation_deviations`, so it describes a convergence that the
    spectral tail delays (``t_conv`` well after the escape ``start``). Returns
    ``None`` when the deviation is already below ``tolerance`` at ``start``
    (the tail does not set the convergence) or still above it at ``horizon``.
    """
    def excess(log_time):
        delta_m, delta_q = relaxation_deviations(nodes, math.exp(log_time))
        return max(abs(float(delta_m[0])), abs(float(delta_q[0]))) / nodes.rho1 - tolerance

    low, high = math.log(start), math.log(horizon)
    grid = np.linspace(low, high, 400)
    values = np.array([excess(point) for point in grid])
    if values[0] < 0.0 or values[-1] >= 0.0:
        return None
    last_above = int(np.flatnonzero(values >= 0.0)[-1])
    return float(math.exp(brentq(excess, grid[last_above], grid[last_above + 1], xtol=1e-12)))


# ---------------------------------------------------------------------------
# Spectral tail.


def tail_exponent(a: float, b: float) -> float:
    """Return the power-law exponent ``(a + b - 1) / a`` of the tail loss (meaningful for ``a > 0``, ``a + b > 1``)."""
    return float(_F["TAIL_EXPONENT"](a, b))


def tail_power_law(a: float, b: float, rho1: float, c2: float, t) -> np.ndarray:
    """Return ``(rho_1 c^2 / a) Gamma(gamma) (4 rho_1 t)^(-gamma)``, the ``d = inf`` tail loss for ``a + b > 1``, ``t >> 1``."""
    return np.asarray(_F["TAIL_POWER_LAW"](a, b, rho1, c2, np.asarray(t, dtype=np.float64)), dtype=np.float64)


def tail_power_law_finite(a: float, b: float, d: float, rho1: float, c2: float, t) -> np.ndarray:
    """Return the power law plus its finite-``d`` shift ``- rho_1 c^2 d^(1-a-b) / (a+b-1)`` (``1 << t << d^a``)."""
    return tail_power_law(a, b, rho1, c2, t) + float(_F["TAIL_FINITE_DIMENSION_SHIFT"](a, b, d, rho1, c2))


def tail_loss_continuum(a: float, b: float, d: float, rho1: float, c2: float, t) -> np.ndarray:
    """Return ``rho_1 (c^2/a) (4 rho_1 t)^(-gamma) Gamma(gamma, 4 rho_1 t / d^a)``, the tail sum as an integral over ``i in (0, d]``.

    It covers every ``a > 0`` and ``b`` (also ``a + b <= 1``) from ``t >> 1`` up
    to ``t ~ d^(a+1)``, where the discreteness of the bottom eigenvalues takes over.
    """
    times = np.asarray(t, dtype=np.float64)
    return np.asarray(_F["TAIL_CONTINUUM"](a, b, d, rho1, c2, times), dtype=np.float64)


def tail_loss_logarithmic(a: float, d: float, rho1: float, c2: float, t) -> np.ndarray:
    """Return ``(rho_1 c^2/a) (ln(d^a / (4 rho_1 t)) - gamma_E)``, the tail for ``a + b = 1`` and ``1 << t << d^a``."""
    return np.asarray(_F["TAIL_LOGARITHMIC"](a, d, rho1, c2, np.asarray(t, dtype=np.float64)), dtype=np.float64)


def tail_loss_bottom(a: float, b: float, d: float, rho1: float, c2: float, t) -> np.ndarray:
    """Return ``c^2 d^(1-b) e^{-4 rho_1 t / d^a} / (4 a t)``, the tail for ``d^a << t << d^(a+1)``."""
    return np.asarray(_F["TAIL_BOTTOM_CONTINUUM"](a, b, d, rho1, c2, np.asarray(t, dtype=np.float64)), dtype=np.float64)


def tail_loss_last_mode(a: float, b: float, d: float, rho1: float, c2: float, t) -> np.ndarray:
    """Return ``rho_1 c^2 d^(-a-b) e^{-4 rho_1 t / d^a}``, the last eigenvalue alone (``t >> d^(a+1)``)."""
    return np.asarray(_F["TAIL_LAST_MODE"](a, b, d, rho1, c2, np.asarray(t, dtype=np.float64)), dtype=np.float64)


def tail_power_law_corrected(a, b, rho1, c2, teacher_scale, isotropic_ratio, t) -> np.ndarray:
    """Return the ``d = inf`` power law with the start factor ``(1-s)^2 + eta`` and the feedback ratio ``r(t) ∝ t^(-gamma)``.

    ``eta`` is the ratio of the uncorrelated start second moments to ``w*_i^2``,
    constant when the start's isotropic profile has the teacher's exponent.
    Valid for ``0 < gamma < 1`` and ``t >> 1``; the remaining error is ``O(1/t)``.
    """
    times = np.asarray(t, dtype=np.float64)
    return np.asarray(
        _F["TAIL_POWER_LAW_CORRECTED"](a, b, rho1, c2, teacher_scale, isotropic_ratio, times), dtype=np.float64
    )


def _node_sum(formula: str, nodes: SpectralNodes, time: float) -> float:
    return _sum(formula, nodes.lam, nodes.initial, nodes.cross, nodes.teacher, nodes.rho1, time)


def _bare_overlap(nodes: SpectralNodes, time: float) -> float:
    return _node_sum("BARE_OVERLAP_SUMMAND", nodes, time)


def _tail_norm(nodes: SpectralNodes, time: float) -> float:
    return _node_sum("TAIL_NORM_SUMMAND", nodes, time)


def tail_loss_sum(nodes: SpectralNodes, t) -> np.ndarray:
    """Return the leading tail loss ``rho_1 sum_i lam_i w*_i^2 exp(-4 rho_1 lam_i t)`` at times ``t``."""
    times = np.asarray(t, dtype=np.float64)
    values = [_node_sum("TAIL_SUMMAND", nodes, time) for time in times.ravel()]
    return np.asarray(values, dtype=np.float64).reshape(times.shape)


def tail_loss_initial(nodes: SpectralNodes, t) -> np.ndarray:
    """Return ``rho_1 sum_i lam_i (w*_i - w_i(0))^2 exp(-4 rho_1 lam_i t)``, the tail sum that keeps the start.

    The slow modes relax from ``w_i(0)``, not from 0, so their squared distance
    to ``w*_i`` is ``(w*_i - w_i(0))^2``. With ``w(0) = s w* + v`` this is the
    factor ``(1 - s)^2 + v_i^2 / w*_i^2`` on the leading sum.
    """
    times = np.asarray(t, dtype=np.float64)
    values = [_node_sum("TAIL_INITIAL_SUMMAND", nodes, time) for time in times.ravel()]
    return np.asarray(values, dtype=np.float64).reshape(times.shape)


def _convolutions(nodes: SpectralNodes, time: float) -> np.ndarray:
    """Return ``int_0^t e^{-2 rho_1 lam_i (t - s)} sigma(s) ds`` for every node ``i``, ``sigma = -4D/3 - Q``."""
    rho1 = nodes.rho1
    overlap_coefficients = -4.0 / 3.0 * (nodes.cross - nodes.teacher)
    tail_coefficients = -(nodes.initial - 2.0 * nodes.cross + nodes.teacher)
    result = np.zeros(nodes.lam.size)
    for rates, coefficients in ((2.0 * rho1 * nodes.lam, overlap_coefficients), (4.0 * rho1 * nodes.lam, tail_coefficients)):
        node_grid, rate_grid = np.broadcast_arrays(nodes.lam[:, None], rates[None, :])
        with np.errstate(invalid="ignore", divide="ignore"):
            kernel = _F["CONVOLUTION_KERNEL"](node_grid, rate_grid, rho1, time)
        equal = 2.0 * rho1 * node_grid == rate_grid
        kernel = np.where(equal, time * np.exp(-rate_grid * time), kernel)
        result += kernel @ coefficients
    return result


def feedback_nodes(problem, horizon: float | None = None) -> SpectralNodes:
    """Return the nodes for :func:`tail_loss_corrected`: ``FEEDBACK_RULE`` beyond ``FEEDBACK_ATOM_LIMIT`` atoms."""
    return spectral_nodes(problem, horizon, FEEDBACK_RULE, FEEDBACK_ATOM_LIMIT)


def tail_loss_corrected(nodes: SpectralNodes, t) -> np.ndarray:
    """Return the tail loss with the start and the first-order rank-one (Volterra) feedback.

    ``L = rho_1 (Q + X_alpha + X_sigma + Y) + 2 delta_m^2 + 3 delta_m Q + 3/4 Q^2``
    with ``delta_m = D/3 - Q/2``: ``X_alpha`` is the shift of every mode's rate
    by ``alpha + 2 rho_1 = -2 D``, ``X_sigma`` and ``Y`` come from the drive
    ``sigma = alpha + beta = -4D/3 - Q`` acting on the teacher direction. The
    relative size of the correction is ``t^(-gamma)`` on a power law, and what
    it leaves is ``O(1/t)`` (the time shift of the escape). Cost ``O(K^2)`` per
    time for ``K`` nodes.
    """
    times = np.asarray(t, dtype=np.float64)
    node = (nodes.lam, nodes.initial, nodes.cross, nodes.teacher)
    values = []
    for time in times.ravel():
        tail = _tail_norm(nodes, time)
        overlap = _bare_overlap(nodes, time)
        overlap_integral = _node_sum("BARE_OVERLAP_INTEGRAL_SUMMAND", nodes, time)
        tail_slope = _node_sum("TAIL_NORM_SLOPE_SUMMAND", nodes, time)
        convolution = _convolutions(nodes, time)
        alpha_term = float(_F["FEEDBACK_ALPHA_TERM"](overlap_integral, tail_slope))
        sigma_term = _sum("FEEDBACK_SIGMA_SUMMAND", *node, nodes.rho1, time, convolution)
        square_term = _sum("FEEDBACK_SQUARE_SUMMAND", *node, convolution)
        values.append(float(_F["TAIL_LOSS_CORRECTED"](nodes.rho1, tail, overlap, alpha_term, sigma_term, square_term)))
    return np.asarray(values, dtype=np.float64).reshape(times.shape)


@dataclass(frozen=True)
class PowerLawParameters:
    """``lam_i = i^(-a)``, ``w*_i^2 = c2 i^(-b)``, dimension ``d`` (``inf`` allowed), ``rho_1``, and the start.

    ``teacher_scale`` is ``s`` in ``w(0) = s w* + ...``. ``isotropic_ratio`` is
    ``eta``, the ratio of the uncorrelated start second moments to ``w*_i^2``
    when that ratio is the same for every ``i``, and ``None`` otherwise.
    """

    a: float
    b: float
    d: float
    c2: float
    rho1: float
    teacher_scale: float
    isotropic_ratio: float | None

    @property
    def exponent(self) -> float | None:
        if self.a <= 0.0 or self.a + self.b <= 1.0:
            return None
        return tail_exponent(self.a, self.b)


def power_law_parameters(problem) -> PowerLawParameters | None:
    """Return the power-law description of a problem built from a ``PowerLawSpec``, ``None`` for any other problem."""
    spec = getattr(problem, "spec", None)
    if not isinstance(spec, PowerLawSpec):
        return None
    if isinstance(problem, InfinitePowerLawProblem):
        c2 = problem.teacher_constant
        ratio = None
        if spec.init_isotropic_exponent == spec.b:
            ratio = problem.isotropic_constant / c2
        return PowerLawParameters(spec.a, spec.b, math.inf, c2, problem.rho1, spec.init_teacher_scale, ratio)
    c2 = float(problem.wstar[0] ** 2)
    # The random part sigma0 g / sqrt(d) has second moments sigma0^2 / d, proportional to w*_i^2 only for b = 0.
    ratio = spec.sigma0**2 / (spec.d * c2) if spec.b == 0.0 else None
    return PowerLawParameters(spec.a, spec.b, float(spec.d), c2, problem.rho1, spec.init_teacher_scale, ratio)
