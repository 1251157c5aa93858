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
SERIES_TERMS = 18
INVERSE_FACTORIALS = np.array([1.0 / math.factorial(k) for k in range(SERIES_TERMS + 5)])


@numba.njit(cache=True)
def phi_values(z):
    """Return ``(phi_0(z), .., phi_4(z))``, ``phi_k(z) = int_0^1 e^{(1 - x) z} x^(k-1) / (k-1)! dx``, ``phi_0 = e^z``."""
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


@numba.njit(cache=True)
def drive_at(observe, drive, params, rho1, state, observed):
    """Return ``(alpha, beta)`` of the drive at ``state``, whose first two observables are ``m1, q1``."""
    observe(state, params, drive, observed)
    alpha, beta, _, _, _, _ = drive(observed[1], observed[0], rho1)
    return alpha, beta
