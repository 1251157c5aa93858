"""Steps of the ``exponential`` method in the internal time ``u = int alpha dt``.

On a step from ``u = 0`` to ``U`` (``U`` has the sign of ``alpha``), mode
``j`` obeys ``dz/du = r_j z + f_i g(u)`` with ``g = beta / alpha``, so

    y_i(u) = e^{r_j u} y_i(0) + f_i int_0^u e^{r_j (u - v)} g(v) dv.

With ``g`` the cubic ``sum_m a_m x^m`` in ``x = u / U`` through its values at
the nodes ``x = c_k``, the integral is ``u sum_m a_m x^m m! phi_{m+1}(r_j u)``.
The nodes sit at fixed ``u``, so the exponentials and phi functions are
computed once per step (``fill_tables``), and the Newton iteration on the
three node values of ``g`` only recombines them. Its Jacobian is exact: the
node states are linear in ``g``, and the system's Jacobian gives the
gradients of ``alpha`` and ``beta`` (``ModalForm``). The time follows from
``dt/du = 1 / alpha``, with ``1 / alpha`` the cubic through its node values.
"""

import math

import numba
import numpy as np

from .common import STAT_JACOBIANS, STAT_NEWTON_ITERATIONS, STAT_RHS, all_finite
from .exponential_basis import (
    FACTORIALS,
    NODES,
    VANDERMONDE_INVERSE,
    drive_at,
    interpolate_at_nodes,
    phi_values,
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
    for k in range(1, 4):
        u = NODES[k] * total_u
        for j in range(rates.shape[0]):
            phi0, phi1, phi2, phi3, phi4 = phi_values(rates[j] * u)
            tables[k - 1, 0, j] = phi0
            tables[k - 1, 1, j] = u * phi1
            power = NODES[k]
            tables[k - 1, 2, j] = u * power * phi2
            power *= NODES[k]
            tables[k - 1, 3, j] = u * power * 2.0 * phi3
            power *= NODES[k]
            tables[k - 1, 4, j] = u * power * 6.0 * phi4


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
def dense_state(u, total_u, g_coefficients, rates, rate_index, forcing, y0, per_rate, out):
    """Write the state at internal time ``u`` of the step into ``out`` (``per_rate`` is scratch, 2 x rates)."""
    ratio = u / total_u
    weights = np.empty(4)
    power = 1.0
    for m in range(4):
        weights[m] = g_coefficients[m] * power * FACTORIALS[m]
        power *= ratio
    for j in range(rates.shape[0]):
        phi0, phi1, phi2, phi3, phi4 = phi_values(rates[j] * u)
        per_rate[0, j] = phi0
        per_rate[1, j] = u * (weights[0] * phi1 + weights[1] * phi2 + weights[2] * phi3 + weights[3] * phi4)
    for i in range(y0.shape[0]):
        j = rate_index[i]
        out[i] = per_rate[0, j] * y0[i] + forcing[i] * per_rate[1, j]


@numba.njit(cache=True)
def residual(
    g_nodes, tables, rate_index, forcing, y0, observe, drive, params, rho1, g_coefficients, node_states,
    alphas, ratios, observed, out,
):
    """Write ``g_k - beta(y_k) / alpha(y_k)`` for k = 1..3 into ``out``, with the node states, alphas and ratios.

    ``g_nodes[0]`` is the value at the step start. Returns ``False`` when a
    node state or drive value is not finite.
    """
    interpolate_at_nodes(g_nodes, g_coefficients)
    for k in range(1, 4):
        node_state(k, g_coefficients, tables, rate_index, forcing, y0, node_states[k - 1])
        if not all_finite(node_states[k - 1]):
            return False
        alpha, beta = drive_at(observe, drive, params, rho1, node_states[k - 1], observed)
        alphas[k] = alpha
        if not (math.isfinite(alpha) and math.isfinite(beta)) or alpha == 0.0:
            return False
        ratios[k] = beta / alpha
        out[k - 1] = g_nodes[k] - ratios[k]
    return True


@numba.njit(cache=True)
def exact_jacobian(
    alphas, ratios, node_states, tables, rate_index, forcing, jac, params, drive, band, gradient_u, gradients, out,
):
    """Write the Jacobian of ``residual`` in ``g_1..g_3`` into ``out`` (3 x 3).

    ``d y_i(u_k) / d g_l = f_i sum_m table_m VANDERMONDE_INVERSE[m, l]``, and
    ``grad (beta / alpha) = (grad beta - g grad alpha) / alpha`` with the
    gradients from the first two columns of the system's ``V``.
    """
    n = node_states.shape[1]
    sums = np.empty(4)
    for k in range(1, 4):
        state = node_states[k - 1]
        jac(0.0, state, params, drive, band, gradient_u, gradients)
        table = tables[k - 1]
        g = ratios[k]
        # sums[m] = sum_i (grad beta - g grad alpha)_i f_i table[1 + m]; the Jacobian's row follows by
        # VANDERMONDE_INVERSE, so the loop over the equations is done once per node.
        sums[:] = 0.0
        for i in range(n):
            j = rate_index[i]
            weight = (gradients[i, 1] - g * gradients[i, 0]) * forcing[i]
            sums[0] += weight * table[1, j]
            sums[1] += weight * table[2, j]
            sums[2] += weight * table[3, j]
            sums[3] += weight * table[4, j]
        for l in range(1, 4):
            total = 0.0
            for m in range(4):
                total += sums[m] * VANDERMONDE_INVERSE[m, l]
            out[k - 1, l - 1] = (1.0 if k == l else 0.0) - total / alphas[k]


@numba.njit(cache=True)
def solve_node_values(
    g_nodes, tables, rate_index, forcing, y0, observe, jac, drive, params, rho1, g_coefficients, node_states,
    alphas, ratios, observed, band, gradient_u, gradients, rtol, atol, stats,
):
    """Solve ``g_k = beta(y_k) / alpha(y_k)``, k = 1..3, by Newton's method from ``g_nodes``, in place.

    The exact Jacobian is computed at the start and again when the
    iteration contracts slowly. On the benchmark system, a Jacobian kept
    from the last step cost more iterations than it saved. Returns ``(converged, finite)``; on success the node states,
    alphas and ratios are those of the final ``g_nodes``.
    """
    current = np.empty(3)
    jacobian = np.empty((3, 3))
    if not residual(g_nodes, tables, rate_index, forcing, y0, observe, drive, params, rho1, g_coefficients,
                    node_states, alphas, ratios, observed, current):
        return False, False
    stats[STAT_RHS] += 3
    fresh = True
    previous_norm = np.inf
    for iteration in range(MAX_NEWTON_ITERATIONS):
        if fresh:
            exact_jacobian(alphas, ratios, node_states, tables, rate_index, forcing, jac, params, drive, band,
                           gradient_u, gradients, jacobian)
            stats[STAT_JACOBIANS] += 1
            fresh = False
        stats[STAT_NEWTON_ITERATIONS] += 1
        correction = np.linalg.solve(jacobian, current)
        scale = abs(g_nodes[0])
        for k in range(1, 4):
            g_nodes[k] -= correction[k - 1]
            scale = max(scale, abs(g_nodes[k]))
        if not residual(g_nodes, tables, rate_index, forcing, y0, observe, drive, params, rho1, g_coefficients,
                        node_states, alphas, ratios, observed, current):
            return False, False
        stats[STAT_RHS] += 3
        correction_norm = 0.0
        for k in range(3):
            correction_norm = max(correction_norm, abs(correction[k]) / (NEWTON_FRACTION * rtol * scale + atol))
        if correction_norm <= 1.0:
            return True, True
        # A slow contraction means the Jacobian of the start no longer fits.
        if correction_norm > 0.25 * previous_norm or (iteration == 0 and correction_norm > 1e3):
            if iteration >= 3 and correction_norm > previous_norm:
                return False, True
            fresh = True
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
