"""Standard stiff test problems as structured systems with dense Jacobians, for the integrator tests."""

import numba
import numpy as np

from hierarchy.integrators import ModalForm, StructuredSystem
from hierarchy.kernel_types import DRIVE_SIGNATURE, JAC_SIGNATURE, OBSERVE_SIGNATURE, RHS_SIGNATURE

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
    out[0] = params[0] * y[0] * (1.0 - y[0])


@numba.njit(JAC_SIGNATURE, cache=True)
def logistic_jacobian(t, y, params, drive, band, U, V):
    band[0, 0] = params[0] * (1.0 - 2.0 * y[0])


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


def logistic(y0=0.01, rate=1.0):
    """``y' = rate y (1 - y)`` from ``y(0) = y0``."""
    return StructuredSystem(
        "logistic", np.array([y0]), np.array([rate]), logistic_rhs, logistic_jacobian, observe_state, ("y",), 0, 0, 0
    )


@numba.njit(DRIVE_SIGNATURE, cache=True)
def saturating_drive(q1, m1, rho1):
    return 1.0 - q1, 0.0, -1.0, 0.0, 0.0, 0.0


@numba.njit(RHS_SIGNATURE, cache=True)
def modal_logistic_rhs(t, y, params, drive, out):
    alpha, _, _, _, _, _ = drive(y[0] * y[0], 0.0, 1.0)
    out[0] = params[0] * alpha * y[0]


@numba.njit(JAC_SIGNATURE, cache=True)
def modal_logistic_jacobian(t, y, params, drive, band, U, V):
    # J = rate alpha + U V^T with U = (rate y, 0) and V = (grad alpha, grad beta) = (-2 y, 0).
    band[0, 0] = params[0] * (1.0 - y[0] * y[0])
    U[0, 0] = params[0] * y[0]
    U[0, 1] = 0.0
    V[0, 0] = -2.0 * y[0]
    V[0, 1] = 0.0


@numba.njit(OBSERVE_SIGNATURE, cache=True)
def observe_overlaps(y, params, drive, out):
    out[0] = 0.0
    out[1] = y[0] * y[0]


def modal_logistic(y0=0.1, rate=1.0):
    """One mode in modal form, ``y' = rate alpha y`` with ``alpha = 1 - q1`` and ``q1 = y^2``.

    ``q1`` then follows the logistic equation ``q1' = 2 rate q1 (1 - q1)``, and
    ``alpha`` falls from near 1 to 0 over the run.
    """
    modal = ModalForm(
        rates=np.array([rate]), rate_index=np.zeros(1, dtype=np.int64), forcing=np.zeros(1), ridge=0.0, rho1=1.0,
        m1_weights=np.zeros(1), q1_rows=np.zeros(1, dtype=np.int64), q1_cols=np.zeros(1, dtype=np.int64),
        q1_values=np.ones(1),
    )
    return StructuredSystem(
        "modal logistic", np.array([y0]), np.array([rate]), modal_logistic_rhs, modal_logistic_jacobian,
        observe_overlaps, ("m1", "q1"), 0, 0, 2, drive=saturating_drive, modal=modal,
    )


def logistic_exact(t, y0=0.01, rate=1.0, t0=0.0):
    return 1.0 / (1.0 + np.exp(-rate * (t - t0)) * (1.0 / y0 - 1.0))


def blowup():
    """``y' = y^2``, ``y(0) = 1``: the solution ``1 / (1 - t)`` blows up at ``t = 1``."""
    return StructuredSystem("blowup", np.array([1.0]), np.zeros(1), blowup_rhs, blowup_jacobian, observe_state, ("y",), 0, 0, 0)


def van_der_pol(eps=1e-6, y0=(2.0, -0.66)):
    """Build the stiff Van der Pol oscillator. Problem VDPOL of the Bari test set is ``eps = 1e-6, y0 = (2, 0)``."""
    return StructuredSystem(
        "van der pol", np.array(y0, dtype=float), np.array([eps]), van_der_pol_rhs, van_der_pol_jacobian,
        observe_state, ("y1", "y2"), kl=1, ku=1, rank=0,
    )


# Reference solutions published with the problems of the Test Set for IVP
# Solvers (F. Mazzia and C. Magherini, University of Bari,
# http://www.dm.uniba.it/~testset/), in the subroutine ``solut`` of each
# problem's Fortran file. The test set computed them with RADAU5 or RADAU at
# uround = 1.01e-19 and rtol = 1.1e-18. A SciPy 1.17 Radau solve with the
# kernels below (rtol = 1e-13, atol <= 1e-16, analytic Jacobian) agrees with
# every value to 1.5e-13 relative.

# Problem VDPOL: y(2) for eps = 1e-6, y(0) = (2, 0).
VDPOL_REFERENCE_T = 2.0
VDPOL_REFERENCE = np.array([0.1706167732170483e1, -0.8928097010247975e0])

# Problem HIRES (high irradiance response model of plant physiology, Schaefer 1975): y(321.8122).
HIRES_REFERENCE_T = 321.8122
HIRES_REFERENCE = np.array(
    [
        0.7371312573325668e-3,
        0.1442485726316185e-3,
        0.5888729740967575e-4,
        0.1175651343283149e-2,
        0.2386356198831331e-2,
        0.6238968252742796e-2,
        0.2849998395185769e-2,
        0.2850001604814231e-2,
    ]
)

# Problem OREGO (Oregonator model of the Belousov-Zhabotinskii reaction): y(360).
OREGO_REFERENCE_T = 360.0
OREGO_REFERENCE = np.array([0.1000814870318523e1, 0.1228178521549917e4, 0.1320554942846706e3])

# Problem POLLU (air pollution model, 20 species and 25 reactions): y(60).
POLLU_REFERENCE_T = 60.0
POLLU_REFERENCE = np.array(
    [
        0.5646255480022769e-01,
        0.1342484130422339e00,
        0.4139734331099427e-08,
        0.5523140207484359e-02,
        0.2018977262302196e-06,
        0.1464541863493966e-06,
        0.7784249118997964e-01,
        0.3245075353396018e00,
        0.7494013383880406e-02,
        0.1622293157301561e-07,
        0.1135863833257075e-07,
        0.2230505975721359e-02,
        0.2087162882798630e-03,
        0.1396921016840158e-04,
        0.8964884856898295e-02,
        0.4352846369330103e-17,
        0.6899219696263405e-02,
        0.1007803037365946e-03,
        0.1772146513969984e-05,
        0.5682943292316392e-04,
    ]
)


@numba.njit(cache=True)
def _add_to_dense_entry(band, i, j, value):
    """Add ``value`` to ``J[i, j]`` of a dense Jacobian stored as a band with ``kl = ku = n - 1``."""
    band[i, band.shape[0] - 1 + j - i] += value


# HIRES rate constants k1 .. k9 and the source term oks, as in hires.f of the test set.
HIRES_PARAMS = np.array([1.71, 0.43, 8.32, 0.69, 0.035, 8.32, 280.0, 0.69, 0.69, 0.0007])


@numba.njit(RHS_SIGNATURE, cache=True)
def hires_rhs(t, y, params, drive, out):
    k1, k2, k3, k4, k5 = params[0], params[1], params[2], params[3], params[4]
    k6, k7, k8, k9, oks = params[5], params[6], params[7], params[8], params[9]
    out[0] = -k1 * y[0] + k2 * y[1] + k6 * y[2] + oks
    out[1] = k1 * y[0] - (k2 + k3) * y[1]
    out[2] = -(k6 + k1) * y[2] + k2 * y[3] + k5 * y[4]
    out[3] = k3 * y[1] + k1 * y[2] - (k4 + k2) * y[3]
    out[4] = -(k5 + k1) * y[4] + k2 * (y[5] + y[6])
    out[5] = -k7 * y[5] * y[7] + k8 * y[3] + k1 * y[4] - k2 * y[5] + k8 * y[6]
    out[6] = k7 * y[5] * y[7] - (k2 + k8 + k9) * y[6]
    out[7] = -out[6]


@numba.njit(JAC_SIGNATURE, cache=True)
def hires_jacobian(t, y, params, drive, band, U, V):
    k1, k2, k3, k4, k5 = params[0], params[1], params[2], params[3], params[4]
    k6, k7, k8, k9 = params[5], params[6], params[7], params[8]
    band[:, :] = 0.0
    _add_to_dense_entry(band, 0, 0, -k1)
    _add_to_dense_entry(band, 0, 1, k2)
    _add_to_dense_entry(band, 0, 2, k6)
    _add_to_dense_entry(band, 1, 0, k1)
    _add_to_dense_entry(band, 1, 1, -(k2 + k3))
    _add_to_dense_entry(band, 2, 2, -(k6 + k1))
    _add_to_dense_entry(band, 2, 3, k2)
    _add_to_dense_entry(band, 2, 4, k5)
    _add_to_dense_entry(band, 3, 1, k3)
    _add_to_dense_entry(band, 3, 2, k1)
    _add_to_dense_entry(band, 3, 3, -(k4 + k2))
    _add_to_dense_entry(band, 4, 4, -(k5 + k1))
    _add_to_dense_entry(band, 4, 5, k2)
    _add_to_dense_entry(band, 4, 6, k2)
    _add_to_dense_entry(band, 5, 3, k8)
    _add_to_dense_entry(band, 5, 4, k1)
    _add_to_dense_entry(band, 5, 5, -k7 * y[7] - k2)
    _add_to_dense_entry(band, 5, 6, k8)
    _add_to_dense_entry(band, 5, 7, -k7 * y[5])
    _add_to_dense_entry(band, 6, 5, k7 * y[7])
    _add_to_dense_entry(band, 6, 6, -(k2 + k8 + k9))
    _add_to_dense_entry(band, 6, 7, k7 * y[5])
    _add_to_dense_entry(band, 7, 5, -k7 * y[7])
    _add_to_dense_entry(band, 7, 6, k2 + k8 + k9)
    _add_to_dense_entry(band, 7, 7, -k7 * y[5])


# OREGO parameters s, q and w of the test set.
OREGO_PARAMS = np.array([77.27, 8.375e-6, 0.161])


@numba.njit(RHS_SIGNATURE, cache=True)
def orego_rhs(t, y, params, drive, out):
    s, q, w = params[0], params[1], params[2]
    out[0] = s * (y[1] + y[0] * (1.0 - q * y[0] - y[1]))
    out[1] = (y[2] - (1.0 + y[0]) * y[1]) / s
    out[2] = w * (y[0] - y[2])


@numba.njit(JAC_SIGNATURE, cache=True)
def orego_jacobian(t, y, params, drive, band, U, V):
    s, q, w = params[0], params[1], params[2]
    band[:, :] = 0.0
    _add_to_dense_entry(band, 0, 0, s * (1.0 - 2.0 * q * y[0] - y[1]))
    _add_to_dense_entry(band, 0, 1, s * (1.0 - y[0]))
    _add_to_dense_entry(band, 1, 0, -y[1] / s)
    _add_to_dense_entry(band, 1, 1, -(1.0 + y[0]) / s)
    _add_to_dense_entry(band, 1, 2, 1.0 / s)
    _add_to_dense_entry(band, 2, 0, w)
    _add_to_dense_entry(band, 2, 2, -w)


# POLLU as a mass-action network with the rate constants k1 .. k25 of pollu.f.
# Reaction r consumes species POLLU_REACTANTS[r] (-1: none, so the reaction is
# first order) at the rate k_r times their product and creates
# POLLU_PRODUCTS[r] (a species listed twice gains two per reaction). Species
# are numbered from 0, so species i here is y(i + 1) of the test set.
POLLU_PARAMS = np.array(
    [
        0.35, 26.6, 1.23e4, 8.6e-4, 8.2e-4, 1.5e4, 1.3e-4, 2.4e4, 1.65e4, 9.0e3, 2.2e-2, 1.2e4, 1.88,
        1.63e4, 4.8e6, 3.5e-4, 1.75e-2, 1.0e8, 4.44e11, 1.24e3, 2.1, 5.78, 4.74e-2, 1.78e3, 3.12,
    ]
)
POLLU_REACTANTS = np.array(
    [
        [0, -1], [1, 3], [4, 1], [6, -1], [6, -1], [6, 5], [8, -1], [8, 5], [10, 1], [10, 0], [12, -1], [9, 1],
        [13, -1], [0, 5], [2, -1], [3, -1], [3, -1], [15, -1], [15, -1], [16, 5], [18, -1], [18, -1], [0, 3],
        [18, 0], [19, -1],
    ]
)
POLLU_PRODUCTS = np.array(
    [
        [1, 2, -1], [0, -1, -1], [0, 5, -1], [4, 4, 7], [7, -1, -1], [4, 7, -1], [4, 7, 9], [10, -1, -1],
        [0, 9, 11], [12, -1, -1], [0, 10, -1], [0, 13, -1], [4, 6, -1], [14, -1, -1], [3, -1, -1],
        [15, -1, -1], [2, -1, -1], [5, 5, -1], [2, -1, -1], [4, 17, -1], [1, -1, -1], [0, 2, -1],
        [18, -1, -1], [19, -1, -1], [0, 18, -1],
    ]
)


@numba.njit(RHS_SIGNATURE, cache=True)
def pollu_rhs(t, y, params, drive, out):
    out[:] = 0.0
    for reaction in range(POLLU_REACTANTS.shape[0]):
        first, second = POLLU_REACTANTS[reaction, 0], POLLU_REACTANTS[reaction, 1]
        rate = params[reaction] * y[first]
        if second >= 0:
            rate *= y[second]
        out[first] -= rate
        if second >= 0:
            out[second] -= rate
        for slot in range(POLLU_PRODUCTS.shape[1]):
            product = POLLU_PRODUCTS[reaction, slot]
            if product >= 0:
                out[product] += rate


@numba.njit(cache=True)
def _add_rate_derivatives(band, species, gain, first, d_first, second, d_second):
    """Add ``gain`` times the gradient of one reaction rate to row ``species`` of a dense Jacobian."""
    _add_to_dense_entry(band, species, first, gain * d_first)
    if second >= 0:
        _add_to_dense_entry(band, species, second, gain * d_second)


@numba.njit(JAC_SIGNATURE, cache=True)
def pollu_jacobian(t, y, params, drive, band, U, V):
    band[:, :] = 0.0
    for reaction in range(POLLU_REACTANTS.shape[0]):
        first, second = POLLU_REACTANTS[reaction, 0], POLLU_REACTANTS[reaction, 1]
        # Partial derivatives of the rate with respect to its reactants.
        if second >= 0:
            d_first, d_second = params[reaction] * y[second], params[reaction] * y[first]
        else:
            d_first, d_second = params[reaction], 0.0
        _add_rate_derivatives(band, first, -1.0, first, d_first, second, d_second)
        if second >= 0:
            _add_rate_derivatives(band, second, -1.0, first, d_first, second, d_second)
        for slot in range(POLLU_PRODUCTS.shape[1]):
            product = POLLU_PRODUCTS[reaction, slot]
            if product >= 0:
                _add_rate_derivatives(band, product, 1.0, first, d_first, second, d_second)


def vdpol():
    """Build problem VDPOL of the Bari test set, Van der Pol with eps = 1e-6 from y(0) = (2, 0)."""
    return van_der_pol(1e-6, y0=(2.0, 0.0))


def hires():
    """Build problem HIRES of the Bari test set, 8 species from y(0) = (1, 0, 0, 0, 0, 0, 0, 0.0057)."""
    y0 = np.zeros(8)
    y0[0] = 1.0
    y0[7] = 0.0057
    return StructuredSystem(
        "hires", y0, HIRES_PARAMS.copy(), hires_rhs, hires_jacobian, observe_state,
        tuple(f"y{i + 1}" for i in range(8)), kl=7, ku=7, rank=0,
    )


def orego():
    """Build problem OREGO of the Bari test set, the Oregonator from y(0) = (1, 2, 3)."""
    return StructuredSystem(
        "orego", np.array([1.0, 2.0, 3.0]), OREGO_PARAMS.copy(), orego_rhs, orego_jacobian, observe_state,
        ("y1", "y2", "y3"), kl=2, ku=2, rank=0,
    )


def pollu():
    """Build problem POLLU of the Bari test set, 20 species that start at zero except six."""
    y0 = np.zeros(20)
    y0[1], y0[3], y0[6], y0[7], y0[8], y0[16] = 0.2, 0.04, 0.1, 0.3, 0.01, 0.007
    return StructuredSystem(
        "pollu", y0, POLLU_PARAMS.copy(), pollu_rhs, pollu_jacobian, observe_state,
        tuple(f"y{i + 1}" for i in range(20)), kl=19, ku=19, rank=0,
    )
