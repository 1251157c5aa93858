"""Quadrature in ``log lam`` for the spectral measures of an infinite power-law spectrum.

For ``d = inf`` the eigenvalues are ``lam_i = i^(-a)``, ``i = 1, 2, ...``, and
every (``lam``-weighted) spectral measure of the project has atom weights
that are sums of power laws, ``c_i = sum_t C_t i^(-p_t)`` with ``p_t > 1``.
The rule has the same structure as the finite one of ``quadrature``:

1. the ``exact_top`` largest eigenvalues, and every eigenvalue of a bin with
   at most ``rule_order`` of them, are nodes of their own;
2. bins of ``1 / bins_per_decade`` decades, aligned on multiples of that
   width, get the ``rule_order`` Gauss-Legendre points of the bin in
   ``s = log lam``, and node ``k`` the weight ``sum_{i in bin} c_i l_k(s_i)``
   with ``l_k`` the Lagrange basis of the bin. The sum runs over the atoms
   directly while a bin holds at most ``DIRECT_ATOMS_PER_BIN`` of them; beyond,
   it is the Euler-Maclaurin formula
   ``sum_{i=A}^{B} g(i) = int_A^B g + (g(A) + g(B)) / 2 + (g'(B) - g'(A)) / 12 + R``
   with ``g(x) = c(x) l_k(s(x))``, whose remainder is ``O(g''' / 720)``, of
   relative size ``A^(-3) < 1e-15`` there; the integral is a high-order
   Gauss-Legendre rule in ``s``;
3. the eigenvalues below ``lam_floor`` (modes that barely move before
   ``t_end``: ``4 rho_1 lam_floor t_end = FLOOR_MOTION``) get a
   ``FLOOR_ORDER``-point interpolatory rule in ``lam`` (not ``log lam``) on
   ``[0, lam_floor]``, whose weights come from the exact tail moments
   ``sum_{i >= I} C i^(-p - a j) = C zeta(p + a j, I)`` (Hurwitz zeta).

The rule integrates the measures' total mass exactly (constants are
reproduced in every bin), so the initial summary statistics are exact up to
the Euler-Maclaurin remainder.
"""

import math

import numpy as np
from scipy.special import zeta

from .quadrature import SpectralRule, _lagrange_basis

# Bins with more atoms than this are summed by Euler-Maclaurin.
DIRECT_ATOMS_PER_BIN = 200_000
# Gauss-Legendre points per bin for the Euler-Maclaurin integrals in s.
INTEGRAL_POINTS = 32
# Motion allowed to the modes below the floor, 4 rho_1 lam_floor t_end.
FLOOR_MOTION = 0.05
FLOOR_ORDER = 4


def _weights_at(index, terms):
    """Atom weights ``sum_t C_t i^(-p_t)`` at real indices, one row per measure."""
    index = np.asarray(index, dtype=np.float64)
    rows = []
    for measure_terms in terms:
        row = np.zeros_like(index)
        for coefficient, power in measure_terms:
            row += coefficient * index ** (-power)
        rows.append(row)
    return np.vstack(rows)


def _weight_derivatives_at(index, terms):
    """Derivatives in ``x`` of the atom weights ``sum_t C_t x^(-p_t)``."""
    index = np.asarray(index, dtype=np.float64)
    rows = []
    for measure_terms in terms:
        row = np.zeros_like(index)
        for coefficient, power in measure_terms:
            row += -power * coefficient * index ** (-power - 1.0)
        rows.append(row)
    return np.vstack(rows)


def _euler_maclaurin_bin(first, last, a, terms, nodes_s):
    """Weights of one bin with atoms ``first..last`` by the Euler-Maclaurin formula."""
    n_nodes = nodes_s.size
    # The basis polynomials are built in u = (s - center) / half_width: in s
    # itself (|s| ~ 20 with nodes 0.05 apart) the monomial form cancels badly.
    center = 0.5 * (nodes_s.max() + nodes_s.min())
    half_width = max(0.5 * (nodes_s.max() - nodes_s.min()), 1e-300)
    nodes_u = (nodes_s - center) / half_width
    basis_polynomials = []
    for k in range(n_nodes):
        polynomial = np.polynomial.Polynomial.fromroots(np.delete(nodes_u, k))
        basis_polynomials.append(polynomial / polynomial(nodes_u[k]))

    # Integral over x in [first, last], in the variable s = -a log x.
    s_high = -a * math.log(first)
    s_low = -a * math.log(last)
    points, point_weights = np.polynomial.legendre.leggauss(INTEGRAL_POINTS)
    s = 0.5 * (s_low + s_high) + 0.5 * (s_high - s_low) * points
    x = np.exp(-s / a)
    jacobian = 0.5 * (s_high - s_low) * point_weights * x / a
    densities = _weights_at(x, terms)

    weights = np.empty((len(terms), n_nodes))
    ends = np.array([first, last], dtype=np.float64)
    end_s = -a * np.log(ends)
    end_weights = _weights_at(ends, terms)
    end_weight_derivatives = _weight_derivatives_at(ends, terms)
    u = (s - center) / half_width
    end_u = (end_s - center) / half_width
    for k, polynomial in enumerate(basis_polynomials):
        integral = densities @ (jacobian * polynomial(u))
        basis_at_ends = polynomial(end_u)
        # d/dx of l_k(s(x)) is l_k'(u) (du/ds) (ds/dx), with ds/dx = -a / x.
        basis_slope_at_ends = polynomial.deriv()(end_u) / half_width * (-a / ends)
        g = end_weights * basis_at_ends
        g_prime = end_weight_derivatives * basis_at_ends + end_weights * basis_slope_at_ends
        weights[:, k] = integral + 0.5 * (g[:, 0] + g[:, 1]) + (g_prime[:, 1] - g_prime[:, 0]) / 12.0
    return weights


def _floor_rule(first_index, a, terms, lam_floor):
    """Interpolatory rule in ``lam`` on ``[0, lam_floor]`` for the atoms ``i >= first_index``."""
    nodes = 0.5 * lam_floor * (1.0 + np.polynomial.legendre.leggauss(FLOOR_ORDER)[0])
    scaled_nodes = nodes / lam_floor
    vandermonde = np.vander(scaled_nodes, FLOOR_ORDER, increasing=True).T
    weights = np.empty((len(terms), FLOOR_ORDER))
    for row, measure_terms in enumerate(terms):
        moments = np.zeros(FLOOR_ORDER)
        for j in range(FLOOR_ORDER):
            for coefficient, power in measure_terms:
                moments[j] += coefficient * zeta(power + a * j, first_index) / lam_floor**j
        weights[row] = np.linalg.solve(vandermonde, moments)
    return nodes, weights


def power_law_rule(a, terms, bins_per_decade, rule_order, exact_top, t_end, rho1=1.0) -> SpectralRule:
    """Build the rule of the module docstring for ``lam_i = i^(-a)``, ``i >= 1``.

    Parameters
    ----------
    a : float
        Spectral exponent, ``a > 0``.
    terms : list of lists of (C, p)
        For each measure, the power laws whose sum is its atom weight; every
        ``p`` must exceed 1 so that the measure is finite.
    bins_per_decade, rule_order, exact_top : int
        As for the finite rule.
    t_end : float
        Horizon; sets the floor ``lam_floor = FLOOR_MOTION / (4 rho_1 t_end)``.
    rho1 : float
        Teacher scale ``rho_1`` entering the floor.
    """
    if not a > 0:
        raise ValueError(f"a = {a!r} is invalid for d = inf: the spectrum must decay, a > 0")
    for measure_terms in terms:
        for _, power in measure_terms:
            if not power > 1.0:
                raise ValueError(
                    f"a spectral measure with atom weights ~ i^(-{power:g}) has infinite mass; "
                    "d = inf needs every exponent above 1"
                )
    if int(bins_per_decade) < 1 or int(rule_order) < 1 or int(exact_top) < 0:
        raise ValueError("bins_per_decade and rule_order must be >= 1 and exact_top >= 0")
    if not t_end > 0:
        raise ValueError(f"t_end = {t_end!r} must be positive")

    lam_floor = min(FLOOR_MOTION / (4.0 * rho1 * t_end), 0.5)
    width = 1.0 / bins_per_decade
    exact_top = int(exact_top)

    nodes = [np.arange(1, exact_top + 1, dtype=np.float64) ** (-a)]
    weights = [_weights_at(np.arange(1, exact_top + 1), terms)]
    exact_nodes = exact_top

    # Bins in log10 lam from the first non-exact eigenvalue down to the floor.
    next_index = exact_top + 1
    gauss_points, _ = np.polynomial.legendre.leggauss(int(rule_order))
    upper_edge = math.floor(math.log10(next_index ** (-a)) / width + 1e-12) * width + width
    while True:
        lower_edge = max(upper_edge - width, math.log10(lam_floor))
        # Atoms with lower_edge <= log10 lam_i < upper_edge, i >= next_index.
        last_index = math.floor(10.0 ** (-lower_edge / a) * (1 + 1e-15))
        if (last_index + 0.0) ** (-a) < 10.0**lower_edge:
            last_index -= 1
        count = last_index - next_index + 1
        if count > 0:
            s_low, s_high = lower_edge * math.log(10.0), upper_edge * math.log(10.0)
            if count <= rule_order:
                index = np.arange(next_index, last_index + 1)
                nodes.append(index ** (-a))
                weights.append(_weights_at(index, terms))
                exact_nodes += count
            else:
                bin_nodes_s = 0.5 * (s_low + s_high) + 0.5 * (s_high - s_low) * gauss_points
                if count <= DIRECT_ATOMS_PER_BIN:
                    index = np.arange(next_index, last_index + 1, dtype=np.float64)
                    basis = _lagrange_basis(-a * np.log(index), bin_nodes_s)
                    bin_weights = _weights_at(index, terms) @ basis
                else:
                    bin_weights = _euler_maclaurin_bin(next_index, last_index, a, terms, bin_nodes_s)
                nodes.append(np.exp(bin_nodes_s))
                weights.append(bin_weights)
            next_index = last_index + 1
        if lower_edge <= math.log10(lam_floor) + 1e-12:
            break
        upper_edge = lower_edge

    floor_nodes, floor_weights = _floor_rule(next_index, a, terms, lam_floor)
    nodes.append(floor_nodes)
    weights.append(floor_weights)

    all_nodes = np.concatenate(nodes)
    all_weights = np.concatenate(weights, axis=1)
    order = np.argsort(-all_nodes, kind="stable")
    return SpectralRule(nodes=all_nodes[order], weights=all_weights[:, order], exact_nodes=exact_nodes)
