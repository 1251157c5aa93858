"""Steps of the ``exponential`` method in the internal time ``u = int alpha dt``.

On a step from ``u = 0`` to ``U`` (``U`` has the sign of ``alpha``), mode
``j`` obeys ``dz/du = r_j z + f_i g(u)`` with ``g = beta / alpha``, so

    y_i(u) = e^{r_j u} y_i(0) + f_i int_0^u e^{r_j (u - v)} g(v) dv.

With ``g`` the cubic ``sum_m a_m x^m`` in ``x = u / U`` through its values at
the nodes ``x = c_k``, the integral is ``u sum_m a_m x^m m! phi_{m+1}(r_j u)``.
The nodes sit at fixed ``u``, so the exponentials and phi functions are
computed once per step (``fill_tables``). The node states are affine in
the coefficients of ``g``, and the overlaps ``m1, q1`` are a linear and a
quadratic form in the state (``ModalForm``), so one pass over the rates
writes the overlaps at the nodes as polynomials in those coefficients
(``fill_node_forms``). The Newton iteration on the three node values of
``g`` then costs O(1) per iteration, with an exact Jacobian, and the state
itself is formed once, at the end of the step. The time follows from
``dt/du = 1 / alpha``, with ``1 / alpha`` the cubic through its node values.
"""

import math

import numba
import numpy as np

from .common import STAT_NEWTON_ITERATIONS
from .exponential_basis import (
    ERROR_CUBIC_PEAK,
    FACTORIALS,
    FORCED_M,
    FORCED_Q,
    MIXED_Q,
    NODES,
    START_M,
    START_Q,
    VANDERMONDE_INVERSE,
    interpolate_at_nodes,
    phi_into,
)

# Rows of a node's table for rate j: e^{r_j u_k}, then u_k c_k^m m! phi_{m+1}(r_j u_k) for m = 0..3.
TABLE_ROWS = 5
MAX_NEWTON_ITERATIONS = 10
# The node values of g count as converged when the last correction is below
# this fraction of rtol times the largest |g|.
NEWTON_FRACTION = 0.1
NEWTON_INVERSION_ITERATIONS = 60


@numba.njit(cache=True)
def fill_tables(total_u, rates, tables):
    """Fill ``tables[k - 1, :, j]`` for the nodes ``u_k = c_k total_u``, k = 1..3 (see ``TABLE_ROWS``)."""
    z = np.empty(rates.shape[0])
    scratch = np.empty(rates.shape[0])
    for k in range(1, 4):
        u = NODES[k] * total_u
        for j in range(rates.shape[0]):
            z[j] = rates[j] * u
        table = tables[k - 1]
        phi_into(z, table, scratch)
        # Row 1 + m contains u c_k^m m! phi_{m+1}.
        for m in range(4):
            scale = u * NODES[k] ** m * FACTORIALS[m]
            for j in range(rates.shape[0]):
                table[1 + m, j] *= scale


@numba.njit(cache=True)
def node_state(node, g_coefficients, tables, rate_index, forcing, y0, out):
    """Write the state at node ``node`` (1..3) for the cubic ``g`` with monomial ``g_coefficients`` into ``out``."""
    table = tables[node - 1]
    a0, a1, a2, a3 = g_coefficients[0], g_coefficients[1], g_coefficients[2], g_coefficients[3]
    for i in range(y0.shape[0]):
        j = rate_index[i]
        integral = table[1, j] * a0 + table[2, j] * a1 + table[3, j] * a2 + table[4, j] * a3
        out[i] = table[0, j] * y0[i] + forcing[i] * integral


@numba.njit(cache=True)
def dense_rates(u, total_u, g_coefficients, rates, per_rate):
    """Write ``e^{r_j u}`` and the forcing integrals ``I_j(u)`` at internal time ``u`` of the step into ``per_rate[0:2]``.

    ``per_rate`` has at least 2 rows; a state follows as ``y_i = E_j y0_i + f_i I_j``.
    """
    ratio = u / total_u
    weights = np.empty(4)
    power = 1.0
    for m in range(4):
        weights[m] = u * g_coefficients[m] * power * FACTORIALS[m]
        power *= ratio
    n_rates = rates.shape[0]
    phis = np.empty((5, n_rates))
    for j in range(n_rates):
        per_rate[0, j] = rates[j] * u
    phi_into(per_rate[0], phis, per_rate[1])
    for j in range(n_rates):
        per_rate[0, j] = phis[0, j]
        per_rate[1, j] = weights[0] * phis[1, j] + weights[1] * phis[2, j] + weights[2] * phis[3, j] + weights[3] * phis[4, j]


@numba.njit(cache=True)
def end_state_and_error(
    end_table, g_coefficients, g_error, total_u, time_error, alpha_end, ratio_end, rates, inverse_rates, rate_index,
    forcing, y0, integrals, rate_errors, y_new, error,
):
    """Write the state at the step's end into ``y_new`` and the estimate of its error into ``error``.

    The estimate has three parts. The first is the forcing of the error
    cubic ``g_error`` (the cubic of g minus its quadratic through 0, c_2 and
    1) at the end. Inside the step that cubic reaches
    ``ERROR_CUBIC_PEAK |leading|``, which a mode integrates over at most
    ``|U|`` or its own time ``1 / |r_j|``. The fast modes follow g, so the
    error at the end misses this second part, yet the outputs inside steps
    see it. The third is the error of the time, ``time_error``, carried by
    ``dy/dt``. ``integrals`` receives the forcing integrals of the end, which
    ``advance_start_sums`` reuses, and ``rate_errors`` is a work array; both
    have one entry per rate.
    """
    a0, a1, a2, a3 = g_coefficients[0], g_coefficients[1], g_coefficients[2], g_coefficients[3]
    e0, e1, e2, e3 = g_error[0], g_error[1], g_error[2], g_error[3]
    interior_scale = abs(e3) * ERROR_CUBIC_PEAK
    for j in range(rates.shape[0]):
        integrals[j] = end_table[1, j] * a0 + end_table[2, j] * a1 + end_table[3, j] * a2 + end_table[4, j] * a3
        end_error = end_table[1, j] * e0 + end_table[2, j] * e1 + end_table[3, j] * e2 + end_table[4, j] * e3
        interior = interior_scale * min(abs(total_u), inverse_rates[j])
        rate_errors[j] = max(abs(end_error), interior)
    time_scale = abs(time_error * alpha_end)
    for i in range(y0.shape[0]):
        j = rate_index[i]
        state = end_table[0, j] * y0[i] + forcing[i] * integrals[j]
        y_new[i] = state
        error[i] = abs(forcing[i]) * rate_errors[j] + time_scale * abs(rates[j] * state + forcing[i] * ratio_end)


@numba.njit(cache=True, fastmath={"reassoc", "contract"})
def fill_node_forms(tables, rate_sums, constants, linear, quadratic):
    """Write the overlaps at the three nodes as polynomials in the monomial coefficients ``a`` of ``g``.

    A node state is ``y_i = E_j y0_i + f_i I_j`` with ``I_j = sum_m T_jm a_m``
    (the table rows), so at node k

        m1 = constants[k, 0] + linear[k, 0] . a,
        q1 = constants[k, 1] + linear[k, 1] . a + a . quadratic[k] a,

    and the Newton iteration evaluates them in O(1).
    """
    for k in range(3):
        table = tables[k]
        # Scalar accumulators, so that the loop over the rates keeps them in registers.
        c_m = c_q = 0.0
        l_m0 = l_m1 = l_m2 = l_m3 = 0.0
        l_q0 = l_q1 = l_q2 = l_q3 = 0.0
        q00 = q01 = q02 = q03 = q11 = q12 = q13 = q22 = q23 = q33 = 0.0
        for j in range(table.shape[1]):
            decay = table[0, j]
            w0, w1, w2, w3 = table[1, j], table[2, j], table[3, j], table[4, j]
            c_m += decay * rate_sums[START_M, j]
            c_q += decay * decay * rate_sums[START_Q, j]
            mixed = decay * rate_sums[MIXED_Q, j]
            forced_m = rate_sums[FORCED_M, j]
            l_m0 += forced_m * w0
            l_m1 += forced_m * w1
            l_m2 += forced_m * w2
            l_m3 += forced_m * w3
            l_q0 += mixed * w0
            l_q1 += mixed * w1
            l_q2 += mixed * w2
            l_q3 += mixed * w3
            f0 = rate_sums[FORCED_Q, j] * w0
            f1 = rate_sums[FORCED_Q, j] * w1
            f2 = rate_sums[FORCED_Q, j] * w2
            q00 += f0 * w0
            q01 += f0 * w1
            q02 += f0 * w2
            q03 += f0 * w3
            q11 += f1 * w1
            q12 += f1 * w2
            q13 += f1 * w3
            q22 += f2 * w2
            q23 += f2 * w3
            q33 += rate_sums[FORCED_Q, j] * w3 * w3
        constants[k, 0] = c_m
        constants[k, 1] = c_q
        linear[k, 0, 0], linear[k, 0, 1], linear[k, 0, 2], linear[k, 0, 3] = l_m0, l_m1, l_m2, l_m3
        linear[k, 1, 0], linear[k, 1, 1], linear[k, 1, 2], linear[k, 1, 3] = l_q0, l_q1, l_q2, l_q3
        quadratic[k, 0, 0], quadratic[k, 1, 1], quadratic[k, 2, 2], quadratic[k, 3, 3] = q00, q11, q22, q33
        quadratic[k, 0, 1] = quadratic[k, 1, 0] = q01
        quadratic[k, 0, 2] = quadratic[k, 2, 0] = q02
        quadratic[k, 0, 3] = quadratic[k, 3, 0] = q03
        quadratic[k, 1, 2] = quadratic[k, 2, 1] = q12
        quadratic[k, 1, 3] = quadratic[k, 3, 1] = q13
        quadratic[k, 2, 3] = quadratic[k, 3, 2] = q23


@numba.njit(cache=True)
def solve_node_values(
    g_nodes, drive, rho1, constants, linear, quadratic, g_coefficients, alphas, ratios, rtol, atol, stats,
):
    """Solve ``g_k = beta(y_k) / alpha(y_k)``, k = 1..3, by Newton's method from ``g_nodes``, in place.

    The overlaps at the nodes come from ``fill_node_forms``, so each
    iteration, with its exact Jacobian, costs O(1). ``g_nodes[0]`` is the
    value at the step start. Returns ``(converged, finite)``; on success
    ``g_coefficients``, ``alphas`` and ``ratios`` are those of the final
    ``g_nodes``.
    """
    current = np.empty(3)
    jacobian = np.empty((3, 3))
    gradient_m = np.empty(4)
    gradient_q = np.empty(4)
    previous_norm = np.inf
    converged = False
    for iteration in range(MAX_NEWTON_ITERATIONS + 1):
        interpolate_at_nodes(g_nodes, g_coefficients)
        for k in range(1, 4):
            m1 = constants[k - 1, 0]
            q1 = constants[k - 1, 1]
            for m in range(4):
                curvature = 0.0
                for l in range(4):
                    curvature += quadratic[k - 1, m, l] * g_coefficients[l]
                gradient_m[m] = linear[k - 1, 0, m]
                gradient_q[m] = linear[k - 1, 1, m] + 2.0 * curvature
                m1 += linear[k - 1, 0, m] * g_coefficients[m]
                q1 += (linear[k - 1, 1, m] + curvature) * g_coefficients[m]
            alpha, beta, alpha_q, alpha_m, beta_q, beta_m = drive(q1, m1, rho1)
            if not (math.isfinite(alpha) and math.isfinite(beta)) or alpha == 0.0:
                return False, False
            ratio = beta / alpha
            alphas[k] = alpha
            ratios[k] = ratio
            current[k - 1] = g_nodes[k] - ratio
            # d(beta / alpha) = (d beta - ratio d alpha) / alpha, by the chain rule through q1 and m1.
            along_q = (beta_q - ratio * alpha_q) / alpha
            along_m = (beta_m - ratio * alpha_m) / alpha
            for l in range(1, 4):
                total = 0.0
                for m in range(4):
                    total += (along_q * gradient_q[m] + along_m * gradient_m[m]) * VANDERMONDE_INVERSE[m, l]
                jacobian[k - 1, l - 1] = (1.0 if k == l else 0.0) - total
        if converged:
            return True, True
        if iteration == MAX_NEWTON_ITERATIONS:
            break
        stats[STAT_NEWTON_ITERATIONS] += 1
        correction = np.linalg.solve(jacobian, current)
        scale = abs(g_nodes[0])
        for k in range(1, 4):
            g_nodes[k] -= correction[k - 1]
            scale = max(scale, abs(g_nodes[k]))
        correction_norm = 0.0
        for k in range(3):
            correction_norm = max(correction_norm, abs(correction[k]) / (NEWTON_FRACTION * rtol * scale + atol))
        if not math.isfinite(correction_norm):
            return False, False
        if correction_norm <= 1.0:
            # One more pass evaluates alphas and ratios at the final node values.
            converged = True
        elif iteration >= 3 and correction_norm > previous_norm:
            return False, True
        previous_norm = correction_norm
    return False, True


@numba.njit(cache=True)
def fill_time_polynomial(total_u, inverse_alpha_coefficients, out):
    """Write the coefficients ``out[p - 1]`` of ``x^p``, p = 1..4, of ``t(x) - t0 = U int_0^x w`` on the step.

    ``w`` is the cubic of ``1 / alpha`` in ``x = u / U``.
    """
    for p in range(4):
        out[p] = total_u * inverse_alpha_coefficients[p] / (p + 1)


@numba.njit(cache=True)
def time_at(x, t0, time_polynomial):
    """Return the time at ``x = u / U`` of the step."""
    return t0 + x * (time_polynomial[0] + x * (time_polynomial[1] + x * (time_polynomial[2] + x * time_polynomial[3])))


@numba.njit(cache=True)
def fraction_at(t, t0, t_end, time_polynomial):
    """Return ``x`` in [0, 1] with ``time_at(x) = t``, by Newton's method on the monotone quartic."""
    x = (t - t0) / (t_end - t0)
    for _ in range(NEWTON_INVERSION_ITERATIONS):
        slope = time_polynomial[0] + x * (2.0 * time_polynomial[1] + x * (3.0 * time_polynomial[2] + x * 4.0 * time_polynomial[3]))
        step = (time_at(x, t0, time_polynomial) - t) / slope
        x = min(1.0, max(0.0, x - step))
        if abs(step) <= 4.0 * np.finfo(np.float64).eps:
            break
    return x
