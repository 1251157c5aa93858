"""Nodes, cubics and phi functions shared by the two step kinds of the ``exponential`` method."""

import math

import numba
import numpy as np

# x = 0 and the Radau IIA nodes (4 -/+ sqrt 6) / 10, 1 of a step: the
# scalars of the drive are cubics through their values there.
NODES = np.array([0.0, (4.0 - math.sqrt(6.0)) / 10.0, (4.0 + math.sqrt(6.0)) / 10.0, 1.0])
# Monomial coefficients of the cubic through values v at NODES: VANDERMONDE_INVERSE @ v.
VANDERMONDE_INVERSE = np.linalg.inv(np.vander(NODES, 4, increasing=True))
# int_0^1 x (x - c_2) (x - 1) dx: the integral of the cubic minus the quadratic
# through 0, c_2, 1, per unit of the cubic's leading coefficient.
ERROR_CUBIC_INTEGRAL = (2.0 * NODES[2] - 1.0) / 12.0
FACTORIALS = np.array([1.0, 1.0, 2.0, 6.0])
# Below this |z| the phi functions are summed as series, where the recurrence loses digits.
SERIES_LIMIT = 1.0
# Terms of the series of phi_4 for |z| below each bound: the first term left
# out, |z|^n / (n + 4)!, is below 1e-18, about 3e-17 of phi_4 >= 1 / 24 e.
SERIES_BOUNDS = np.array([1e-3, 1e-2, 1e-1, SERIES_LIMIT])
SERIES_LENGTHS = np.array([5, 6, 9, 17])
INVERSE_FACTORIALS = np.array([1.0 / math.factorial(k) for k in range(SERIES_LENGTHS[-1] + 5)])


@numba.njit(cache=True)
def phi_values(z):
    """Return ``(phi_0(z), .., phi_4(z))``, ``phi_k(z) = int_0^1 e^{(1 - x) z} x^(k-1) / (k-1)! dx``, ``phi_0 = e^z``."""
    if abs(z) < SERIES_LIMIT:
        # phi_4(z) = sum_j z^j / (j + 4)!, then phi_k = 1 / k! + z phi_{k+1} downwards, which is stable.
        size = abs(z)
        terms = SERIES_LENGTHS[-1]
        for band in range(SERIES_BOUNDS.shape[0]):
            if size < SERIES_BOUNDS[band]:
                terms = SERIES_LENGTHS[band]
                break
        phi4 = 0.0
        for j in range(terms - 1, -1, -1):
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
def cubic_value(coefficients, x):
    return ((coefficients[3] * x + coefficients[2]) * x + coefficients[1]) * x + coefficients[0]


@numba.njit(cache=True)
def cubic_integral(coefficients, x):
    """Return ``int_0^x`` of the cubic with monomial ``coefficients``."""
    return x * (coefficients[0] + x * (coefficients[1] / 2.0 + x * (coefficients[2] / 3.0 + x * coefficients[3] / 4.0)))


@numba.njit(cache=True)
def interpolate_at_nodes(values, out):
    """Write the monomial coefficients of the cubic through ``(NODES[k], values[k])`` into ``out``."""
    for p in range(4):
        total = 0.0
        for k in range(4):
            total += VANDERMONDE_INVERSE[p, k] * values[k]
        out[p] = total


@numba.njit(cache=True)
def set_error_cubic(leading, out):
    """Write ``leading x (x - c_2) (x - 1)``, the cubic minus the quadratic through 0, c_2 and 1."""
    out[0] = 0.0
    out[1] = leading * NODES[2]
    out[2] = -leading * (1.0 + NODES[2])
    out[3] = leading


# Rows of the per-rate sums of the overlap forms (``ModalForm``), for the
# equations i and pairs p of rate j. Fixed in a run: N_j = sum c_i f_i and
# S_j = sum v_p f_r f_s. From the step's start state y0: M_j = sum c_i y0_i,
# P_j = sum v_p y0_r y0_s and R_j = sum v_p (y0_r f_s + f_r y0_s).
FORCED_M, FORCED_Q, START_M, START_Q, MIXED_Q = 0, 1, 2, 3, 4
RATE_SUM_ROWS = 5


@numba.njit(cache=True)
def fill_fixed_sums(m1_weights, q1_rows, q1_cols, q1_values, rate_index, forcing, rate_sums):
    """Fill the rows ``FORCED_M`` and ``FORCED_Q`` of ``rate_sums``, which do not change in a run."""
    rate_sums[FORCED_M, :] = 0.0
    rate_sums[FORCED_Q, :] = 0.0
    for i in range(m1_weights.shape[0]):
        rate_sums[FORCED_M, rate_index[i]] += m1_weights[i] * forcing[i]
    for p in range(q1_values.shape[0]):
        r, c = q1_rows[p], q1_cols[p]
        rate_sums[FORCED_Q, rate_index[r]] += q1_values[p] * forcing[r] * forcing[c]


@numba.njit(cache=True)
def fill_start_sums(y0, m1_weights, q1_rows, q1_cols, q1_values, rate_index, forcing, rate_sums):
    """Fill the rows ``START_M``, ``START_Q`` and ``MIXED_Q`` of ``rate_sums`` for the start state ``y0``."""
    rate_sums[START_M, :] = 0.0
    rate_sums[START_Q, :] = 0.0
    rate_sums[MIXED_Q, :] = 0.0
    for i in range(y0.shape[0]):
        rate_sums[START_M, rate_index[i]] += m1_weights[i] * y0[i]
    for p in range(q1_values.shape[0]):
        r, c = q1_rows[p], q1_cols[p]
        j = rate_index[r]
        rate_sums[START_Q, j] += q1_values[p] * y0[r] * y0[c]
        rate_sums[MIXED_Q, j] += q1_values[p] * (y0[r] * forcing[c] + forcing[r] * y0[c])


@numba.njit(cache=True)
def advance_start_sums(decay, integral, rate_sums):
    """Move the START and MIXED rows of ``rate_sums`` to the end of a step, in O(rates).

    With ``y_i' = E_j y0_i + f_i I_j`` at the end (``decay`` E, ``integral``
    I), ``M' = E M + I N``, ``P' = E^2 P + E I R + I^2 S`` and
    ``R' = E R + 2 I S``: the sums of the new state, up to rounding, without
    a pass over it.
    """
    for j in range(decay.shape[0]):
        e, i = decay[j], integral[j]
        forced_q = rate_sums[FORCED_Q, j]
        rate_sums[START_M, j] = e * rate_sums[START_M, j] + i * rate_sums[FORCED_M, j]
        rate_sums[START_Q, j] = e * (e * rate_sums[START_Q, j] + i * rate_sums[MIXED_Q, j]) + i * i * forced_q
        rate_sums[MIXED_Q, j] = e * rate_sums[MIXED_Q, j] + 2.0 * i * forced_q


@numba.njit(cache=True, fastmath={"reassoc", "contract"})
def overlaps_from_rates(decay, integral, rate_sums):
    """Return ``(m1, q1)`` of the state ``y_i = E_j y0_i + f_i I_j`` (``decay`` E, ``integral`` I) in O(rates)."""
    m1 = 0.0
    q1 = 0.0
    for j in range(decay.shape[0]):
        e, i = decay[j], integral[j]
        m1 += e * rate_sums[START_M, j] + i * rate_sums[FORCED_M, j]
        q1 += e * (e * rate_sums[START_Q, j] + i * rate_sums[MIXED_Q, j]) + i * i * rate_sums[FORCED_Q, j]
    return m1, q1


@numba.njit(cache=True)
def drive_at(observe, drive, params, rho1, state, observed):
    """Return ``(alpha, beta)`` of the drive at ``state``, whose first two observables are ``m1, q1``."""
    observe(state, params, drive, observed)
    alpha, beta, _, _, _, _ = drive(observed[1], observed[0], rho1)
    return alpha, beta
