"""Numba signatures shared by the generated model kernels, the truncations and the integrators.

Every compiled piece of the pipeline is passed to the integrator as a Numba
first-class function with one of the fixed signatures below. Because the
integrator is compiled once against these signatures (and not once per
model or per system), its machine code is cached on disk with
``cache=True`` and reused by every model and truncation.

The *drive* of a model is the map from the two summary statistics that the
loss depends on to the two scalars of the Duhamel form,

    alpha = -2 F_q(q_1, m_1; rho_1),    beta = -F_m(q_1, m_1; rho_1),

returned together with their first derivatives,

    (alpha, beta, d alpha/d q_1, d alpha/d m_1, d beta/d q_1, d beta/d m_1).
"""

from numba import types

f64 = types.float64
vector = types.float64[::1]
matrix = types.float64[:, ::1]

DRIVE_SIGNATURE = types.UniTuple(f64, 6)(f64, f64, f64)
DriveType = types.FunctionType(DRIVE_SIGNATURE)

# rhs(t, y, params, drive, out): out = dy/dt
RHS_SIGNATURE = types.void(f64, vector, vector, DriveType, vector)
RhsType = types.FunctionType(RHS_SIGNATURE)

# jac(t, y, params, drive, band, U, V): dF/dy = B + U V^T, with the banded
# core B stored row-wise as band[i, j - i + kl] for i - kl <= j <= i + ku.
JAC_SIGNATURE = types.void(f64, vector, vector, DriveType, matrix, matrix, matrix)
JacType = types.FunctionType(JAC_SIGNATURE)

# observe(y, params, drive, out): the observables saved on the output grid
OBSERVE_SIGNATURE = types.void(vector, vector, DriveType, vector)
ObserveType = types.FunctionType(OBSERVE_SIGNATURE)
