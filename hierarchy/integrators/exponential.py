"""Exponential collocation for systems in modal form, compiled with Numba.

A system in modal form (``system.ModalForm``: the spectral modes and the
exact flow) obeys ``dy_i/dt = r_j alpha y_i + f_i beta`` with
``j = rate_index[i]``, where the two scalars ``alpha, beta`` depend on the
state only through ``q1`` and ``m1``. Given ``alpha(t)`` and ``beta(t)``
along a step, each equation is linear and is solved exactly:

    y_i(t0 + tau h) = e^{r_j A(tau)} y_i(t0) + f_i P_j(tau),
    A(tau) = h int_0^tau alpha,   P_j(tau) = h int_0^tau e^{r_j (A(tau) - A(s))} beta(s) ds.

The method approximates ``alpha`` and ``beta`` by the cubics through their
values at ``tau = 0`` and at the three Radau IIA nodes
``(4 -/+ sqrt 6) / 10, 1``, and solves for the six node values so that
they equal the drive of the states they produce (collocation). The
stiffness of the modes never limits the step: a mode with
``r_j |A| >> 1`` is propagated as exactly as a slow one. Only the
smoothness of ``alpha`` and ``beta`` does, and on the power-law problems
they vary on the scale of ``t`` itself, so the steps grow in proportion to
``t``. On the logistic test problem the error falls as the accepted steps
to the power -5.

A ridge penalty ``mu`` adds ``-mu y_i`` with a clock of its own, so that
``e^{-mu h (tau - s)}`` would join the integrand. The method rejects systems
with ``mu > 0``, which the other methods integrate.

``P_j`` is evaluated in one of two ways:

* in the internal time ``u = A(s)`` where ``alpha`` keeps one sign on the
  step. There ``P_j = int_0^U e^{r_j (U - u)} g(u) du`` with
  ``g = beta / alpha`` interpolated by the cubic in ``u`` through the node
  values, which is exact in terms of the functions
  ``phi_k(z) = int_0^1 e^{(1 - x) z} x^(k-1) / (k-1)! dx`` (Hochbruck and
  Ostermann, "Exponential integrators", Acta Numerica 19 (2010) 209-286,
  section 2.3), whatever ``r_j U``. This costs one exponential per rate;
* by Gauss-Legendre quadrature in ``s`` near a zero of ``alpha`` (the
  escape of phase retrieval), where ``g`` is steep or singular. The
  quadrature needs every ``r_j |A|`` on the step to stay below
  ``QUADRATURE_EXPONENT_LIMIT``, and a step near a zero of ``alpha`` is cut
  until it does.

The six node values are found by Broyden's method (C. G. Broyden, "A class
of methods for solving nonlinear simultaneous equations", Math. Comp. 19
(1965) 577-593), started from a finite-difference Jacobian of the
collocation residual. The error estimate compares the cubics with the
quadratics through ``tau = 0``, the second node and 1: the change of the
forcing integral and of ``A(1)``, the latter carried to the state by
``dz/du = r_j z + f_i g``. It estimates the error of that lower-order
scheme, O(h^4) per step, so the controller uses the exponent 1/4 and the
tolerance is loosened to ``rtol^ERROR_TOLERANCE_POWER`` as RADAU5 does for
its embedded formula. Outputs and events inside a step come from the same
exact propagation, so they are as accurate as the step ends, and steps do
not end on output times.

The method needs ``system.modal``; ``ExponentialMethod.check_system``
rejects other systems (the moment hierarchy, the classic test problems).
"""

import math

import numba
import numpy as np
from numba import types

from .common import (
    EVENT_BISECTIONS,
    EVENT_PREVIOUS_VALUE,
    EVENT_TIME,
    MAX_FACTOR,
    MIN_FACTOR,
    NOT_REJECTED,
    REJECTED_BY_ERROR,
    REJECTED_NEWTON,
    REJECTED_NONFINITE,
    RETRY_FACTOR,
    SAFETY,
    STAT_ACCEPTED,
    STAT_JACOBIANS,
    STAT_NEWTON_FAILURES,
    STAT_NEWTON_ITERATIONS,
    STAT_RHS,
    STAT_STEPS,
    STATUS_DIVERGED,
    STATUS_STEP_BUDGET,
    STATUS_STEP_SIZE_COLLAPSE,
    STATUS_SUCCESS,
    all_finite,
    count_rejection,
    event_value,
    initial_step,
    max_abs,
    next_step_size,
    step_size_collapsed,
    stepper_signature,
    weighted_rms,
)
from ..kernel_types import f64, vector

# tau = 0 and the Radau IIA nodes: alpha and beta are cubics through their values there.
NODES = np.array([0.0, (4.0 - math.sqrt(6.0)) / 10.0, (4.0 + math.sqrt(6.0)) / 10.0, 1.0])
# Monomial coefficients of the cubic through values v at NODES: VANDERMONDE_INVERSE @ v.
VANDERMONDE_INVERSE = np.linalg.inv(np.vander(NODES, 4, increasing=True))
# int_0^1 s (s - c_2) (s - 1) ds: the integral of the cubic minus the quadratic
# through 0, c_2, 1, per unit of the cubic's leading coefficient.
ERROR_CUBIC_INTEGRAL = (2.0 * NODES[2] - 1.0) / 12.0
# Gauss-Legendre rule on [0, 1] for the quadrature steps.
GAUSS_POINTS = 8
_gauss_x, _gauss_w = np.polynomial.legendre.leggauss(GAUSS_POINTS)
GAUSS_NODES = 0.5 * (_gauss_x + 1.0)
GAUSS_WEIGHTS = 0.5 * _gauss_w
# Largest r_j |A| on a quadrature step. The exponent of the integrand
# e^{r_j (A(tau) - A(s))} beta(s) then spans at most 8, and the remainder
# of the 8-point Gauss-Legendre rule, (8!)^4 / (17 (16!)^3) times the 16th
# derivative, is below about 4e-8 of the integral for e^{8 x}. It is much
# less in practice, since the span is 8 only for the fastest mode at the largest |A|.
QUADRATURE_EXPONENT_LIMIT = 4.0
# alpha counts as one-signed on a step when its smallest |value| on the step
# is at least this fraction of its largest. Closer to a zero of alpha,
# g = beta / alpha is too far from a cubic in u.
ALPHA_RATIO = 0.25
# See _choose_mode.
NEAR_ZERO_ALPHA = 0.5
# Points at which the cubics of a step are sampled for those checks.
SAMPLES = 16
# Below this |z| the phi functions are summed as series, where the recurrence loses digits.
SERIES_LIMIT = 1.0
SERIES_TERMS = 18
INVERSE_FACTORIALS = np.array([1.0 / math.factorial(k) for k in range(SERIES_TERMS + 5)])
FACTORIALS = np.array([1.0, 1.0, 2.0, 6.0])

# The estimate is the O(h^4) error of the quadratic scheme.
ERROR_EXPONENT = 0.25
# The step is accepted when that estimate is below rtol^ERROR_TOLERANCE_POWER
# relative to the state (and atol absolute), so that the error of the cubic scheme, one order
# higher, comes out near rtol (measured in benchmarks/README.md).
ERROR_TOLERANCE_POWER = 0.8
MIN_ERROR_NORM = 1e-10
MAX_NEWTON_ITERATIONS = 12
# The node values of alpha (and of beta) count as converged when the last
# correction is below this fraction of rtol times the largest |alpha| (|beta|).
NEWTON_FRACTION = 0.1
NEWTON_FAILURE_FACTOR = 0.5
# The difference Jacobian is computed again when h moved this factor away
# from the h it was computed at; Broyden's updates follow smaller changes.
JACOBIAN_STEP_RATIO = 4.0
# The predictor extrapolates the last step's cubics only to steps at most
# this much longer, and starts from constants beyond.
PREDICTOR_MAX_GROWTH = 2.0

# How a step evaluates the forcing integrals P_j (see the module docstring).
INTERNAL_TIME = 0
QUADRATURE = 1
NEITHER = 2

# Rows of the step's cubics (monomial coefficients in tau, or in x = u / U for G).
ALPHA = 0  # alpha(tau)
B = 1  # beta(tau)
G = 2  # g = beta / alpha in x = u / U (internal-time steps)
ERROR = 3  # the cubic minus the quadratic of the forcing (in x or tau)
# Rows of the per-rate work array.
EXPONENTIAL = 0  # e^{r_j A(tau)}
INTEGRAL = 1  # P_j(tau)
ERROR_INTEGRAL = 2  # the forcing integral of the ERROR cubic


@numba.njit(cache=True)
def phi_values(z):
    """Return ``(phi_0(z), .., phi_4(z))`` with ``phi_0 = e^z``."""
    if abs(z) < SERIES_LIMIT:
        # phi_4(z) = sum_j z^j / (j + 4)!, then phi_k = 1 / k! + z phi_{k+1} downwards, which is stable.
        phi4 = 0.0
        for j in range(SERIES_TERMS - 1, -1, -1):
            phi4 = phi4 * z + INVERSE_FACTORIALS[j + 4]
        phi3 = 1.0 / 6.0 + z * phi4
        phi2 = 0.5 + z * phi3
        phi1 = 1.0 + z * phi2
        return 1.0 + z * phi1, phi1, phi2, phi3, phi4
    phi0 = math.exp(z)
    inverse = 1.0 / z
    phi1 = (phi0 - 1.0) * inverse
    phi2 = (phi1 - 1.0) * inverse
    phi3 = (phi2 - 0.5) * inverse
    return phi0, phi1, phi2, phi3, (phi3 - 1.0 / 6.0) * inverse


@numba.njit(cache=True)
def _cubic(coefficients, x):
    return ((coefficients[3] * x + coefficients[2]) * x + coefficients[1]) * x + coefficients[0]


@numba.njit(cache=True)
def _integrated_cubic(coefficients, x):
    """Return ``int_0^x`` of the cubic with monomial ``coefficients``."""
    return x * (coefficients[0] + x * (coefficients[1] / 2.0 + x * (coefficients[2] / 3.0 + x * coefficients[3] / 4.0)))


@numba.njit(cache=True)
def _interpolate_cubic(x, values, out):
    """Write the monomial coefficients of the cubic through ``(x[k], values[k])``, ``k = 0..3``, into ``out``."""
    d01 = (values[1] - values[0]) / (x[1] - x[0])
    d12 = (values[2] - values[1]) / (x[2] - x[1])
    d23 = (values[3] - values[2]) / (x[3] - x[2])
    d012 = (d12 - d01) / (x[2] - x[0])
    d123 = (d23 - d12) / (x[3] - x[1])
    d0123 = (d123 - d012) / (x[3] - x[0])
    # Expansion of the Newton form
    # values[0] + d01 (x - x0) + d012 (x - x0)(x - x1) + d0123 (x - x0)(x - x1)(x - x2).
    out[3] = d0123
    out[2] = d012 - d0123 * (x[0] + x[1] + x[2])
    out[1] = d01 - d012 * (x[0] + x[1]) + d0123 * (x[0] * x[1] + x[0] * x[2] + x[1] * x[2])
    out[0] = values[0] - d01 * x[0] + d012 * x[0] * x[1] - d0123 * x[0] * x[1] * x[2]


@numba.njit(cache=True)
def _set_error_cubic(leading, middle, out):
    """Write ``leading x (x - middle) (x - 1)``, the cubic minus the quadratic through 0, middle, 1."""
    out[0] = 0.0
    out[1] = leading * middle
    out[2] = -leading * (1.0 + middle)
    out[3] = leading


@numba.njit(cache=True)
def _build_cubics(s, alpha0, beta0, h, mode, cubics, node_u):
    """Fill ``cubics`` for the node values ``s = (alpha_1..3, beta_1..3)`` and write ``A(c_k)`` into ``node_u``.

    The ``G`` row and the internal-time ``ERROR`` row are filled only for
    ``mode == INTERNAL_TIME``; for ``QUADRATURE`` the ``ERROR`` row is the
    difference cubic of ``beta`` in ``tau``.
    """
    alpha_values = np.empty(4)
    beta_values = np.empty(4)
    alpha_values[0] = alpha0
    beta_values[0] = beta0
    for k in range(1, 4):
        alpha_values[k] = s[k - 1]
        beta_values[k] = s[k + 2]
    for p in range(4):
        cubics[ALPHA, p] = 0.0
        cubics[B, p] = 0.0
        for k in range(4):
            cubics[ALPHA, p] += VANDERMONDE_INVERSE[p, k] * alpha_values[k]
            cubics[B, p] += VANDERMONDE_INVERSE[p, k] * beta_values[k]
    for k in range(4):
        node_u[k] = h * _integrated_cubic(cubics[ALPHA], NODES[k])

    if mode == INTERNAL_TIME:
        x = np.empty(4)
        g_values = np.empty(4)
        for k in range(4):
            x[k] = node_u[k] / node_u[3]
            g_values[k] = beta_values[k] / alpha_values[k]
        _interpolate_cubic(x, g_values, cubics[G])
        _set_error_cubic(cubics[G, 3], x[2], cubics[ERROR])
    else:
        _set_error_cubic(cubics[B, 3], NODES[2], cubics[ERROR])


@numba.njit(cache=True)
def _choose_mode(alpha_coefficients, h, largest_rate, alpha_scale):
    """Return how a step with the cubic ``alpha`` evaluates ``P_j``, and the largest ``r_j |A|`` on it.

    The internal time costs one exponential per rate and the quadrature
    ``GAUSS_POINTS + 1``, so the internal time is used wherever ``alpha``
    keeps one sign, except near a zero of ``alpha`` (``|alpha|`` below
    ``NEAR_ZERO_ALPHA`` times the largest ``|alpha|`` of the run so far,
    ``alpha_scale``). There ``g = beta / alpha`` is steep and would force tiny
    steps, and the quadrature is used while it is accurate.
    """
    largest_u = 0.0
    first = _cubic(alpha_coefficients, 0.0)
    smallest_alpha = abs(first)
    largest_alpha = abs(first)
    one_signed = first != 0.0
    for k in range(1, SAMPLES + 1):
        x = k / SAMPLES
        largest_u = max(largest_u, abs(h * _integrated_cubic(alpha_coefficients, x)))
        value = _cubic(alpha_coefficients, x)
        if value * first <= 0.0:
            one_signed = False
        smallest_alpha = min(smallest_alpha, abs(value))
        largest_alpha = max(largest_alpha, abs(value))
    exponent = largest_rate * largest_u
    internal_time = one_signed and smallest_alpha >= ALPHA_RATIO * largest_alpha
    quadrature = exponent <= QUADRATURE_EXPONENT_LIMIT
    if quadrature and smallest_alpha < NEAR_ZERO_ALPHA * alpha_scale:
        return QUADRATURE, exponent
    if internal_time:
        return INTERNAL_TIME, exponent
    if quadrature:
        return QUADRATURE, exponent
    return NEITHER, exponent


@numba.njit(cache=True)
def _propagate(tau, mode, h, cubics, total_u, rates, rate_index, forcing, y0, per_rate, out, with_error):
    """Write the state at ``t0 + tau h`` into ``out``, and fill ``per_rate`` (the error row only ``with_error``)."""
    n_rates = rates.shape[0]
    u = h * _integrated_cubic(cubics[ALPHA], tau)
    if mode == INTERNAL_TIME:
        ratio = u / total_u
        weights = np.empty(4)
        error_weights = np.empty(4)
        power = 1.0
        for m in range(4):
            weights[m] = cubics[G, m] * power * FACTORIALS[m]
            error_weights[m] = cubics[ERROR, m] * power * FACTORIALS[m]
            power *= ratio
        # int_0^u e^{r (u - v)} (v / U)^m dv = m! u (u / U)^m phi_{m+1}(r u).
        for j in range(n_rates):
            phi0, phi1, phi2, phi3, phi4 = phi_values(rates[j] * u)
            per_rate[EXPONENTIAL, j] = phi0
            per_rate[INTEGRAL, j] = u * (weights[0] * phi1 + weights[1] * phi2 + weights[2] * phi3 + weights[3] * phi4)
            if with_error:
                per_rate[ERROR_INTEGRAL, j] = u * (
                    error_weights[0] * phi1 + error_weights[1] * phi2 + error_weights[2] * phi3 + error_weights[3] * phi4
                )
    else:
        point_u = np.empty(GAUSS_POINTS)
        point_b = np.empty(GAUSS_POINTS)
        point_error = np.empty(GAUSS_POINTS)
        for q in range(GAUSS_POINTS):
            s = tau * GAUSS_NODES[q]
            point_u[q] = u - h * _integrated_cubic(cubics[ALPHA], s)
            point_b[q] = h * tau * GAUSS_WEIGHTS[q] * _cubic(cubics[B], s)
            point_error[q] = h * tau * GAUSS_WEIGHTS[q] * _cubic(cubics[ERROR], s)
        for j in range(n_rates):
            per_rate[EXPONENTIAL, j] = math.exp(rates[j] * u)
            total = 0.0
            error_total = 0.0
            for q in range(GAUSS_POINTS):
                weight = math.exp(rates[j] * point_u[q])
                total += weight * point_b[q]
                error_total += weight * point_error[q]
            per_rate[INTEGRAL, j] = total
            if with_error:
                per_rate[ERROR_INTEGRAL, j] = error_total

    for i in range(y0.shape[0]):
        j = rate_index[i]
        out[i] = per_rate[EXPONENTIAL, j] * y0[i] + forcing[i] * per_rate[INTEGRAL, j]


@numba.njit(cache=True)
def _drive_at(observe, drive, params, rho1, state, observed):
    observe(state, params, drive, observed)
    alpha, beta, _, _, _, _ = drive(observed[1], observed[0], rho1)
    return alpha, beta


@numba.njit(cache=True)
def _collocation_residual(
    s, mode, alpha0, beta0, h, rho1, rates, rate_index, forcing, y, observe, drive, params,
    cubics, node_u, per_rate, node_state, observed, residual,
):
    """Write ``s - F(s)`` into ``residual``, ``F(s)`` being the drive at the node states that ``s`` produces.

    Returns ``False`` when a node state or a drive value is not finite.
    """
    _build_cubics(s, alpha0, beta0, h, mode, cubics, node_u)
    for k in range(1, 4):
        _propagate(
            NODES[k], mode, h, cubics, node_u[3], rates, rate_index, forcing, y, per_rate,
            node_state, False,
        )
        if not all_finite(node_state):
            return False
        alpha, beta = _drive_at(observe, drive, params, rho1, node_state, observed)
        residual[k - 1] = s[k - 1] - alpha
        residual[k + 2] = s[k + 2] - beta
    return all_finite(residual)


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
def _solve_node_values(
    s, mode, alpha0, beta0, h, rho1, rates, rate_index, forcing, y, observe, drive, params,
    cubics, node_u, per_rate, node_state, observed, jacobian, fresh_jacobian, rtol, atol, stats,
):
    """Solve the collocation equations ``s = F(s)`` by Broyden's method, starting from ``s``.

    With ``fresh_jacobian`` the Jacobian of the residual is first computed by
    forward differences; otherwise the one carried from earlier steps is
    used. Returns ``(converged, finite)``.
    """
    residual = np.empty(6)
    new_residual = np.empty(6)
    if not _collocation_residual(
        s, mode, alpha0, beta0, h, rho1, rates, rate_index, forcing, y, observe, drive, params,
        cubics, node_u, per_rate, node_state, observed, residual,
    ):
        return False, False
    stats[STAT_RHS] += 3

    alpha_scale, beta_scale = _group_scales(s, alpha0, beta0)
    if fresh_jacobian:
        shifted = np.empty(6)
        shifted_residual = np.empty(6)
        for column in range(6):
            group_scale = alpha_scale if column < 3 else beta_scale
            increment = math.sqrt(np.finfo(np.float64).eps) * max(abs(s[column]), 1e-3 * group_scale, 1e-300)
            for k in range(6):
                shifted[k] = s[k]
            shifted[column] += increment
            if not _collocation_residual(
                shifted, mode, alpha0, beta0, h, rho1, rates, rate_index, forcing, y, observe, drive,
                params, cubics, node_u, per_rate, node_state, observed, shifted_residual,
            ):
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
        if not _collocation_residual(
            s, mode, alpha0, beta0, h, rho1, rates, rate_index, forcing, y, observe, drive, params,
            cubics, node_u, per_rate, node_state, observed, new_residual,
        ):
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
        for k in range(6):
            residual[k] = new_residual[k]
    return False, True


@numba.njit(cache=True)
def _write_outputs(
    t, h, t_new, mode, cubics, total_u, rates, rate_index, forcing, y, y_new, per_rate,
    t_out, next_out, observe, params, drive, observables, states, save_state, work, observed,
):
    """Write the outputs with ``t < t_out[i] <= t_new`` by exact propagation; return the next output index."""
    n = y.shape[0]
    n_out = t_out.shape[0]
    while next_out < n_out and t_out[next_out] <= t_new:
        tau = (t_out[next_out] - t) / h
        if tau >= 1.0 or t_out[next_out] == t_new:
            for i in range(n):
                work[i] = y_new[i]
        else:
            _propagate(tau, mode, h, cubics, total_u, rates, rate_index, forcing, y, per_rate, work, False)
        observe(work, params, drive, observed)
        for k in range(observed.shape[0]):
            observables[next_out, k] = observed[k]
        if save_state:
            for i in range(n):
                states[next_out, i] = work[i]
        next_out += 1
    return next_out


@numba.njit(cache=True)
def _locate_events(
    t, h, mode, cubics, total_u, rates, rate_index, forcing, y, y_new, per_rate,
    observe, params, drive, event_spec, event_state, work, observed,
):
    """Record the first crossing of each event in the step, located by bisection on the exact propagation.

    The same rule as ``common.locate_events``, on this method's dense output.
    """
    observe(y_new, params, drive, observed)
    for e in range(event_spec.shape[0]):
        end_value = event_value(event_spec[e], observed)
        start_value = event_state[e, EVENT_PREVIOUS_VALUE]
        if np.isnan(event_state[e, EVENT_TIME]) and start_value * end_value <= 0.0 and start_value != 0.0:
            low, high = 0.0, 1.0
            for _ in range(EVENT_BISECTIONS):
                middle = 0.5 * (low + high)
                _propagate(middle, mode, h, cubics, total_u, rates, rate_index, forcing, y, per_rate, work, False)
                observe(work, params, drive, observed)
                if event_value(event_spec[e], observed) * start_value > 0.0:
                    low = middle
                else:
                    high = middle
            event_state[e, EVENT_TIME] = t + high * h
            observe(y_new, params, drive, observed)
        event_state[e, EVENT_PREVIOUS_VALUE] = end_value


EXPONENTIAL_SIGNATURE = stepper_signature(
    coefficients=(vector, types.int64[::1], vector, f64),  # rates, rate_index, forcing, rho1
)


@numba.njit(EXPONENTIAL_SIGNATURE, cache=True)
def integrate_exponential(
    rhs, jac, observe, drive, params, y, t, h, t_out, first_out, observables, states, save_state,
    kl, ku, rank, rates, rate_index, forcing, rho1,
    rtol, atol, max_steps, max_abs_state, stats, event_spec, event_state,
):
    """Advance ``y`` from ``t`` past ``t_out[first_out:]`` by exponential collocation, writing outputs on the way.

    Returns ``(status, t, h, next_out, rejection_reason)`` as every stepper
    of ``common`` does. Only the last output time is a step end.
    """
    n = y.shape[0]
    n_out = t_out.shape[0]
    n_rates = rates.shape[0]
    next_out = first_out
    rejection_reason = NOT_REJECTED
    if next_out >= n_out:
        return STATUS_SUCCESS, t, h, next_out, rejection_reason

    largest_rate = 0.0
    for j in range(n_rates):
        largest_rate = max(largest_rate, abs(rates[j]))
    error_rtol = rtol**ERROR_TOLERANCE_POWER

    per_rate = np.empty((3, n_rates))
    node_state = np.empty(n)
    y_new = np.empty(n)
    error = np.empty(n)
    work = np.empty(n)
    observed = np.empty(observables.shape[1])
    cubics = np.zeros((4, 4))
    previous_cubics = np.zeros((4, 4))  # of the last accepted step, for the predictor
    node_u = np.zeros(4)
    s = np.empty(6)
    jacobian = np.eye(6)
    jacobian_step = 0.0  # h at which the difference Jacobian was computed (0: none yet)

    if not all_finite(y):
        return STATUS_DIVERGED, t, h, next_out, REJECTED_NONFINITE
    alpha0, beta0 = _drive_at(observe, drive, params, rho1, y, observed)
    if not (np.isfinite(alpha0) and np.isfinite(beta0)):
        return STATUS_DIVERGED, t, h, next_out, REJECTED_NONFINITE
    alpha_scale = abs(alpha0)
    if h <= 0.0:
        rhs(t, y, params, drive, work)
        stats[STAT_RHS] += 1
        h = initial_step(y, work, error_rtol, atol)

    t_end = t_out[n_out - 1]
    previous_step = 0.0
    previous_rejected = False
    steps_taken = 0
    while next_out < n_out:
        if steps_taken >= max_steps:
            return STATUS_STEP_BUDGET, t, h, next_out, rejection_reason
        h_proposed = h
        clipped = False
        if t + 1.01 * h >= t_end:
            h = t_end - t
            clipped = True
        if step_size_collapsed(t, h):
            return STATUS_STEP_SIZE_COLLAPSE, t, h, next_out, rejection_reason
        steps_taken += 1
        stats[STAT_STEPS] += 1

        # Predictor: the last step's cubics extrapolated, or constants after a large growth.
        if previous_step > 0.0 and h <= PREDICTOR_MAX_GROWTH * previous_step:
            for k in range(1, 4):
                theta = 1.0 + NODES[k] * h / previous_step
                s[k - 1] = _cubic(previous_cubics[ALPHA], theta)
                s[k + 2] = _cubic(previous_cubics[B], theta)
        else:
            for k in range(3):
                s[k] = alpha0
                s[k + 3] = beta0

        # The mode follows the predicted alpha and is checked again on the
        # solved one; a step where neither way applies is cut.
        _build_cubics(s, alpha0, beta0, h, QUADRATURE, cubics, node_u)
        mode, exponent = _choose_mode(cubics[ALPHA], h, largest_rate, alpha_scale)
        converged = False
        finite = True
        for attempt in range(2):
            if mode == NEITHER:
                break
            fresh = jacobian_step == 0.0 or abs(math.log(h / jacobian_step)) > math.log(JACOBIAN_STEP_RATIO)
            start = s.copy()
            converged, finite = _solve_node_values(
                s, mode, alpha0, beta0, h, rho1, rates, rate_index, forcing, y, observe, drive, params,
                cubics, node_u, per_rate, node_state, observed, jacobian, fresh, rtol, atol, stats,
            )
            if fresh:
                jacobian_step = h
            if finite and not converged and not fresh:
                # Broyden's Jacobian may have drifted: one more try from a difference Jacobian.
                s[:] = start
                converged, finite = _solve_node_values(
                    s, mode, alpha0, beta0, h, rho1, rates, rate_index, forcing, y, observe, drive, params,
                    cubics, node_u, per_rate, node_state, observed, jacobian, True, rtol, atol, stats,
                )
                jacobian_step = h
            if not converged:
                break
            _build_cubics(s, alpha0, beta0, h, QUADRATURE, cubics, node_u)
            settled_mode, exponent = _choose_mode(cubics[ALPHA], h, largest_rate, alpha_scale)
            if settled_mode == mode:
                break
            mode = settled_mode
            converged = False

        if mode == NEITHER:
            rejection_reason = REJECTED_BY_ERROR
            count_rejection(stats, rejection_reason)
            h *= max(MIN_FACTOR, SAFETY * QUADRATURE_EXPONENT_LIMIT / exponent)
            previous_rejected = True
            continue
        if not converged:
            stats[STAT_NEWTON_FAILURES] += 1
            rejection_reason = REJECTED_NEWTON if finite else REJECTED_NONFINITE
            count_rejection(stats, rejection_reason)
            h *= NEWTON_FAILURE_FACTOR if finite else RETRY_FACTOR
            jacobian_step = 0.0
            previous_rejected = True
            continue

        # Step end and error estimate from the solved cubics.
        _build_cubics(s, alpha0, beta0, h, mode, cubics, node_u)
        _propagate(1.0, mode, h, cubics, node_u[3], rates, rate_index, forcing, y, per_rate, y_new, True)
        stats[STAT_RHS] += 1
        end_slope = 0.0
        if mode == INTERNAL_TIME:
            end_slope = _cubic(cubics[G], 1.0)
        # Error of A(1) from the cubic alpha, carried to the state by dz/du = r z + f g.
        u_error = h * cubics[ALPHA, 3] * ERROR_CUBIC_INTEGRAL
        for i in range(n):
            j = rate_index[i]
            z = per_rate[EXPONENTIAL, j] * y[i] + forcing[i] * per_rate[INTEGRAL, j]
            error[i] = (
                abs(forcing[i] * per_rate[ERROR_INTEGRAL, j]) + abs(u_error * (rates[j] * z + forcing[i] * end_slope))
            )
        if not all_finite(y_new) or not all_finite(error):
            rejection_reason = REJECTED_NONFINITE
            count_rejection(stats, rejection_reason)
            h *= RETRY_FACTOR
            previous_rejected = True
            continue
        error_norm = max(weighted_rms(error, y, y_new, error_rtol, atol), MIN_ERROR_NORM)
        factor = min(MAX_FACTOR, max(MIN_FACTOR, SAFETY * error_norm ** (-ERROR_EXPONENT)))
        if error_norm > 1.0:
            rejection_reason = REJECTED_BY_ERROR
            count_rejection(stats, rejection_reason)
            h *= factor
            previous_rejected = True
            continue

        stats[STAT_ACCEPTED] += 1
        t_new = t_end if clipped else t + h
        next_out = _write_outputs(
            t, h, t_new, mode, cubics, node_u[3], rates, rate_index, forcing, y, y_new, per_rate,
            t_out, next_out, observe, params, drive, observables, states, save_state, work, observed,
        )
        if event_spec.shape[0] > 0:
            _locate_events(
                t, h, mode, cubics, node_u[3], rates, rate_index, forcing, y, y_new, per_rate,
                observe, params, drive, event_spec, event_state, work, observed,
            )

        t = t_new
        for i in range(n):
            y[i] = y_new[i]
        if max_abs(y) > max_abs_state:
            return STATUS_DIVERGED, t, h, next_out, REJECTED_NONFINITE
        alpha0, beta0 = _drive_at(observe, drive, params, rho1, y, observed)
        if not (np.isfinite(alpha0) and np.isfinite(beta0)):
            return STATUS_DIVERGED, t, h, next_out, REJECTED_NONFINITE
        alpha_scale = max(alpha_scale, abs(alpha0))
        previous_cubics[:, :] = cubics
        previous_step = h
        h = next_step_size(h, factor, previous_rejected, clipped, h_proposed)
        previous_rejected = False
        rejection_reason = NOT_REJECTED

    return STATUS_SUCCESS, t, h, next_out, rejection_reason


class ExponentialMethod:
    """Exponential collocation bound to its compiled stepper, for systems in modal form."""

    name = "exponential"
    order = 5

    def check_system(self, system):
        """Raise ``ValueError`` unless ``system`` has a modal form without a ridge penalty."""
        if system.modal is None:
            raise ValueError(
                f"method = 'exponential' needs a system in modal form (spectral modes or the exact flow), and "
                f"{system.name} is not; choose rodas4, radau5 or bdf"
            )
        if system.modal.ridge != 0.0:
            raise ValueError(
                f"method = 'exponential' supports ridge = 0 only, and {system.name} has ridge = {system.modal.ridge:g}; "
                "choose rodas4, radau5 or bdf"
            )

    def advance(self, system, params, y, t, h, t_out, next_out, observables, states, save_state,
                rtol, atol, max_steps, max_abs_state, stats, event_spec, event_state):
        """Run the compiled stepper over ``t_out[next_out:]``; see ``integrate_exponential``."""
        modal = system.modal
        return integrate_exponential(
            system.rhs, system.jac, system.observe, system.drive, params, y, t, h,
            t_out, next_out, observables, states, save_state,
            system.kl, system.ku, system.rank,
            np.ascontiguousarray(modal.rates, dtype=np.float64),
            np.ascontiguousarray(modal.rate_index, dtype=np.int64),
            np.ascontiguousarray(modal.forcing, dtype=np.float64),
            float(modal.rho1),
            rtol, atol, max_steps, max_abs_state, stats, event_spec, event_state,
        )
