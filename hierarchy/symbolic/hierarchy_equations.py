"""Symbolic derivation of the gradient flow and the summary-statistic hierarchy.

For data ``x ~ N(0, Σ)`` and a single-index model whose population loss is a
function ``F(q_1, m_1; rho_1)`` of the level-one statistics

    q_k = wᵀ Σ^k w,    m_k = wᵀ Σ^k w*,    rho_k = w*ᵀ Σ^k w*,

the chain rule with ``grad_w q_1 = 2 Σ w`` and ``grad_w m_1 = Σ w*`` gives the
gradient flow

    dw/dt = -grad_w F = -2 F_q Σ w - F_m Σ w* = alpha Σ w + beta Σ w*,

and contracting it with ``Σ^k w*`` and ``2 Σ^k w`` gives the hierarchy

    dm_k/dt = -2 F_q m_{k+1} - F_m rho_{k+1},
    dq_k/dt = -4 F_q q_{k+1} - 2 F_m m_{k+1}.

Vectors are kept as formal linear combinations of ``Σ^p w`` and ``Σ^p w*``
(:class:`SigmaPowerCombination`). An inner product of two such vectors is
read off as a summary statistic, ``(Σ^a w)ᵀ (Σ^b w*) = m_{a+b}``, so the
hierarchy is derived for a symbolic level ``k`` without a hand-typed result.

The statistics are SymPy ``Indexed`` objects ``q[k]``, ``m[k]``, ``rho[k]``.
The loss is given in the covariance symbols ``q, m, rho`` of
:mod:`hierarchy.symbolic.gaussian_moments` and rewritten in ``q[1], m[1], rho[1]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import sympy

from hierarchy.symbolic import gaussian_moments
from hierarchy.symbolic.gaussian_moments import gaussian_expectation

__all__ = [
    "STUDENT",
    "TEACHER",
    "HierarchyEquations",
    "SigmaPowerCombination",
    "derive_hierarchy",
    "derive_phase_retrieval",
    "inner_product",
    "k",
    "m",
    "merge_levels",
    "phase_retrieval_loss",
    "population_square_loss",
    "q",
    "rho",
    "statistic",
]

# Summary statistics q[k] = wᵀΣ^k w, m[k] = wᵀΣ^k w*, rho[k] = w*ᵀΣ^k w*.
q = sympy.IndexedBase("q", real=True)
m = sympy.IndexedBase("m", real=True)
rho = sympy.IndexedBase("rho", real=True)

# Level of the hierarchy.
k = sympy.Symbol("k", integer=True, nonnegative=True)

# Names of the two base vectors: the student weights w and the teacher weights w*.
STUDENT = "w"
TEACHER = "w*"
_BASE_VECTORS = (STUDENT, TEACHER)


def statistic(first: str, second: str, power: sympy.Expr) -> sympy.Indexed:
    """Return the summary statistic ``firstᵀ Σ^power second``.

    ``wᵀΣ^p w = q_p``, ``wᵀΣ^p w* = w*ᵀΣ^p w = m_p`` and ``w*ᵀΣ^p w* = rho_p``.

    Raises
    ------
    ValueError
        If ``first`` or ``second`` is not ``STUDENT`` or ``TEACHER``.
    """
    for base in (first, second):
        if base not in _BASE_VECTORS:
            raise ValueError(f"unknown base vector {base!r}: expected {STUDENT!r} or {TEACHER!r}")

    if first == second == STUDENT:
        return q[power]
    if first == second == TEACHER:
        return rho[power]
    return m[power]


@dataclass(frozen=True)
class SigmaPowerCombination:
    """Formal linear combination ``sum_j c_j Σ^(p_j) v_j`` with ``v_j`` in ``{w, w*}``.

    ``terms`` maps ``(base, power)`` to the coefficient ``c_j``. Powers and
    coefficients are SymPy expressions, so a power may be the symbolic level ``k``.
    """

    terms: Mapping[tuple[str, sympy.Expr], sympy.Expr] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cleaned: dict[tuple[str, sympy.Expr], sympy.Expr] = {}
        for (base, power), coefficient in self.terms.items():
            if base not in _BASE_VECTORS:
                raise ValueError(f"unknown base vector {base!r}: expected {STUDENT!r} or {TEACHER!r}")
            coefficient = sympy.sympify(coefficient)
            if coefficient != 0:
                cleaned[(base, sympy.sympify(power))] = coefficient
        object.__setattr__(self, "terms", MappingProxyType(cleaned))

    @classmethod
    def basis(cls, base: str, power: sympy.Expr = 1) -> SigmaPowerCombination:
        """Build the single vector ``Σ^power base``."""
        return cls({(base, sympy.sympify(power)): sympy.Integer(1)})

    def __add__(self, other: SigmaPowerCombination) -> SigmaPowerCombination:
        combined = dict(self.terms)
        for key, coefficient in other.terms.items():
            combined[key] = combined.get(key, sympy.Integer(0)) + coefficient
        return SigmaPowerCombination(combined)

    def __rmul__(self, scalar: sympy.Expr) -> SigmaPowerCombination:
        return SigmaPowerCombination({key: scalar * coefficient for key, coefficient in self.terms.items()})

    def __neg__(self) -> SigmaPowerCombination:
        return sympy.Integer(-1) * self

    def __hash__(self) -> int:
        return hash(frozenset(self.terms.items()))

    def coefficient(self, base: str, power: sympy.Expr = 1) -> sympy.Expr:
        """Return the coefficient of ``Σ^power base`` (zero if the term is absent)."""
        return self.terms.get((base, sympy.sympify(power)), sympy.Integer(0))


def inner_product(left: SigmaPowerCombination, right: SigmaPowerCombination) -> sympy.Expr:
    """Contract two combinations into summary statistics.

    Each pair of terms gives ``(c Σ^a x)ᵀ (d Σ^b y) = c d xᵀ Σ^(a+b) y``
    because ``Σ`` is symmetric, and ``xᵀ Σ^(a+b) y`` is one of ``q, m, rho``
    at level ``a + b``.
    """
    total = sympy.Integer(0)
    for (left_base, left_power), left_coefficient in left.terms.items():
        for (right_base, right_power), right_coefficient in right.terms.items():
            level = left_power + right_power
            total += left_coefficient * right_coefficient * statistic(left_base, right_base, level)
    return total


# Gradients in w of the level-one statistics that a loss F(q_1, m_1; rho_1) depends on:
# grad_w (wᵀΣw) = 2Σw because Σ is symmetric, grad_w (wᵀΣw*) = Σw*, and rho_1 does not depend on w.
_LEVEL_ONE_GRADIENTS = {
    q[1]: 2 * SigmaPowerCombination.basis(STUDENT, 1),
    m[1]: SigmaPowerCombination.basis(TEACHER, 1),
}


@dataclass(frozen=True)
class HierarchyEquations:
    """Loss, gradient flow and hierarchy of a model, as SymPy expressions.

    All expressions are in the statistics ``q[j], m[j], rho[j]`` of this module
    and, for ``dm_k`` and ``dq_k``, the symbolic level ``k``.

    Attributes
    ----------
    loss : sympy.Expr
        Population loss ``F(q_1, m_1; rho_1)``.
    F_q, F_m : sympy.Expr
        Partial derivatives ``dF/dq_1`` and ``dF/dm_1``.
    flow : SigmaPowerCombination
        Gradient flow ``dw/dt = -grad_w F``, a combination of ``Σw`` and ``Σw*``.
    alpha, beta : sympy.Expr
        Coefficients of ``Σw`` and ``Σw*`` in the flow, ``alpha = -2 F_q`` and ``beta = -F_m``.
    dalpha_dq1, dalpha_dm1, dbeta_dq1, dbeta_dm1 : sympy.Expr
        Partial derivatives of ``alpha`` and ``beta`` in ``q_1`` and ``m_1``.
    dm_k, dq_k : sympy.Expr
        Right-hand sides of ``dm_k/dt`` and ``dq_k/dt`` at the symbolic level ``k``.
    """

    loss: sympy.Expr
    F_q: sympy.Expr
    F_m: sympy.Expr
    flow: SigmaPowerCombination
    alpha: sympy.Expr
    beta: sympy.Expr
    dalpha_dq1: sympy.Expr
    dalpha_dm1: sympy.Expr
    dbeta_dq1: sympy.Expr
    dbeta_dm1: sympy.Expr
    dm_k: sympy.Expr
    dq_k: sympy.Expr

    def level(self, level: int) -> tuple[sympy.Expr, sympy.Expr]:
        """Return ``(dm_level/dt, dq_level/dt)`` with ``k`` replaced by ``level``."""
        return self.dm_k.subs(k, level), self.dq_k.subs(k, level)


def _validate_loss(loss: sympy.Expr) -> None:
    covariance_symbols = {gaussian_moments.q, gaussian_moments.m, gaussian_moments.rho}
    for symbol in loss.free_symbols:
        if symbol in (gaussian_moments.u, gaussian_moments.v):
            raise ValueError(
                f"invalid loss {loss}: it still depends on the projection {symbol}; "
                "take the Gaussian expectation first (gaussian_expectation)"
            )
        if symbol.name in ("q", "m", "rho") and symbol not in covariance_symbols:
            raise ValueError(
                f"invalid loss {loss}: the symbol {symbol.name} has other assumptions than "
                f"hierarchy.symbolic.gaussian_moments.{symbol.name}; build the loss from those symbols"
            )


def derive_hierarchy(loss: sympy.Expr) -> HierarchyEquations:
    """Derive the gradient flow and the hierarchy from a population loss ``F(q, m, rho)``.

    The derivation is mechanical:

    1. ``F`` is rewritten in the level-one statistics ``q_1, m_1, rho_1``.
    2. The chain rule gives ``grad_w F = F_q (2 Σ w) + F_m (Σ w*)``, and the flow is
       ``dw/dt = -grad_w F``, so ``alpha = -2 F_q`` and ``beta = -F_m``.
    3. ``dm_k/dt = (dw/dt)ᵀ Σ^k w*`` and ``dq_k/dt = 2 (dw/dt)ᵀ Σ^k w``, with
       each inner product read off as a statistic at level ``k + 1``.

    Parameters
    ----------
    loss : sympy.Expr
        Population loss in the covariance symbols ``q, m, rho`` of
        :mod:`hierarchy.symbolic.gaussian_moments`, which here stand for
        ``q_1, m_1, rho_1``. Other free symbols are treated as model parameters.

    Returns
    -------
    HierarchyEquations

    Raises
    ------
    ValueError
        If the loss still depends on ``u`` or ``v``, or uses a symbol named
        ``q``, ``m`` or ``rho`` that is not the one of ``gaussian_moments``
        (such a symbol would silently stay constant).
    """
    loss = sympy.sympify(loss)
    _validate_loss(loss)
    level_one = {gaussian_moments.q: q[1], gaussian_moments.m: m[1], gaussian_moments.rho: rho[1]}
    loss = sympy.expand(loss.xreplace(level_one))

    partial_derivatives = {}
    gradient = SigmaPowerCombination()
    for level_one_statistic, statistic_gradient in _LEVEL_ONE_GRADIENTS.items():
        partial_derivatives[level_one_statistic] = sympy.diff(loss, level_one_statistic)
        gradient = gradient + partial_derivatives[level_one_statistic] * statistic_gradient
    flow = -gradient

    alpha = flow.coefficient(STUDENT, 1)
    beta = flow.coefficient(TEACHER, 1)

    dm_k = sympy.expand(inner_product(flow, SigmaPowerCombination.basis(TEACHER, k)))
    dq_k = sympy.expand(2 * inner_product(flow, SigmaPowerCombination.basis(STUDENT, k)))

    return HierarchyEquations(
        loss=loss,
        F_q=partial_derivatives[q[1]],
        F_m=partial_derivatives[m[1]],
        flow=flow,
        alpha=alpha,
        beta=beta,
        dalpha_dq1=sympy.diff(alpha, q[1]),
        dalpha_dm1=sympy.diff(alpha, m[1]),
        dbeta_dq1=sympy.diff(beta, q[1]),
        dbeta_dm1=sympy.diff(beta, m[1]),
        dm_k=dm_k,
        dq_k=dq_k,
    )


def population_square_loss(
    student: sympy.Expr,
    teacher: sympy.Expr,
    prefactor: sympy.Expr = sympy.Rational(1, 4),
) -> sympy.Expr:
    """Compute ``F(q, m, rho) = prefactor * E[(σ(u) - g(v))^2]`` by Gaussian moments.

    Parameters
    ----------
    student, teacher : sympy.Expr
        Student output ``σ(u)`` as a polynomial in ``gaussian_moments.u`` and
        teacher output ``g(v)`` as a polynomial in ``gaussian_moments.v``.
    prefactor : sympy.Expr, optional
        Loss normalisation, ``1/4`` by default so that for phase retrieval
        ``grad_w L = E[(ŷ - y)(w·x) x]``.

    Returns
    -------
    sympy.Expr
        The loss in the covariance symbols ``q, m, rho``.
    """
    return gaussian_expectation(sympy.sympify(prefactor) * (student - teacher) ** 2)


def phase_retrieval_loss() -> sympy.Expr:
    """Compute the phase-retrieval loss ``F = 1/4 E[(u^2 - v^2)^2]``.

    Wick's theorem gives ``F = 1/4 (3 q^2 - 2 q rho - 4 m^2 + 3 rho^2)``.
    """
    u, v = gaussian_moments.u, gaussian_moments.v
    return population_square_loss(u**2, v**2)


def derive_phase_retrieval() -> HierarchyEquations:
    """Derive the hierarchy of phase retrieval (student ``(w·x)^2``, teacher ``(w*·x)^2``)."""
    return derive_hierarchy(phase_retrieval_loss())


def merge_levels(expression: sympy.Expr) -> sympy.Expr:
    """Replace every level ``q_j, m_j, rho_j`` by the plain symbols ``q, m, rho``.

    This is the case ``Σ = I``, where ``Σ^j = I`` makes all levels equal and the
    hierarchy closes into a 2-D system in ``(m, q)``. The plain symbols are
    those of :mod:`hierarchy.symbolic.gaussian_moments`.
    """
    merged = {q: gaussian_moments.q, m: gaussian_moments.m, rho: gaussian_moments.rho}
    return expression.replace(
        lambda node: isinstance(node, sympy.Indexed) and node.base in merged,
        lambda node: merged[node.base],
    )
