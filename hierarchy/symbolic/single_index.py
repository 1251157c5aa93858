"""Population loss and hierarchy of any single-index model, derived with SymPy.

Student ``σ(w·x)``, teacher ``g(w*·x)`` and data ``x ~ N(0, Σ)``. The pair
``(u, v) = (w·x, w*·x)`` is a centred Gaussian with covariance
``[[q, m], [m, rho]]`` (``q = q_1``, ``m = m_1``, ``rho = rho_1``), so the
square loss with label noise ``y = g(v) + ε``, ``Var ε = s^2``, is

    F(q, m; rho) = c E[(σ(u) - g(v))^2] + c s^2.

The prefactor ``c`` defaults to ``1/4``: that is the usual ``1/2`` of the
square loss times a normalisation ``1/2``, chosen so that ``σ = g = z^2``
gives the project's phase-retrieval loss ``1/4 E[(ŷ - y)^2]`` exactly, with
``grad_w L = E[(ŷ - y)(w·x) x]``. With ``c = 1/2`` the loss is the plain
half square loss.

Polynomial activations are used exactly: ``F`` is a sum of Wick (Isserlis)
moments ``E[u^i v^j]``. Any other activation is replaced by its *Hermite
surrogate of order P*, the degree-``P`` polynomial

    σ_P(z) = sum_{n=0}^{P} c_n He_n(z),    c_n = E[σ(ξ) He_n(ξ)] / n!,   ξ ~ N(0, 1),

with ``He_n`` the probabilists' Hermite polynomials. ``σ_P`` is the best
degree-``P`` approximation of ``σ`` in ``L^2(N(0, 1))``, and the Wick moments
of ``σ_P`` give a polynomial ``F``. It is an approximation of ``σ`` valid for
``q`` and ``rho`` of order 1: at ``q = rho = 1`` the Mehler formula
``E[He_a(u) He_b(v)] = δ_ab a! m^a`` makes the residuals ``r = σ - σ_P``
orthogonal to every term of ``F``, so that

    0 <= F_true - F_P = c E[(r_σ(u) - r_g(v))^2] <= c (|r_σ| + |r_g|)^2,

with ``|r|^2 = E[σ(ξ)^2] - sum_{n<=P} n! c_n^2``
(:attr:`SingleIndexDerivation.surrogate_error_bound`). Away from
``q = rho = 1`` nothing bounds the error: the surrogate grows like ``z^P``
where ``σ`` may saturate, so ``F_P`` departs from the true loss as ``q`` or
``rho`` moves far from 1.

NOTE: small ``q`` is also outside the range of validity, because the surrogate
matches ``σ`` on the scale ``|z| ~ 1``, not near ``z = 0``. For
``σ = g = tanh`` at ``P = 9`` and ``rho = 1``, ``σ_P'(0) = 0.947`` instead of 1,
and the largest error of ``alpha`` (about ``-1/2`` there), measured against
Gauss–Hermite quadrature of the true loss, is ``1.2e-3`` at ``q = 1``,
``1.2e-2`` at ``q = 0.5`` and ``6.6e-2`` at ``q = 0.01``. A flow that starts
from a small ``w(0)`` therefore runs its early phase with rates off by up to
about 13 %.

The coefficients ``c_n`` are exact SymPy numbers when ``σ`` is a sum of terms
``p(z) h(a z + b)`` with ``p`` a polynomial and ``h`` one of ``exp, sin, cos,
erf, relu, abs`` (closed-form Gaussian integrals below). For other
activations, for instance ``tanh`` and ``sigmoid``, they are computed by
tanh-sinh quadrature with mpmath at :data:`QUADRATURE_DIGITS` significant
digits and stored as SymPy floats with :data:`COEFFICIENT_DIGITS` digits.

A ridge penalty ``(μ/2)|w|^2 = (μ/2) q_0`` depends on ``q_0``, not on
``q_1``, so it does not fit in ``F(q_1, m_1; rho_1)``. It is kept as the
separate field ``ridge``: it adds ``-μ w`` to the flow, ``-μ m_k`` and
``-2 μ q_k`` to the hierarchy (:attr:`SingleIndexDerivation.dm_k_with_ridge`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import mpmath
import sympy

from hierarchy.symbolic import gaussian_moments
from hierarchy.symbolic.expression_parser import validate_activation, z
from hierarchy.symbolic.gaussian_moments import gaussian_expectation
from hierarchy.symbolic.hierarchy_equations import (
    STUDENT,
    TEACHER,
    HierarchyEquations,
    SigmaPowerCombination,
    derive_hierarchy,
    inner_product,
    k,
    q,
)

__all__ = [
    "COEFFICIENT_DIGITS",
    "DEFAULT_HERMITE_ORDER",
    "DEFAULT_PREFACTOR",
    "MAX_HERMITE_ORDER",
    "QUADRATURE_DIGITS",
    "HermiteSurrogate",
    "SingleIndexDerivation",
    "derive_single_index",
    "hermite_surrogate",
    "single_index_loss",
    "to_rational",
]

DEFAULT_HERMITE_ORDER = 9
"""Default order ``P`` of the Hermite surrogate of a non-polynomial activation.

For ``σ = g = tanh`` and the default prefactor ``1/4``, the error bound at
``q = rho = 1`` (:attr:`SingleIndexDerivation.surrogate_error_bound`) is
``1.8e-4`` at ``P = 9``, ``4.8e-4`` at ``P = 7`` and ``7.1e-5`` at ``P = 11``.
Higher orders fit better near ``q = 1`` but worse for ``q >= 1.5``, where the
degree-``P`` surrogate grows like ``z^P`` and ``tanh`` saturates.
"""

MAX_HERMITE_ORDER = 20
"""Maximum Hermite order. The monomial coefficients of ``He_P`` grow fast (at
most 1260 for ``P = 9``, about ``1e10`` for ``P = 20``), so higher orders make
the generated polynomial ``F`` cancel badly in floating point."""

DEFAULT_PREFACTOR = sympy.Rational(1, 4)
"""Loss prefactor ``c`` in ``F = c E[(σ(u) - g(v))^2]``, chosen to match phase retrieval."""

QUADRATURE_DIGITS = 40
"""Working precision, in decimal digits, of the mpmath quadrature of Hermite coefficients."""

COEFFICIENT_DIGITS = 30
"""Significant digits kept of a Hermite coefficient computed by quadrature."""

# Coefficients below this size, relative to the norm of the activation, are quadrature noise.
_NOISE_LEVEL = 1e-30

# Point ±x at which σ(x)^2 φ(x) must be below _TAIL_TOLERANCE. Because φ(40) is about 1e-348,
# the test admits every activation of polynomial growth and exp(a x) for a up to about 8.8.
_TAIL_POINT = 40
_TAIL_TOLERANCE = 1e-40


@dataclass(frozen=True)
class HermiteSurrogate:
    """Polynomial that stands for an activation in the loss derivation.

    Attributes
    ----------
    activation : sympy.Expr
        The activation ``σ(z)``.
    polynomial : sympy.Expr
        The polynomial in ``z`` used for the Wick moments: ``σ`` itself when it
        is a polynomial, else its Hermite surrogate ``σ_P``.
    order : int or None
        Order ``P`` of the surrogate, None when ``σ`` is a polynomial.
    coefficients : tuple of sympy.Expr
        Hermite coefficients ``c_0..c_P`` with ``σ_P = sum_n c_n He_n``, empty
        when ``σ`` is a polynomial.
    method : str
        ``"polynomial"`` (used exactly), ``"exact"`` (closed-form ``c_n``) or
        ``"quadrature"`` (``c_n`` from mpmath quadrature).
    residual_norm : float
        ``|σ - σ_P|`` in ``L^2(N(0, 1))``, zero for a polynomial.
    """

    activation: sympy.Expr
    polynomial: sympy.Expr
    order: int | None
    coefficients: tuple[sympy.Expr, ...]
    method: str
    residual_norm: float


@dataclass(frozen=True)
class SingleIndexDerivation:
    """Loss, surrogates and hierarchy of one single-index model.

    Attributes
    ----------
    student, teacher : HermiteSurrogate
        The activations ``σ`` and ``g`` and the polynomials used for them.
    prefactor, noise_variance, ridge : sympy.Rational
        ``c``, label-noise variance ``s^2`` and ridge strength ``μ``.
    loss : sympy.Expr
        ``F(q, m; rho)`` in the covariance symbols of
        :mod:`hierarchy.symbolic.gaussian_moments`, noise constant included.
    equations : HierarchyEquations
        Flow and hierarchy from :func:`derive_hierarchy` applied to ``loss``,
        without the ridge.
    loss_with_ridge : sympy.Expr
        ``equations.loss + (μ/2) q[0]``, the full training loss.
    dm_k_with_ridge, dq_k_with_ridge : sympy.Expr
        ``equations.dm_k - μ m[k]`` and ``equations.dq_k - 2 μ q[k]``, derived
        from the flow ``dw/dt = alpha Σw + beta Σw* - μ w``.
    surrogate_error_bound : float
        Upper bound on ``F_true - F`` at ``q = rho = 1`` for every ``|m| <= 1``
        (zero when both activations are polynomials), see the module docstring.
    """

    student: HermiteSurrogate
    teacher: HermiteSurrogate
    prefactor: sympy.Rational
    noise_variance: sympy.Rational
    ridge: sympy.Rational
    loss: sympy.Expr
    equations: HierarchyEquations
    loss_with_ridge: sympy.Expr
    dm_k_with_ridge: sympy.Expr
    dq_k_with_ridge: sympy.Expr
    surrogate_error_bound: float

    @property
    def is_exact(self) -> bool:
        """Whether ``F`` is the exact loss, which holds when both activations are polynomials."""
        return self.student.order is None and self.teacher.order is None


def to_rational(value: float | int | Fraction | sympy.Rational, name: str) -> sympy.Rational:
    """Convert a finite non-negative number to the exact rational of its shortest decimal, so 0.1 is 1/10.

    Raises
    ------
    ValueError
        If ``value`` is not a finite non-negative real number; the message names ``name``.
    """
    if isinstance(value, sympy.Rational):
        exact = Fraction(int(value.p), int(value.q))
    elif isinstance(value, Fraction):
        exact = value
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} = {value!r} is invalid: expected a non-negative number")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} = {value!r} is invalid: expected a finite non-negative number")
    else:
        exact = Fraction(value) if isinstance(value, int) else Fraction(repr(value))
    if exact < 0:
        raise ValueError(f"{name} = {value!r} is invalid: it must be non-negative")
    return sympy.Rational(exact.numerator, exact.denominator)


def hermite_surrogate(activation: sympy.Expr, order: int = DEFAULT_HERMITE_ORDER) -> HermiteSurrogate:
    """Build the polynomial that stands for ``activation`` in the loss.

    A polynomial activation is returned unchanged, whatever its degree. Any
    other activation is projected on ``He_0..He_P`` in ``L^2(N(0, 1))``.

    Parameters
    ----------
    activation : sympy.Expr
        ``σ(z)``, checked with :func:`validate_activation`.
    order : int
        Surrogate order ``P``, ``1 <= P <= MAX_HERMITE_ORDER``.

    Raises
    ------
    ValueError
        If ``order`` is out of range or the quadrature does not converge.
    """
    _validate_order(order)
    if not isinstance(activation, sympy.Expr):
        raise ValueError(f"invalid activation {activation!r}: expected a SymPy expression; parse strings with parse_activation")
    return _cached_surrogate(validate_activation(activation), order)


@lru_cache(maxsize=64)
def _cached_surrogate(activation: sympy.Expr, order: int) -> HermiteSurrogate:
    if activation.is_polynomial(z):
        return HermiteSurrogate(activation, sympy.expand(activation), None, (), "polynomial", 0.0)

    moments = _closed_form_moments(activation, order)
    if moments is not None:
        coefficients = tuple(_coefficients_from_moments(moments, order))
        second_moment = _gaussian_projections(activation, 0)[1]
        method = "exact"
    else:
        quadrature_coefficients, second_moment = _quadrature_coefficients(activation, order)
        coefficients = tuple(quadrature_coefficients)
        method = "quadrature"

    polynomial = sympy.expand(sum(c * sympy.hermite_prob(n, z) for n, c in enumerate(coefficients)))
    return HermiteSurrogate(activation, polynomial, order, coefficients, method, _residual_norm(second_moment, coefficients))


def single_index_loss(
    student: HermiteSurrogate,
    teacher: HermiteSurrogate,
    prefactor: sympy.Rational = DEFAULT_PREFACTOR,
    noise_variance: sympy.Rational = sympy.Integer(0),
) -> sympy.Expr:
    """Compute ``F(q, m; rho) = c E[(σ(u) - g(v))^2] + c s^2`` by Wick moments of the surrogates."""
    u, v = gaussian_moments.u, gaussian_moments.v
    difference = student.polynomial.xreplace({z: u}) - teacher.polynomial.xreplace({z: v})
    return sympy.expand(gaussian_expectation(prefactor * difference**2) + prefactor * noise_variance)


@lru_cache(maxsize=32)
def derive_single_index(
    student: sympy.Expr,
    teacher: sympy.Expr,
    *,
    hermite_order: int = DEFAULT_HERMITE_ORDER,
    prefactor: float | sympy.Rational = DEFAULT_PREFACTOR,
    noise_variance: float | sympy.Rational = 0,
    ridge: float | sympy.Rational = 0,
) -> SingleIndexDerivation:
    """Derive the loss, flow and hierarchy of the single-index model ``σ = student``, ``g = teacher``.

    Parameters
    ----------
    student, teacher : sympy.Expr
        Activations in the symbol :data:`hierarchy.symbolic.expression_parser.z`
        (for instance from :func:`~hierarchy.symbolic.expression_parser.parse_activation`).
    hermite_order : int
        Order ``P`` of the Hermite surrogate of a non-polynomial activation.
    prefactor : number
        ``c`` in ``F = c E[(σ(u) - g(v))^2]``, positive; ``1/4`` by default.
    noise_variance : number
        Label-noise variance ``s^2 >= 0``; adds ``c s^2`` to ``F``.
    ridge : number
        Ridge strength ``μ >= 0`` of the penalty ``(μ/2)|w|^2``, kept out of ``F``.

    Returns
    -------
    SingleIndexDerivation
        Immutable, and cached per argument tuple, so repeated calls are cheap.

    Raises
    ------
    ValueError
        If an activation is invalid or a number is out of range; the message names the argument.
    """
    _validate_order(hermite_order)
    prefactor = to_rational(prefactor, "prefactor")
    if prefactor == 0:
        raise ValueError("prefactor = 0 is invalid: it must be positive")
    noise_variance = to_rational(noise_variance, "noise_variance")
    ridge = to_rational(ridge, "ridge")

    student_surrogate = hermite_surrogate(student, hermite_order)
    teacher_surrogate = hermite_surrogate(teacher, hermite_order)
    loss = single_index_loss(student_surrogate, teacher_surrogate, prefactor, noise_variance)
    equations = derive_hierarchy(loss)

    # The ridge term -μ w = -μ Σ^0 w contracts with Σ^k w* into m_k and with 2 Σ^k w into 2 q_k.
    ridge_flow = -ridge * SigmaPowerCombination.basis(STUDENT, 0)
    dm_k_with_ridge = sympy.expand(equations.dm_k + inner_product(ridge_flow, SigmaPowerCombination.basis(TEACHER, k)))
    dq_k_with_ridge = sympy.expand(
        equations.dq_k + 2 * inner_product(ridge_flow, SigmaPowerCombination.basis(STUDENT, k))
    )

    residual_sum = student_surrogate.residual_norm + teacher_surrogate.residual_norm
    return SingleIndexDerivation(
        student=student_surrogate,
        teacher=teacher_surrogate,
        prefactor=prefactor,
        noise_variance=noise_variance,
        ridge=ridge,
        loss=loss,
        equations=equations,
        loss_with_ridge=equations.loss + ridge / 2 * q[0],
        dm_k_with_ridge=dm_k_with_ridge,
        dq_k_with_ridge=dq_k_with_ridge,
        surrogate_error_bound=float(prefactor) * residual_sum**2,
    )


def _validate_order(order: int) -> None:
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= MAX_HERMITE_ORDER:
        raise ValueError(f"hermite_order = {order!r} is invalid: it must be an integer in [1, {MAX_HERMITE_ORDER}]")


# ---------------------------------------------------------------- closed-form Gaussian integrals


def _standard_moment(power: int) -> sympy.Integer:
    """Return ``E[ξ^power]`` for ``ξ ~ N(0, 1)``: ``(power - 1)!!`` for even powers, else 0."""
    return sympy.factorial2(power - 1) if power % 2 == 0 else sympy.Integer(0)


def _shifted_moment(power: int, shift: sympy.Expr) -> sympy.Expr:
    """Return ``E[(ξ + shift)^power]`` by the binomial expansion."""
    return sum(
        sympy.binomial(power, j) * shift ** (power - j) * _standard_moment(j) for j in range(power + 1)
    )


def _linear_argument(argument: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr] | None:
    """Return ``(a, b)`` with ``argument = a z + b`` and real numbers ``a != 0, b``, or None."""
    if not argument.is_polynomial(z):
        return None
    polynomial = sympy.Poly(argument, z)
    if polynomial.degree() != 1:
        return None
    a, b = polynomial.coeff_monomial(z), polynomial.coeff_monomial(1)
    if not (a.is_number and b.is_number and a.is_real and b.is_real):
        return None
    return a, b


def _elementary_moments(factor: sympy.Expr, max_power: int) -> list[sympy.Expr] | None:
    """Return ``E[ξ^j h(ξ)]`` for ``j = 0..max_power``, or None if ``h`` has no closed form here.

    ``h`` is one of ``exp, sin, cos, erf, Max(., 0), Abs`` of a linear argument ``a ξ + b``.
    """
    if isinstance(factor, sympy.Max):
        others = [argument for argument in factor.args if argument != 0]
        if len(factor.args) != 2 or len(others) != 1:
            return None
        linear = _linear_argument(others[0])
        return None if linear is None else _relu_moments(*linear, max_power)
    if isinstance(factor, sympy.Abs):
        linear = _linear_argument(factor.args[0])
        if linear is None:
            return None
        a, b = linear
        relu = _relu_moments(a, b, max_power)
        # |x| = 2 max(x, 0) - x
        return [2 * relu[j] - (a * _standard_moment(j + 1) + b * _standard_moment(j)) for j in range(max_power + 1)]
    if not isinstance(factor, (sympy.exp, sympy.sin, sympy.cos, sympy.erf)):
        return None
    linear = _linear_argument(factor.args[0])
    if linear is None:
        return None
    a, b = linear

    if isinstance(factor, sympy.exp):
        # E[ξ^j e^(aξ + b)] = e^(b + a^2/2) E[(ξ + a)^j], by completing the square.
        return [sympy.exp(b + a**2 / 2) * _shifted_moment(j, a) for j in range(max_power + 1)]
    if isinstance(factor, (sympy.sin, sympy.cos)):
        # E[ξ^j e^(i(aξ + b))] = e^(ib - a^2/2) E[(ξ + i a)^j]; cos and sin are its real and imaginary parts.
        moments = []
        for j in range(max_power + 1):
            shifted = sympy.expand(_shifted_moment(j, sympy.I * a))
            real_part, imaginary_part = sympy.re(shifted), sympy.im(shifted)
            damping = sympy.exp(-(a**2) / 2)
            if isinstance(factor, sympy.cos):
                moments.append(damping * (sympy.cos(b) * real_part - sympy.sin(b) * imaginary_part))
            else:
                moments.append(damping * (sympy.sin(b) * real_part + sympy.cos(b) * imaginary_part))
        return moments
    return _erf_moments(a, b, max_power)


def _relu_moments(a: sympy.Expr, b: sympy.Expr, max_power: int) -> list[sympy.Expr]:
    """Return ``E[ξ^j max(aξ + b, 0)]`` for ``j = 0..max_power``.

    With ``c = -b/a`` the integrand lives on ``ξ > c`` for ``a > 0`` and on
    ``ξ < c`` for ``a < 0``. The upper-tail moments ``T_j(c) = E[ξ^j 1{ξ > c}]``
    follow from integration by parts: ``T_0 = erfc(c/√2)/2``, ``T_1 = φ(c)``
    and ``T_j = c^(j-1) φ(c) + (j - 1) T_(j-2)``.
    """
    c = -b / a
    density = sympy.exp(-(c**2) / 2) / sympy.sqrt(2 * sympy.pi)
    upper = [sympy.erfc(c / sympy.sqrt(2)) / 2, density]
    for j in range(2, max_power + 2):
        upper.append(c ** (j - 1) * density + (j - 1) * upper[j - 2])
    if a.is_positive:
        region = upper
    else:
        region = [_standard_moment(j) - upper[j] for j in range(max_power + 2)]
    return [a * region[j + 1] + b * region[j] for j in range(max_power + 1)]


def _erf_moments(a: sympy.Expr, b: sympy.Expr, max_power: int) -> list[sympy.Expr]:
    """Return ``E[ξ^j erf(aξ + b)]`` for ``j = 0..max_power``.

    Stein's identity ``E[ξ f(ξ)] = E[f'(ξ)]`` gives
    ``E_j = E[ξ^(j-1) f'(ξ)] + (j - 1) E_(j-2)`` with
    ``f' = (2a/√π) e^(-(aξ + b)^2)``, and completing the square gives
    ``E[ξ^i e^(-(aξ + b)^2)] = s e^(-b^2 s^2) E[(μ + s η)^i]`` with
    ``s = 1/√(1 + 2a^2)``, ``μ = -2ab s^2``. The start is
    ``E_0 = erf(b s)``.
    """
    s = 1 / sympy.sqrt(1 + 2 * a**2)
    mean = -2 * a * b * s**2
    weight = 2 * a / sympy.sqrt(sympy.pi) * s * sympy.exp(-(b**2) * s**2)

    def derivative_moment(i: int) -> sympy.Expr:
        # E[(μ + s η)^i] = s^i E[(η + μ/s)^i]
        return weight * s**i * _shifted_moment(i, mean / s)

    moments = [sympy.erf(b * s)]
    for j in range(1, max_power + 1):
        previous = moments[j - 2] if j >= 2 else sympy.Integer(0)
        moments.append(derivative_moment(j - 1) + (j - 1) * previous)
    return moments


def _closed_form_moments(activation: sympy.Expr, order: int) -> list[sympy.Expr] | None:
    """Return ``E[ξ^j σ(ξ)]`` for ``j = 0..order`` in closed form, or None.

    The closed form exists here when ``σ`` expands into terms
    ``p(z) h(a z + b)`` with ``p`` a polynomial and ``h`` one elementary factor
    of :func:`_elementary_moments` (or none).
    """
    moments = [sympy.Integer(0)] * (order + 1)
    for term in sympy.Add.make_args(sympy.expand(activation)):
        polynomial_part = sympy.Integer(1)
        special_factor = None
        for factor in sympy.Mul.make_args(term):
            if factor.is_polynomial(z):
                polynomial_part *= factor
            elif special_factor is None:
                special_factor = factor
            else:
                return None

        polynomial = sympy.Poly(polynomial_part, z)
        degree = polynomial.degree()
        if special_factor is None:
            factor_moments = [_standard_moment(j) for j in range(order + degree + 1)]
        else:
            factor_moments = _elementary_moments(special_factor, order + degree)
            if factor_moments is None:
                return None
        for j in range(order + 1):
            for (power,), coefficient in polynomial.terms():
                moments[j] += coefficient * factor_moments[j + power]
    return moments


def _coefficients_from_moments(moments: list[sympy.Expr], order: int) -> list[sympy.Expr]:
    """Return ``c_n = E[σ(ξ) He_n(ξ)] / n!`` from the moments ``E[ξ^j σ(ξ)]``."""
    coefficients = []
    for n in range(order + 1):
        hermite = sympy.Poly(sympy.hermite_prob(n, z), z)
        projection = sum(coefficient * moments[power] for (power,), coefficient in hermite.terms())
        coefficients.append(sympy.simplify(projection / sympy.factorial(n)))
    return coefficients


# ---------------------------------------------------------------- quadrature


def _mpmath_function(expression: sympy.Expr):
    """Build a function ``x -> σ(x)`` on mpmath numbers by walking the whitelisted SymPy tree.

    Only the node types that :func:`validate_activation` accepts occur, so no
    other case is needed; anything else raises ValueError.
    """
    if not expression.has(z):
        value = mpmath.mpf(sympy.Float(expression.evalf(QUADRATURE_DIGITS + 10), QUADRATURE_DIGITS + 10))
        return lambda x: value
    if expression == z:
        return lambda x: x
    parts = [_mpmath_function(argument) for argument in expression.args]
    if isinstance(expression, sympy.Add):
        return lambda x: mpmath.fsum(part(x) for part in parts)
    if isinstance(expression, sympy.Mul):
        return lambda x: mpmath.fprod(part(x) for part in parts)
    if isinstance(expression, sympy.Pow):
        base, exponent = parts
        exponent_value = expression.exp
        if exponent_value.is_Integer:
            integer = int(exponent_value)
            return lambda x: base(x) ** integer
        return lambda x: mpmath.power(base(x), exponent(x))
    functions = {
        sympy.tanh: mpmath.tanh,
        sympy.erf: mpmath.erf,
        sympy.exp: mpmath.exp,
        sympy.sin: mpmath.sin,
        sympy.cos: mpmath.cos,
        sympy.Abs: abs,
    }
    for sympy_function, mpmath_function in functions.items():
        if isinstance(expression, sympy_function):
            (argument,) = parts
            return lambda x: mpmath_function(argument(x))
    if isinstance(expression, sympy.Max):
        return lambda x: max(part(x) for part in parts)
    raise ValueError(f"cannot evaluate {expression} numerically: {type(expression).__name__} is not supported")


def _breakpoints(activation: sympy.Expr) -> list[sympy.Expr]:
    """Return the kinks of ``Max`` and ``Abs`` with linear arguments, where quadrature splits the line."""
    points = {sympy.Integer(0)}
    for node in activation.atoms(sympy.Max, sympy.Abs):
        for argument in node.args:
            linear = _linear_argument(argument) if argument.has(z) else None
            if linear is not None:
                points.add(-linear[1] / linear[0])
    return sorted(points, key=lambda point: float(point))


def _gaussian_projections(activation: sympy.Expr, order: int) -> tuple[list[mpmath.mpf], mpmath.mpf]:
    """Return ``E[σ(ξ) He_n(ξ)]`` for ``n = 0..order`` and ``E[σ(ξ)^2]`` by mpmath quadrature.

    Each integral is a tanh-sinh quadrature over the real line, split at the
    kinks of :func:`_breakpoints`, at :data:`QUADRATURE_DIGITS` digits. All
    integrals share their nodes, so ``σ`` and the ``He_n`` are evaluated once
    per node.

    Raises
    ------
    ValueError
        If ``σ(x)^2 φ(x)`` is not negligible at ``x = ±40`` or an error
        estimate exceeds ``10^-(QUADRATURE_DIGITS/2)`` relative to the integral (or to 1).
    """
    sigma = _mpmath_function(activation)
    with mpmath.workdps(QUADRATURE_DIGITS):
        normal = 1 / mpmath.sqrt(2 * mpmath.pi)
        tolerance = mpmath.mpf(10) ** (-(QUADRATURE_DIGITS // 2))
        node_values: dict = {}

        def integrands_at(x):
            if x not in node_values:
                value = sigma(x)
                weight = normal * mpmath.exp(-x * x / 2)
                hermite = [mpmath.mpf(1), x]
                for n in range(1, order):
                    hermite.append(x * hermite[n] - n * hermite[n - 1])  # He_(n+1) = x He_n - n He_(n-1)
                node_values[x] = [value * weight * h for h in hermite[: order + 1]] + [value * value * weight]
            return node_values[x]

        # tanh-sinh quadrature can return a finite number for a divergent integral such as E[exp(ξ^2/2)],
        # so the squared activation must be negligible against the Gaussian far out.
        for x in (-_TAIL_POINT, _TAIL_POINT):
            tail = abs(integrands_at(mpmath.mpf(x))[-1])
            if not tail <= _TAIL_TOLERANCE:
                raise ValueError(
                    f"the activation {activation} grows too fast: σ(x)^2 φ(x) = {mpmath.nstr(tail, 3)} at x = {x}, "
                    f"more than {_TAIL_TOLERANCE:g}, so E[σ(ξ)^2] may be infinite; use an activation that grows more slowly"
                )

        interval = [-mpmath.inf]
        interval += [mpmath.mpf(sympy.Float(point, QUADRATURE_DIGITS)) for point in _breakpoints(activation)]
        interval.append(mpmath.inf)

        integrals = []
        for index in range(order + 2):
            value, error = mpmath.quad(lambda x, index=index: integrands_at(x)[index], interval, error=True)
            if error > tolerance * max(abs(value), 1):
                raise ValueError(
                    f"the Gaussian quadrature of the activation {activation} did not converge "
                    f"(error estimate {float(error):.3g}); use a smoother activation or one that grows more slowly"
                )
            integrals.append(value)
    return integrals[:-1], integrals[-1]


def _quadrature_coefficients(activation: sympy.Expr, order: int) -> tuple[list[sympy.Expr], mpmath.mpf]:
    """Return ``c_n = E[σ(ξ) He_n(ξ)] / n!`` by quadrature, rounded to :data:`COEFFICIENT_DIGITS` digits, and ``E[σ^2]``.

    Coefficients that vanish by the parity of ``σ`` are set to exactly zero,
    and so are those below the quadrature noise level.
    """
    parity = None
    mirrored = activation.xreplace({z: -z})
    if sympy.expand(mirrored - activation) == 0:
        parity = 0
    elif sympy.expand(mirrored + activation) == 0:
        parity = 1

    projections, second_moment = _gaussian_projections(activation, order)
    with mpmath.workdps(QUADRATURE_DIGITS):
        norm = mpmath.sqrt(second_moment)
        coefficients = []
        for n, projection in enumerate(projections):
            value = projection / mpmath.factorial(n)
            if (parity is not None and n % 2 != parity) or abs(value) < _NOISE_LEVEL * max(norm, 1):
                coefficients.append(sympy.Integer(0))
            else:
                coefficients.append(sympy.Float(value, COEFFICIENT_DIGITS))
    return coefficients, second_moment


def _residual_norm(second_moment: mpmath.mpf, coefficients: tuple[sympy.Expr, ...]) -> float:
    """Return ``|σ - σ_P|`` in ``L^2(N(0, 1))``: ``sqrt(E[σ^2] - sum_n n! c_n^2)``."""
    with mpmath.workdps(QUADRATURE_DIGITS):
        captured = mpmath.fsum(
            mpmath.factorial(n) * mpmath.mpf(sympy.Float(c.evalf(QUADRATURE_DIGITS), QUADRATURE_DIGITS)) ** 2
            for n, c in enumerate(coefficients)
        )
        residual = second_moment - captured
    # Rounding of the 30-digit coefficients can leave a tiny negative residual when σ is almost a polynomial.
    return math.sqrt(max(float(residual), 0.0))
