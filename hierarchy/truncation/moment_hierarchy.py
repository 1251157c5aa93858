"""The moment hierarchy truncated at order K, with a closure for level K + 1.

State ``(m_1, q_1, m_2, q_2, ..., m_K, q_K)`` and, for ``k = 1..K``,

    dm_k/dt = alpha m_{k+1} + beta rho_{k+1},
    dq_k/dt = 2 alpha q_{k+1} + 2 beta m_{k+1},

with ``alpha, beta`` the model's drive at ``(q_1, m_1)``. Level ``K + 1`` is
not in the state, so a closure supplies it:

- ``zero``: ``m_{K+1} = q_{K+1} = 0``;
- ``copy``: ``m_{K+1} = m_K``, ``q_{K+1} = q_K``.

Both are exact only in special cases (a spectrum with one distinct
eigenvalue for ``copy``); for a power law they fail, and how they fail is
what ``hierarchy`` reports. With the zero closure at ``K = 1``,
``dm_1/dt = 2 rho_2 m_1`` at ``q_1 = rho_1 / 3`` and ``m_1`` grows without
bound instead of settling at ``rho_1``.

Jacobian: the entries in the columns of ``m_1`` and ``q_1`` (the drive's
arguments) form the rank-two part ``U [e_m1, e_q1]^T``; the rest is a band
with one sub-diagonal (the copy closure) and two super-diagonals.

Parameter layout: ``[rho_1, closure code, rho_2..rho_{K+1}]``.
"""

import numba
import numpy as np

from ..integrators.system import StructuredSystem
from ..kernel_types import JAC_SIGNATURE, OBSERVE_SIGNATURE, RHS_SIGNATURE
from ..spectrum import Problem

CLOSURES = {"zero": 0, "copy": 1}
MAX_ORDER = 10_000
LOWER_BANDWIDTH = 1
UPPER_BANDWIDTH = 2


@numba.njit(cache=True)
def _next_level(state, k, K, closure):
    """Return ``(m_{k+1}, q_{k+1})`` and their state columns (-1 when closed to zero)."""
    if k < K:
        return state[2 * k], state[2 * k + 1], 2 * k, 2 * k + 1
    if closure == 0:
        return 0.0, 0.0, -1, -1
    return state[2 * K - 2], state[2 * K - 1], 2 * K - 2, 2 * K - 1


@numba.njit(RHS_SIGNATURE, cache=True)
def moment_hierarchy_rhs(t, state, params, drive, out):
    K = state.shape[0] // 2
    closure = int(params[1])
    alpha, beta, _, _, _, _ = drive(state[1], state[0], params[0])
    for k in range(1, K + 1):
        m_next, q_next, _, _ = _next_level(state, k, K, closure)
        rho_next = params[1 + k]
        out[2 * k - 2] = alpha * m_next + beta * rho_next
        out[2 * k - 1] = 2.0 * alpha * q_next + 2.0 * beta * m_next


@numba.njit(cache=True)
def _add_entry(band, U, row, column, value):
    if column <= 1:
        U[row, column] += value
    else:
        band[row, column - row + LOWER_BANDWIDTH] += value


@numba.njit(JAC_SIGNATURE, cache=True)
def moment_hierarchy_jacobian(t, state, params, drive, band, U, V):
    n = state.shape[0]
    K = n // 2
    closure = int(params[1])
    alpha, beta, alpha_q, alpha_m, beta_q, beta_m = drive(state[1], state[0], params[0])

    band[:, :] = 0.0
    U[:, :] = 0.0
    V[:, :] = 0.0
    V[0, 0] = 1.0
    V[1, 1] = 1.0

    for k in range(1, K + 1):
        m_next, q_next, m_column, q_column = _next_level(state, k, K, closure)
        rho_next = params[1 + k]
        row_m = 2 * k - 2
        row_q = 2 * k - 1

        # Through the drive: columns of m_1 (0) and q_1 (1).
        _add_entry(band, U, row_m, 0, alpha_m * m_next + beta_m * rho_next)
        _add_entry(band, U, row_m, 1, alpha_q * m_next + beta_q * rho_next)
        _add_entry(band, U, row_q, 0, 2.0 * (alpha_m * q_next + beta_m * m_next))
        _add_entry(band, U, row_q, 1, 2.0 * (alpha_q * q_next + beta_q * m_next))

        # Through the next level.
        if m_column >= 0:
            _add_entry(band, U, row_m, m_column, alpha)
            _add_entry(band, U, row_q, m_column, 2.0 * beta)
            _add_entry(band, U, row_q, q_column, 2.0 * alpha)


@numba.njit(OBSERVE_SIGNATURE, cache=True)
def moment_hierarchy_observe(state, params, drive, out):
    out[0] = state[0]
    out[1] = state[1]


def build_moment_hierarchy(problem: Problem, model, order: int, closure: str = "zero") -> StructuredSystem:
    """Return the moment hierarchy of ``problem`` at ``order`` K with the named closure (state size ``2K``)."""
    if closure not in CLOSURES:
        raise ValueError(f"closure = {closure!r} is not available; choose one of {sorted(CLOSURES)}")
    if not (isinstance(order, (int, np.integer)) and not isinstance(order, bool) and 1 <= order <= MAX_ORDER):
        raise ValueError(f"order = {order!r} is invalid: the moment order K must be an integer in [1, {MAX_ORDER}]")

    levels = np.arange(1, order + 1)
    y0 = np.empty(2 * order)
    y0[0::2] = [problem.m(k) for k in levels]
    y0[1::2] = [problem.q(k) for k in levels]
    rho_next = np.array([problem.rho(k + 1) for k in levels])
    params = np.concatenate(([problem.rho1, float(CLOSURES[closure])], rho_next))
    return StructuredSystem(
        name=f"moment hierarchy (K = {order}, {closure} closure)",
        y0=y0,
        params=params,
        rhs=moment_hierarchy_rhs,
        jac=moment_hierarchy_jacobian,
        observe=moment_hierarchy_observe,
        observable_names=("m1", "q1"),
        kl=min(LOWER_BANDWIDTH, 2 * order - 1),
        ku=min(UPPER_BANDWIDTH, 2 * order - 1),
        rank=2,
        drive=model.drive,
    )
