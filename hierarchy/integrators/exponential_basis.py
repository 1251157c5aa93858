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
# max over [0, 1] of |x (x - c_2) (x - 1)|, at the root of its derivative in (0, c_2).
_PEAK_X = ((1.0 + NODES[2]) - math.sqrt((1.0 + NODES[2]) ** 2 - 3.0 * NODES[2])) / 3.0
ERROR_CUBIC_PEAK = float(_PEAK_X * (NODES[2] - _PEAK_X) * (1.0 - _PEAK_X))
FACTORIALS = np.array([1.0, 1.0, 2.0, 6.0])
# Below this |z| the phi functions are summed as series, where the recurrence loses digits.
SERIES_LIMIT = 1.0
# Terms of the series of phi_4 for |z| < 1: the first term left out, 1 / 21!, is 2e-20.
SERIES_TERMS = 17
INVERSE_FACTORIALS = np.array([1.0 / math.factorial(k) for k in range(SERIES_TERMS + 5)])

# e^z = 2^k e^r with k the integer nearest z / ln 2 and |r| <= ln 2 / 2 (the
# reduction of W. J. Cody and W. Waite, "Software Manual for the Elementary
# Functions", Prentice-Hall 1980, chapter 6). ln 2 = LN2_HIGH + LN2_LOW,
# LN2_HIGH with its low 32 mantissa bits zero, so that k LN2_HIGH is exact.
LN2_HIGH = 0.6931467056274414
LN2_LOW = 4.7493250390316726e-07
LOG2_E = 1.4426950408889634
# Adding 1.5 * 2^52 rounds to an integer, and the integer k then sits in the
# low bits of the sum: its bit pattern is ROUND_BITS + k.
ROUND_SHIFT = 6755399441055744.0
ROUND_BITS = 0x4338000000000000
EXPONENT_BIAS = 1023
# Beyond |z| = 708, 2^k leaves the normal range. So e^z is taken as 0 below
# z = -708 (e^-708 = 3e-308) and as inf above z = 708 (e^708 = 3e307).
EXP_LIMIT = 708.0
# Taylor series of e^r to r^13 / 13!: the first term left out is below 3e-18 of e^r for |r| <= ln 2 / 2.
EXP_TERMS = 14


@numba.njit(cache=True, fastmath={"contract"})
def exp_into(z, out, scratch):
    """Write ``e^{z_j}`` into ``out``, in loops free of calls and branches so that they vectorise.

    The values agree with ``math.exp`` to a few units in the last place;
    ``scratch`` is a work array of the size of ``z``.
    """
    n = z.shape[0]
    for j in range(n):
        clipped = min(max(z[j], -EXP_LIMIT), EXP_LIMIT)
        shifted = clipped * LOG2_E + ROUND_SHIFT
        scratch[j] = shifted
        k = shifted - ROUND_SHIFT
        r = (clipped - k * LN2_HIGH) - k * LN2_LOW
        value = INVERSE_FACTORIALS[EXP_TERMS - 1]
        for m in range(EXP_TERMS - 2, -1, -1):
            value = value * r + INVERSE_FACTORIALS[m]
        out[j] = value
    bits = scratch.view(np.int64)
    for j in range(n):
        bits[j] = (bits[j] - ROUND_BITS + EXPONENT_BIAS) << 52
    for j in range(n):
        value = out[j] * scratch[j]
        x = z[j]
        value = 0.0 if x < -EXP_LIMIT else value
        value = math.inf if x > EXP_LIMIT else value
        out[j] = x if x != x else value


# error_model="numpy": 1 / z at z = 0 gives inf in the branch not selected, not an exception.
@numba.njit(cache=True, fastmath={"contract"}, error_model="numpy")
def phi_into(z, out, scratch):
    """Write ``phi_0(z_j) .. phi_4(z_j)`` into ``out[0..4, j]``, ``phi_k(z) = int_0^1 e^{(1 - x) z} x^(k-1) / (k-1)! dx``.

    ``phi_0 = e^z``. For |z| >= 1 the recurrence ``phi_{k+1} = (phi_k - 1/k!) / z``,
    below it the series of ``phi_4`` summed upwards with ``phi_k = 1/k! + z phi_{k+1}``,
    which is stable. Both are computed and one is selected, so that the
    loop vectorises; ``scratch`` is a work array of the size of ``z``.
    """
    exp_into(z, out[0], scratch)
    for j in range(z.shape[0]):
        x = z[j]
        phi4 = INVERSE_FACTORIALS[SERIES_TERMS + 3]
        for m in range(SERIES_TERMS - 2, -1, -1):
            phi4 = phi4 * x + INVERSE_FACTORIALS[m + 4]
        phi3 = 1.0 / 6.0 + x * phi4
        phi2 = 0.5 + x * phi3
        phi1 = 1.0 + x * phi2
        inverse = 1.0 / x
        recurrence1 = (out[0, j] - 1.0) * inverse
        recurrence2 = (recurrence1 - 1.0) * inverse
        recurrence3 = (recurrence2 - 0.5) * inverse
        recurrence4 = (recurrence3 - 1.0 / 6.0) * inverse
        small = abs(x) < SERIES_LIMIT
        out[1, j] = phi1 if small else recurrence1
        out[2, j] = phi2 if small else recurrence2
        out[3, j] = phi3 if small else recurrence3
        out[4, j] = phi4 if small else recurrence4


def phi_values(z):
    """Return ``(phi_0(z), .., phi_4(z))`` for one ``z`` (see ``phi_into``); for tests and inspection."""
    values = np.empty((5, 1))
    phi_into(np.array([float(z)]), values, np.empty(1))
    return tuple(float(value) for value in values[:, 0])


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
