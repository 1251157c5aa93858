"""The moment hierarchy truncated at order K, with a closure for level K + 1.

State ``(m_1, q_1, m_2, q_2, ..., m_K, q_K)`` and, for ``k = 1..K``,

    dm_k/dt = alpha m_{k+1} + beta rho_{k+1},
    dq_k/dt = 2 alpha q_{k+1} + 2 beta m_{k+1},

with ``alpha, beta`` the model's drive at ``(q_1, m_1)`` (a ridge penalty
``mu`` adds ``-mu m_k`` and ``-2 mu q_k``). Level ``K + 1`` is
not in the state, so a closure supplies it:

- ``zero``: ``m_{K+1} = q_{K+1} = 0``;
- ``copy``: ``m_{K+1} = m_K``, ``q_{K+1} = q_K`` (exact for one distinct eigenvalue);
- ``ratio``: geometric extrapolation ``m_{K+1} = m_K^2 / m_{K-1}`` and the
  same for ``q`` (needs ``K >= 2``; exact when one eigen-direction dominates);
- ``quadrature``: Cayley-Hamilton on ``K`` effective eigenvalues
  ``mu_1..mu_K``. With ``p(lam) = prod_j (lam - mu_j) = lam^K + sum_j c_j lam^j``,
  a spectrum supported on the ``mu_j`` has ``p(Sigma) = 0``, so
  ``m_{K+1} = -sum_{j<K} c_j m_{j+1}`` and the same for ``q``. The ``mu_j``
  are the nodes of the ``K``-point Gauss rule of the spectral measure
  ``sum_i lam_i (w_i(0)^2 + w*_i^2) delta_{lam_i}``, computed by the Stieltjes
  procedure on the discrete measure (not from its raw moments, whose Hankel
  matrix is hopelessly ill-conditioned for a power law).

The zero, copy and quadrature closures are linear, ``m_{K+1} = a . m`` and
``q_{K+1} = a . q`` with a fixed vector ``a``; the ratio closure is not.
How each fails or converges for power-law spectra is what ``hierarchy``
reports. With the zero closure at ``K = 1``, ``dm_1/dt = 2 rho_2 m_1`` and
``m_1`` grows without bound instead of settling at ``rho_1``.

Jacobian: ``B + U V^T``. The entries in the columns of ``m_1`` and ``q_1``
(the drive's arguments) form a rank-two part; a linear closure adds two more
rank-one terms (rows ``m_K, q_K`` times the vector ``a``), so the rank is 4
and ``B`` has two super-diagonals. The ratio closure keeps rank 2 and adds
three sub-diagonals.

Parameter layout: ``[rho_1, closure kind, kl, mu, rho_2..rho_{K+1}, a_1..a_K]``.
"""

import numba
import numpy as np

from ..integrators.system import StructuredSystem
from ..kernel_types import JAC_SIGNATURE, OBSERVE_SIGNATURE, RHS_SIGNATURE
from ..spectrum import Problem
from .power_law_rule import power_law_rule
from .ridge import ridge_of

CLOSURES = ("zero", "copy", "ratio", "quadrature")
MAX_ORDER = 10_000
# The quadrature closure converts the Gauss nodes to monomial coefficients,
# which loses about a digit per level on a power-law spectrum.
MAX_QUADRATURE_ORDER = 10
UPPER_BANDWIDTH = 2
RATIO_LOWER_BANDWIDTH = 3

_LINEAR = 0
_RATIO = 1
_HEADER = 4


@numba.njit(cache=True)
def _closed_level(state, params, K, kind):
    """Return ``(m_{K+1}, q_{K+1})`` from the closure."""
    if kind == _RATIO:
        return state[2 * K - 2] ** 2 / state[2 * K - 4], state[2 * K - 1] ** 2 / state[2 * K - 3]
    m_next = 0.0
    q_next = 0.0
    for j in range(K):
        coefficient = params[_HEADER + K + j]
        m_next += coefficient * state[2 * j]
        q_next += coefficient * state[2 * j + 1]
    return m_next, q_next


@numba.njit(cache=True)
def _next_level(state, params, k, K, kind):
    if k < K:
        return state[2 * k], state[2 * k + 1]
    return _closed_level(state, params, K, kind)


@numba.njit(RHS_SIGNATURE, cache=True)
def moment_hierarchy_rhs(t, state, params, drive, out):
    K = state.shape[0] // 2
    kind = int(params[1])
    alpha, beta, _, _, _, _ = drive(state[1], state[0], params[0])
    for k in range(1, K + 1):
        m_next, q_next = _next_level(state, params, k, K, kind)
        rho_next = params[_HEADER + k - 1]
        out[2 * k - 2] = alpha * m_next + beta * rho_next - params[3] * state[2 * k - 2]
        out[2 * k - 1] = 2.0 * alpha * q_next + 2.0 * beta * m_next - 2.0 * params[3] * state[2 * k - 1]


@numba.njit(cache=True)
def _add_entry(band, U, kl, row, column, value):
    # Columns 0 and 1 (m_1, q_1) belong to the low-rank part, V[:, 0:2] = [e_0, e_1].
    if column <= 1:
        U[row, column] += value
    else:
        band[row, column - row + kl] += value


@numba.njit(JAC_SIGNATURE, cache=True)
def moment_hierarchy_jacobian(t, state, params, drive, band, U, V):
    n = state.shape[0]
    K = n // 2
    kind = int(params[1])
    kl = int(params[2])
    alpha, beta, alpha_q, alpha_m, beta_q, beta_m = drive(state[1], state[0], params[0])

    band[:, :] = 0.0
    U[:, :] = 0.0
    V[:, :] = 0.0
    V[0, 0] = 1.0
    V[1, 1] = 1.0

    for k in range(1, K + 1):
        m_next, q_next = _next_level(state, params, k, K, kind)
        rho_next = params[_HEADER + k - 1]
        row_m = 2 * k - 2
        row_q = 2 * k - 1

        # Ridge penalty on the diagonal.
        _add_entry(band, U, kl, row_m, row_m, -params[3])
        _add_entry(band, U, kl, row_q, row_q, -2.0 * params[3])

        # Through the drive: columns of m_1 (0) and q_1 (1).
        _add_entry(band, U, kl, row_m, 0, alpha_m * m_next + beta_m * rho_next)
        _add_entry(band, U, kl, row_m, 1, alpha_q * m_next + beta_q * rho_next)
        _add_entry(band, U, kl, row_q, 0, 2.0 * (alpha_m * q_next + beta_m * m_next))
        _add_entry(band, U, kl, row_q, 1, 2.0 * (alpha_q * q_next + beta_q * m_next))

        if k < K:
            _add_entry(band, U, kl, row_m, 2 * k, alpha)
            _add_entry(band, U, kl, row_q, 2 * k, 2.0 * beta)
            _add_entry(band, U, kl, row_q, 2 * k + 1, 2.0 * alpha)
        elif kind == _RATIO:
            m_ratio = state[2 * K - 2] / state[2 * K - 4]
            q_ratio = state[2 * K - 1] / state[2 * K - 3]
            dm_dm_last, dm_dm_before = 2.0 * m_ratio, -m_ratio * m_ratio
            dq_dq_last, dq_dq_before = 2.0 * q_ratio, -q_ratio * q_ratio
            _add_entry(band, U, kl, row_m, 2 * K - 2, alpha * dm_dm_last)
            _add_entry(band, U, kl, row_m, 2 * K - 4, alpha * dm_dm_before)
            _add_entry(band, U, kl, row_q, 2 * K - 1, 2.0 * alpha * dq_dq_last)
            _add_entry(band, U, kl, row_q, 2 * K - 3, 2.0 * alpha * dq_dq_before)
            _add_entry(band, U, kl, row_q, 2 * K - 2, 2.0 * beta * dm_dm_last)
            _add_entry(band, U, kl, row_q, 2 * K - 4, 2.0 * beta * dm_dm_before)
        else:
            # Linear closure: rows (m_K, q_K) times the coefficient vector a.
            U[row_m, 2] = alpha
            U[row_q, 2] = 2.0 * beta
            U[row_q, 3] = 2.0 * alpha
            for j in range(K):
                coefficient = params[_HEADER + K + j]
                V[2 * j, 2] = coefficient
                V[2 * j + 1, 3] = coefficient


@numba.njit(OBSERVE_SIGNATURE, cache=True)
def moment_hierarchy_observe(state, params, drive, out):
    out[0] = state[0]
    out[1] = state[1]


def gauss_nodes_of_discrete_measure(atoms, weights, n_nodes):
    """Return the ``n_nodes``-point Gauss nodes of ``sum_i weights_i delta_{atoms_i}``.

    Uses the Stieltjes procedure (three-term recurrence of the orthonormal
    polynomials, evaluated on the atoms, with full reorthogonalisation) and
    the eigenvalues of the resulting Jacobi matrix (Golub-Welsch).
    Reference: W. Gautschi, *Orthogonal Polynomials: Computation and
    Approximation* (Oxford, 2004), sections 2.2.3 and 3.1.1.
    """
    atoms = np.asarray(atoms, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if np.any(weights < 0) or not np.any(weights > 0):
        raise ValueError("the measure of the quadrature closure must be non-negative and not zero")
    support = np.count_nonzero(weights > 0)
    if n_nodes > support:
        raise ValueError(f"a {n_nodes}-point Gauss rule needs at least {n_nodes} atoms of positive weight, got {support}")

    sqrt_weights = np.sqrt(weights)
    diagonal = np.empty(n_nodes)
    off_diagonal = np.empty(max(n_nodes - 1, 0))
    basis = np.empty((n_nodes, atoms.size))
    vector = sqrt_weights / np.linalg.norm(sqrt_weights)
    previous = np.zeros_like(vector)
    previous_norm = 0.0
    for k in range(n_nodes):
        basis[k] = vector
        diagonal[k] = np.dot(vector, atoms * vector)
        if k == n_nodes - 1:
            break
        nxt = atoms * vector - diagonal[k] * vector - previous_norm * previous
        nxt -= basis[: k + 1].T @ (basis[: k + 1] @ nxt)
        norm = np.linalg.norm(nxt)
        off_diagonal[k] = norm
        previous, previous_norm = vector, norm
        vector = nxt / norm

    jacobi = np.diag(diagonal) + np.diag(off_diagonal, 1) + np.diag(off_diagonal, -1)
    return np.sort(np.linalg.eigvalsh(jacobi))[::-1]


def closure_coefficients(problem, order: int, closure: str) -> np.ndarray:
    """Return the vector ``a`` of a linear closure, ``m_{K+1} = sum_j a_j m_j``."""
    coefficients = np.zeros(order)
    if closure == "copy":
        coefficients[-1] = 1.0
    elif closure == "quadrature":
        if isinstance(problem, Problem):
            atoms, measure = problem.lam, problem.lam * (problem.w0**2 + problem.wstar**2)
        else:
            # d = inf: a fine quadrature of the measure replaces its atoms.
            rule = power_law_rule(problem.a, problem.measure_terms(), 8, 6, 16, 1e12, problem.rho1)
            atoms, measure = rule.nodes, rule.weights[0] + rule.weights[2]
        nodes = gauss_nodes_of_discrete_measure(atoms, measure, order)
        # np.poly gives [1, c_{K-1}, ..., c_0] of prod_j (lam - mu_j).
        monic = np.poly(nodes)
        coefficients = -monic[1:][::-1]
    return coefficients


def build_moment_hierarchy(problem, model, order: int, closure: str = "zero") -> StructuredSystem:
    """Return the moment hierarchy of ``problem`` at ``order`` K with the named closure (state size ``2K``)."""
    if closure not in CLOSURES:
        raise ValueError(f"closure = {closure!r} is not available; choose one of {list(CLOSURES)}")
    if not (isinstance(order, (int, np.integer)) and not isinstance(order, bool) and 1 <= order <= MAX_ORDER):
        raise ValueError(f"order = {order!r} is invalid: the moment order K must be an integer in [1, {MAX_ORDER}]")
    if closure == "ratio" and order < 2:
        raise ValueError(f"order = {order} is invalid for the ratio closure: it extrapolates from two levels, so K >= 2")
    if closure == "quadrature" and order > MAX_QUADRATURE_ORDER:
        raise ValueError(
            f"order = {order} is invalid for the quadrature closure: K must be at most {MAX_QUADRATURE_ORDER}, "
            "beyond which its monomial coefficients lose all accuracy; use spectral modes instead"
        )

    levels = np.arange(1, order + 1)
    y0 = np.empty(2 * order)
    y0[0::2] = [problem.m(k) for k in levels]
    y0[1::2] = [problem.q(k) for k in levels]
    rho_next = np.array([problem.rho(k + 1) for k in levels])

    n = 2 * order
    if closure == "ratio":
        kind, kl, rank = _RATIO, min(RATIO_LOWER_BANDWIDTH, n - 1), 2
        coefficients = np.zeros(order)
    else:
        kind, kl, rank = _LINEAR, 0, 4
        coefficients = closure_coefficients(problem, order, closure)
    params = np.concatenate(([problem.rho1, float(kind), float(kl), ridge_of(model)], rho_next, coefficients))

    return StructuredSystem(
        name=f"moment hierarchy (K = {order}, {closure} closure)",
        y0=y0,
        params=params,
        rhs=moment_hierarchy_rhs,
        jac=moment_hierarchy_jacobian,
        observe=moment_hierarchy_observe,
        observable_names=("m1", "q1"),
        kl=kl,
        ku=min(UPPER_BANDWIDTH, n - 1),
        rank=rank,
        drive=model.drive,
    )
