"""Moments of the centred Gaussian pair formed by the student and teacher projections.

For ``x ~ N(0, Σ)`` the pair ``(u, v) = (w·x, w*·x)`` is a centred bivariate
Gaussian with covariance

    [[q, m], [m, rho]],    q = wᵀΣw,  m = wᵀΣw*,  rho = w*ᵀΣw*,

so every polynomial moment of ``(u, v)`` is a polynomial in ``q, m, rho``.
The moments here come from Isserlis' (Wick's) theorem: ``E[u^i v^j]`` is the
sum over all perfect matchings of the ``i + j`` factors of the product of the
covariances of the matched pairs.
"""

from __future__ import annotations

from functools import lru_cache

import sympy

__all__ = ["u", "v", "q", "m", "rho", "gaussian_moment", "gaussian_expectation"]

# Student and teacher projections u = w·x and v = w*·x.
u, v = sympy.symbols("u v", real=True)

# Covariance entries of (u, v): Var u = q, Cov(u, v) = m, Var v = rho.
q, m, rho = sympy.symbols("q m rho", real=True)


def gaussian_moment(
    i: int,
    j: int,
    q: sympy.Expr = q,
    m: sympy.Expr = m,
    rho: sympy.Expr = rho,
) -> sympy.Expr:
    """Compute ``E[u^i v^j]`` for a centred Gaussian pair by the Wick pairing sum.

    A perfect matching of the ``i`` copies of ``u`` and ``j`` copies of ``v``
    with ``k`` mixed pairs ``(u, v)`` contributes ``q^((i-k)/2) m^k rho^((j-k)/2)``.
    There are ``C(i, k) C(j, k) k!`` ways to form the mixed pairs and
    ``(i-k-1)!! (j-k-1)!!`` ways to pair the remaining copies among themselves,
    so

        E[u^i v^j] = sum_k C(i,k) C(j,k) k! (i-k-1)!! (j-k-1)!! q^((i-k)/2) m^k rho^((j-k)/2),

    summed over ``0 <= k <= min(i, j)`` with ``i - k`` and ``j - k`` even.
    Moments of odd total order ``i + j`` are zero.

    Parameters
    ----------
    i, j : int
        Non-negative powers of ``u`` and ``v``.
    q, m, rho : sympy.Expr, optional
        Variance of ``u``, covariance of ``u`` and ``v``, variance of ``v``.
        The defaults are the module symbols ``q, m, rho``.

    Returns
    -------
    sympy.Expr
        The moment, a polynomial in ``q, m, rho`` with integer coefficients.

    Raises
    ------
    ValueError
        If ``i`` or ``j`` is not a non-negative integer.
    """
    for name, power in (("i", i), ("j", j)):
        if isinstance(power, bool) or not isinstance(power, int) or power < 0:
            raise ValueError(f"invalid moment order {name}={power!r}: expected a non-negative int")
    return _wick_pairing_sum(i, j, sympy.sympify(q), sympy.sympify(m), sympy.sympify(rho))


@lru_cache(maxsize=None)
def _wick_pairing_sum(i: int, j: int, q: sympy.Expr, m: sympy.Expr, rho: sympy.Expr) -> sympy.Expr:
    total = sympy.Integer(0)
    for k in range(i % 2, min(i, j) + 1, 2):
        if (j - k) % 2:
            continue
        matchings = (
            sympy.binomial(i, k)
            * sympy.binomial(j, k)
            * sympy.factorial(k)
            * sympy.factorial2(i - k - 1)
            * sympy.factorial2(j - k - 1)
        )
        total += matchings * q ** ((i - k) // 2) * m**k * rho ** ((j - k) // 2)
    return sympy.expand(total)


def gaussian_expectation(
    polynomial: sympy.Expr,
    q: sympy.Expr = q,
    m: sympy.Expr = m,
    rho: sympy.Expr = rho,
) -> sympy.Expr:
    """Compute ``E[P(u, v)]`` for a polynomial ``P`` in the module symbols ``u, v``.

    The polynomial is expanded into monomials ``c_ij u^i v^j`` and each monomial
    is replaced by ``c_ij E[u^i v^j]`` from :func:`gaussian_moment`. The
    coefficients ``c_ij`` may contain other symbols (for instance ``rho`` or a
    model parameter), which are treated as constants.

    Parameters
    ----------
    polynomial : sympy.Expr
        Polynomial in ``u`` and ``v``.
    q, m, rho : sympy.Expr, optional
        Covariance entries of ``(u, v)``, as in :func:`gaussian_moment`.

    Returns
    -------
    sympy.Expr
        The expectation, expanded.

    Raises
    ------
    ValueError
        If ``polynomial`` is not a polynomial in ``u`` and ``v``.
    """
    expression = sympy.sympify(polynomial)
    if not expression.is_polynomial(u, v):
        raise ValueError(
            f"invalid integrand {expression}: expected a polynomial in u and v; "
            "expand non-polynomial activations in Hermite polynomials first"
        )

    terms = sympy.Poly(expression, u, v).terms()
    expectation = sympy.Integer(0)
    for (i, j), coefficient in terms:
        expectation += coefficient * gaussian_moment(int(i), int(j), q, m, rho)
    return sympy.expand(expectation)
