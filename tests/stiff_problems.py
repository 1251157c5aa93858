"""Standard stiff test problems as structured systems with dense Jacobians, for the integrator tests."""

import numba
import numpy as np

from hierarchy.integrators import StructuredSystem
from hierarchy.kernel_types import JAC_SIGNATURE, OBSERVE_SIGNATURE, RHS_SIGNATURE

# Robertson's chemical kinetics: reference solution at t = 1e11 published
# with problem ROBER of the Test Set for IVP Solvers (University of Bari).
ROBERTSON_REFERENCE_T = 1e11
ROBERTSON_REFERENCE = np.array([0.2083340149701255e-07, 0.8333360770334713e-13, 0.9999999791665050])


@numba.njit(RHS_SIGNATURE, cache=True)
def robertson_rhs(t, y, params, drive, out):
    out[0] = -0.04 * y[0] + 1e4 * y[1] * y[2]
    out[1] = 0.04 * y[0] - 1e4 * y[1] * y[2] - 3e7 * y[1] * y[1]
    out[2] = 3e7 * y[1] * y[1]


@numba.njit(JAC_SIGNATURE, cache=True)
def robertson_jacobian(t, y, params, drive, band, U, V):
    # Dense 3 x 3 Jacobian stored as a band with kl = ku = 2.
    band[0, 2] = -0.04
    band[0, 3] = 1e4 * y[2]
    band[0, 4] = 1e4 * y[1]
    band[1, 1] = 0.04
    band[1, 2] = -1e4 * y[2] - 6e7 * y[1]
    band[1, 3] = -1e4 * y[1]
    band[2, 0] = 0.0
    band[2, 1] = 6e7 * y[1]
    band[2, 2] = 0.0


@numba.njit(OBSERVE_SIGNATURE, cache=True)
def observe_state(y, params, drive, out):
    for i in range(y.shape[0]):
        out[i] = y[i]


@numba.njit(RHS_SIGNATURE, cache=True)
def logistic_rhs(t, y, params, drive, out):
    out[0] = y[0] * (1.0 - y[0])


@numba.njit(JAC_SIGNATURE, cache=True)
def logistic_jacobian(t, y, params, drive, band, U, V):
    band[0, 0] = 1.0 - 2.0 * y[0]


@numba.njit(RHS_SIGNATURE, cache=True)
def blowup_rhs(t, y, params, drive, out):
    out[0] = y[0] * y[0]


@numba.njit(JAC_SIGNATURE, cache=True)
def blowup_jacobian(t, y, params, drive, band, U, V):
    band[0, 0] = 2.0 * y[0]


@numba.njit(RHS_SIGNATURE, cache=True)
def van_der_pol_rhs(t, y, params, drive, out):
    # Stiff Van der Pol oscillator in the scaling of Hairer and Wanner, eps = params[0].
    out[0] = y[1]
    out[1] = ((1.0 - y[0] * y[0]) * y[1] - y[0]) / params[0]


@numba.njit(JAC_SIGNATURE, cache=True)
def van_der_pol_jacobian(t, y, params, drive, band, U, V):
    band[0, 1] = 0.0
    band[0, 2] = 1.0
    band[1, 0] = (-2.0 * y[0] * y[1] - 1.0) / params[0]
    band[1, 1] = (1.0 - y[0] * y[0]) / params[0]


def robertson():
    return StructuredSystem(
        "robertson", np.array([1.0, 0.0, 0.0]), np.zeros(1), robertson_rhs, robertson_jacobian,
        observe_state, ("y1", "y2", "y3"), kl=2, ku=2, rank=0,
    )


def logistic(y0=0.01):
    return StructuredSystem(
        "logistic", np.array([y0]), np.zeros(1), logistic_rhs, logistic_jacobian, observe_state, ("y",), 0, 0, 0
    )


def logistic_exact(t, y0=0.01):
    return 1.0 / (1.0 + np.exp(-t) * (1.0 / y0 - 1.0))


def blowup():
    """``y' = y^2``, ``y(0) = 1``: the solution ``1 / (1 - t)`` blows up at ``t = 1``."""
    return StructuredSystem("blowup", np.array([1.0]), np.zeros(1), blowup_rhs, blowup_jacobian, observe_state, ("y",), 0, 0, 0)


def van_der_pol(eps=1e-6):
    return StructuredSystem(
        "van der pol", np.array([2.0, -0.66]), np.array([eps]), van_der_pol_rhs, van_der_pol_jacobian,
        observe_state, ("y1", "y2"), kl=1, ku=1, rank=0,
    )
