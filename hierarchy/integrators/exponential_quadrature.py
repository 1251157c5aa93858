"""Steps of the ``exponential`` method in ``t``, by quadrature, near a zero of ``alpha``.

On a step from ``t0`` to ``t0 + h`` with ``tau = (t - t0) / h``,

    y_i(tau) = e^{r_j A(tau)} y_i(0) + f_i P_j(tau),
    A(tau) = h int_0^tau alpha,   P_j(tau) = h int_0^tau e^{r_j (A(tau) - A(s))} beta(s) ds,

with ``alpha`` and ``beta`` the cubics in ``tau`` through their node values.
``P_j`` is integrated by the Gauss-Legendre rule, which needs every
``r_j |A|`` to stay below ``EXPONENT_LIMIT``. These steps are taken only where the internal time fails: near a zero of
``alpha`` (the escape of phase retrieval), where ``g = beta / alpha`` is
steep or singular. The six node values are found by Broyden's method
(C. G. Broyden, "A class of methods for solving nonlinear simultaneous
equations", Math. Comp. 19 (1965) 577-593), started from a finite-difference
Jacobian.
"""

import math

import numba
import numpy as np

from .common import STAT_JACOBIANS, STAT_NEWTON_ITERATIONS, STAT_RHS, all_finite
from .exponential_basis import (
    NODES,
    cubic_integral,
    cubic_value,
    exp_into,
    interpolate_at_nodes,
    overlaps_from_rates,
    set_error_cubic,
)

GAUSS_POINTS = 8
_gauss_x, _gauss_w = np.polynomial.legendre.leggauss(GAUSS_POINTS)
GAUSS_NODES = 0.5 * (_gauss_x + 1.0)
GAUSS_WEIGHTS = 0.5 * _gauss_w
# Largest r_j |A| on a quadrature step. The exponent of the integrand
# e^{r_j (A(tau) - A(s))} beta(s) then spans at most 8, and the remainder
# of the 8-point Gauss-Legendre rule, (8!)^4 / (17 (16!)^3) times the 16th
# derivative, is below about 4e-8 of the integral for e^{8 x}. It is much
# less in practice, since the span is 8 only for the fastest mode at the largest |A|.
EXPONENT_LIMIT = 4.0
# Terms of the series of e^{r (A(tau) - A(s))} in propagate: 4^44 / 44! < 1e-27.
MAX_TERMS = 45
SERIES_CUTOFF = 1e-18
SAMPLES = 16
MAX_NEWTON_ITERATIONS = 12
NEWTON_FRACTION = 0.1

# Rows of the step's cubics in tau (monomial coefficients).
ALPHA = 0
BETA = 1
ERROR = 2  # the cubic of beta minus its quadratic through 0, c_2, 1
# Rows of the per-rate work array.
EXPONENTIAL = 0  # e^{r_j A(tau)}
INTEGRAL = 1  # P_j(tau)
ERROR_INTEGRAL = 2  # the forcing integral of the ERROR cubic


@numba.njit(cache=True)
def build_cubics(s, alpha0, beta0, cubics):
    """Fill ``cubics`` for the node values ``s = (alpha_1..3, beta_1..3)`` and the start values."""
    alpha_values = np.empty(4)
    beta_values = np.empty(4)
    alpha_values[0] = alpha0
    beta_values[0] = beta0
    for k in range(1, 4):
        alpha_values[k] = s[k - 1]
        beta_values[k] = s[k + 2]
    interpolate_at_nodes(alpha_values, cubics[ALPHA])
    interpolate_at_nodes(beta_values, cubics[BETA])
    set_error_cubic(cubics[BETA, 3], cubics[ERROR])


@numba.njit(cache=True)
def largest_exponent(alpha_coefficients, h, largest_rate):
    """Return ``max_j |r_j| max_tau |A(tau)|`` on the step, sampled."""
    largest_u = 0.0
    for k in range(1, SAMPLES + 1):
        largest_u = max(largest_u, abs(h * cubic_integral(alpha_coefficients, k / SAMPLES)))
    return largest_rate * largest_u


@numba.njit(cache=True)
def _moments(tau, h, cubics, largest_rate, with_error, moments, error_moments):
    """Write the moments ``M_n`` (and those of the ERROR cubic) of ``propagate`` into the arrays.

    Returns ``(u, terms)``: ``A(tau)`` and the number of terms of the series.
    """
    u = h * cubic_integral(cubics[ALPHA], tau)
    lag = np.empty(GAUSS_POINTS)
    weight = np.empty(GAUSS_POINTS)
    error_weight = np.empty(GAUSS_POINTS)
    largest_lag = 0.0
    for q in range(GAUSS_POINTS):
        s = tau * GAUSS_NODES[q]
        lag[q] = u - h * cubic_integral(cubics[ALPHA], s)
        weight[q] = h * tau * GAUSS_WEIGHTS[q] * cubic_value(cubics[BETA], s)
        error_weight[q] = h * tau * GAUSS_WEIGHTS[q] * cubic_value(cubics[ERROR], s)
        largest_lag = max(largest_lag, abs(lag[q]))

    span = largest_rate * largest_lag
    terms = 1
    term = 1.0
    while terms < MAX_TERMS and term > SERIES_CUTOFF:
        term *= span / terms
        terms += 1

    moments[:terms] = 0.0
    error_moments[:terms] = 0.0
    for q in range(GAUSS_POINTS):
        power = 1.0
        for m in range(terms):
            moments[m] += power * weight[q]
            if with_error:
                error_moments[m] += power * error_weight[q]
            power *= lag[q] / (m + 1)
    return u, terms


@numba.njit(cache=True, fastmath={"contract"})
def _rate_series(terms, moments, rates, out):
    """Write ``sum_n r_j^n moments[n]`` for every rate into ``out``.

    Horner's rule with the loop over the rates inside, so that it
    vectorises: every rate takes the same number of terms.
    """
    top = moments[terms - 1]
    for j in range(rates.shape[0]):
        out[j] = top
    for m in range(terms - 2, -1, -1):
        moment = moments[m]
        for j in range(rates.shape[0]):
            out[j] = out[j] * rates[j] + moment


@numba.njit(cache=True)
def per_rate_solution(tau, h, cubics, rates, largest_rate, per_rate, with_error):
    """Write ``e^{r_j A(tau)}`` and ``P_j(tau)`` (with ``with_error`` also the error integrals) into ``per_rate``.

    ``e^{r_j (A(tau) - A(s))}`` is expanded in powers of ``r_j``, so that the
    Gauss-Legendre sums become moments shared by every rate:
    ``P_j = sum_n r_j^n M_n`` with ``M_n = h int_0^tau (A(tau) - A(s))^n / n! beta(s) ds``.
    The series is cut where its terms fall below 1e-18 of its size; with
    ``r_j |A| <= EXPONENT_LIMIT`` it needs at most ``MAX_TERMS`` terms.
    """
    moments = np.empty(MAX_TERMS)
    error_moments = np.empty(MAX_TERMS)
    u, terms = _moments(tau, h, cubics, largest_rate, with_error, moments, error_moments)
    exponents = np.empty(rates.shape[0])
    for j in range(rates.shape[0]):
        exponents[j] = rates[j] * u
    exp_into(exponents, per_rate[EXPONENTIAL], per_rate[INTEGRAL])
    _rate_series(terms, moments, rates, per_rate[INTEGRAL])
    if with_error:
        _rate_series(terms, error_moments, rates, per_rate[ERROR_INTEGRAL])


@numba.njit(cache=True)
def propagate(tau, h, cubics, rates, largest_rate, rate_index, forcing, y0, per_rate, out, with_error):
    """Write the state at ``t0 + tau h`` into ``out``, with ``per_rate`` as in ``per_rate_solution``."""
    per_rate_solution(tau, h, cubics, rates, largest_rate, per_rate, with_error)
    for i in range(y0.shape[0]):
        j = rate_index[i]
        out[i] = per_rate[EXPONENTIAL, j] * y0[i] + forcing[i] * per_rate[INTEGRAL, j]


@numba.njit(cache=True)
def _residual(s, alpha0, beta0, h, rho1, rates, largest_rate, rate_sums, drive, cubics, per_rate, out):
    """Write ``s - F(s)`` into ``out``, ``F(s)`` being the drive at the node states that ``s`` produces.

    The overlaps of the node states come from the per-rate sums of the
    start state (``exponential_basis.overlaps_from_rates``), so the states
    themselves are not formed.
    """
    build_cubics(s, alpha0, beta0, cubics)
    for k in range(1, 4):
        per_rate_solution(NODES[k], h, cubics, rates, largest_rate, per_rate, False)
        m1, q1 = overlaps_from_rates(per_rate[EXPONENTIAL], per_rate[INTEGRAL], rate_sums)
        alpha, beta, _, _, _, _ = drive(q1, m1, rho1)
        out[k - 1] = s[k - 1] - alpha
        out[k + 2] = s[k + 2] - beta
    return all_finite(out)


@numba.njit(cache=True)
def _group_scales(s, alpha0, beta0):
    """Return the largest ``|alpha|`` and ``|beta|`` among the start and node values."""
    alpha_scale = abs(alpha0)
    beta_scale = abs(beta0)
    for k in range(3):
        alpha_scale = max(alpha_scale, abs(s[k]))
        beta_scale = max(beta_scale, abs(s[k + 3]))
    return alpha_scale, beta_scale


@numba.njit(cache=True)
def solve_node_values(s, alpha0, beta0, h, rho1, rates, largest_rate, rate_sums, drive, cubics, per_rate,
                      jacobian, fresh_jacobian, rtol, atol, stats):
    """Solve the collocation equations ``s = F(s)`` by Broyden's method from ``s``, in place.

    With ``fresh_jacobian`` the Jacobian is first computed by forward
    differences (six residuals); otherwise ``jacobian``, carried from the
    last quadrature step with Broyden's updates, is used. Returns
    ``(converged, finite)``.
    """
    residual = np.empty(6)
    new_residual = np.empty(6)
    if not _residual(s, alpha0, beta0, h, rho1, rates, largest_rate, rate_sums, drive, cubics, per_rate, residual):
        return False, False
    stats[STAT_RHS] += 3

    if fresh_jacobian:
        alpha_scale, beta_scale = _group_scales(s, alpha0, beta0)
        shifted = np.empty(6)
        shifted_residual = np.empty(6)
        for column in range(6):
            group_scale = alpha_scale if column < 3 else beta_scale
            increment = math.sqrt(np.finfo(np.float64).eps) * max(abs(s[column]), 1e-3 * group_scale, 1e-300)
            shifted[:] = s
            shifted[column] += increment
            if not _residual(shifted, alpha0, beta0, h, rho1, rates, largest_rate, rate_sums, drive, cubics, per_rate,
                             shifted_residual):
                return False, False
            for k in range(6):
                jacobian[k, column] = (shifted_residual[k] - residual[k]) / increment
        stats[STAT_JACOBIANS] += 1
        stats[STAT_RHS] += 18

    previous_norm = np.inf
    for iteration in range(MAX_NEWTON_ITERATIONS):
        stats[STAT_NEWTON_ITERATIONS] += 1
        correction = -np.linalg.solve(jacobian, residual)
        for k in range(6):
            s[k] += correction[k]
        if not _residual(s, alpha0, beta0, h, rho1, rates, largest_rate, rate_sums, drive, cubics, per_rate,
                         new_residual):
            return False, False
        stats[STAT_RHS] += 3

        # Each group is measured against its own size: beta may be orders of
        # magnitude below alpha (a small initial overlap) and still set the forcing.
        alpha_scale, beta_scale = _group_scales(s, alpha0, beta0)
        correction_norm = 0.0
        for k in range(6):
            group_scale = alpha_scale if k < 3 else beta_scale
            correction_norm = max(correction_norm, abs(correction[k]) / (NEWTON_FRACTION * rtol * group_scale + atol))
        if correction_norm <= 1.0:
            return True, True
        if iteration >= 2 and correction_norm > previous_norm:
            return False, True
        previous_norm = correction_norm

        # Broyden's rank-one update: the new Jacobian maps the correction to the change of the residual.
        squared = 0.0
        for k in range(6):
            squared += correction[k] * correction[k]
        mismatch = new_residual - residual - jacobian @ correction
        for k in range(6):
            for column in range(6):
                jacobian[k, column] += mismatch[k] * correction[column] / squared
        residual[:] = new_residual
    return False, True
