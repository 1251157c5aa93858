"""K spectral modes: the Duhamel propagators at the nodes of a quadrature rule.

Given ``alpha(t), beta(t)`` and the model's ridge penalty ``mu`` (0 without
one) every coordinate evolves linearly,
``w_i(t) = Phi(lam_i, t) w_i(0) + Psi(lam_i, t) w*_i`` with

    d Phi / dt = (lam alpha - mu) Phi,               Phi(lam, 0) = 1,
    d Psi / dt = (lam alpha - mu) Psi + lam beta,    Psi(lam, 0) = 0,

so the summary statistics are integrals over three spectral measures of the
initial condition (weighted by ``lam``, see ``quadrature``):

    m_1 = sum_j (Phi_j W0*_j + Psi_j W**_j),
    q_1 = sum_j (Phi_j^2 W00_j + 2 Phi_j Psi_j W0*_j + Psi_j^2 W**_j),

with ``W00, W0*, W**`` the weights of ``lam w_i(0)^2``, ``lam w_i(0) w*_i``
and ``lam w*_i^2``. The state is ``(Phi_1..Phi_K, Psi_1..Psi_K)``; the
truncation is exact when the nodes are all distinct eigenvalues. The
Jacobian is ``diag(lam alpha - mu, lam alpha - mu) + U V^T`` with ``U`` the
derivatives of the right-hand side in ``alpha`` and ``beta`` and ``V`` the
gradients of ``alpha`` and ``beta`` in the state.

Parameter layout: ``[rho_1, mu, lam_1..lam_K, W00, W0*, W**]``.
"""

import numba
import numpy as np

from ..integrators.system import ModalForm, StructuredSystem
from ..kernel_types import JAC_SIGNATURE, OBSERVE_SIGNATURE, RHS_SIGNATURE
from ..spectrum import InfinitePowerLawProblem, Problem
from .power_law_rule import power_law_rule
from .ridge import ridge_of
from .quadrature import SpectralRule, log_gauss_rule


@numba.njit(cache=True)
def _mode_statistics(state, params):
    K = state.shape[0] // 2
    q1 = 0.0
    m1 = 0.0
    for j in range(K):
        phi = state[j]
        psi = state[K + j]
        w00 = params[2 + K + j]
        w0s = params[2 + 2 * K + j]
        wss = params[2 + 3 * K + j]
        m1 += phi * w0s + psi * wss
        q1 += phi * phi * w00 + 2.0 * phi * psi * w0s + psi * psi * wss
    return q1, m1


@numba.njit(RHS_SIGNATURE, cache=True)
def spectral_modes_rhs(t, state, params, drive, out):
    K = state.shape[0] // 2
    q1, m1 = _mode_statistics(state, params)
    alpha, beta, _, _, _, _ = drive(q1, m1, params[0])
    for j in range(K):
        node = params[2 + j]
        rate = node * alpha - params[1]
        out[j] = rate * state[j]
        out[K + j] = rate * state[K + j] + node * beta


@numba.njit(JAC_SIGNATURE, cache=True)
def spectral_modes_jacobian(t, state, params, drive, band, U, V):
    K = state.shape[0] // 2
    q1, m1 = _mode_statistics(state, params)
    alpha, beta, alpha_q, alpha_m, beta_q, beta_m = drive(q1, m1, params[0])
    for j in range(K):
        node = params[2 + j]
        phi = state[j]
        psi = state[K + j]
        w00 = params[2 + K + j]
        w0s = params[2 + 2 * K + j]
        wss = params[2 + 3 * K + j]

        band[j, 0] = node * alpha - params[1]
        band[K + j, 0] = node * alpha - params[1]

        U[j, 0] = node * phi
        U[K + j, 0] = node * psi
        U[j, 1] = 0.0
        U[K + j, 1] = node

        dq_dphi = 2.0 * (phi * w00 + psi * w0s)
        dq_dpsi = 2.0 * (phi * w0s + psi * wss)
        V[j, 0] = alpha_q * dq_dphi + alpha_m * w0s
        V[K + j, 0] = alpha_q * dq_dpsi + alpha_m * wss
        V[j, 1] = beta_q * dq_dphi + beta_m * w0s
        V[K + j, 1] = beta_q * dq_dpsi + beta_m * wss


@numba.njit(OBSERVE_SIGNATURE, cache=True)
def spectral_modes_observe(state, params, drive, out):
    q1, m1 = _mode_statistics(state, params)
    out[0] = m1
    out[1] = q1


def spectral_measures(problem: Problem) -> np.ndarray:
    """Return the atoms of ``lam dmu_00``, ``lam dmu_0*``, ``lam dmu_**`` as rows of a ``(3, d)`` array."""
    lam, w0, wstar = problem.lam, problem.w0, problem.wstar
    return np.vstack((lam * w0 * w0, lam * w0 * wstar, lam * wstar * wstar))


def build_spectral_rule(
    problem, bins_per_decade=8, rule_order=6, exact_top=8, exact_bottom=0, t_end=None
) -> SpectralRule:
    """Return the composite ``log lam`` rule of ``problem``'s spectral measures.

    A finite problem uses its atoms (``quadrature.log_gauss_rule``); a
    ``d = inf`` problem uses ``power_law_rule``, which needs the horizon
    ``t_end`` to place its floor and has no smallest eigenvalues to keep.
    """
    if isinstance(problem, InfinitePowerLawProblem):
        if exact_bottom:
            raise ValueError(f"exact_bottom = {exact_bottom} is invalid for d = inf: the spectrum has no smallest eigenvalue")
        if t_end is None:
            raise ValueError("a spectral rule for d = inf needs the horizon t_end")
        return power_law_rule(problem.a, problem.measure_terms(), bins_per_decade, rule_order, exact_top, t_end, problem.rho1)
    return log_gauss_rule(problem.lam, spectral_measures(problem), bins_per_decade, rule_order, exact_top, exact_bottom)


def build_spectral_modes(problem, model, rule: SpectralRule) -> StructuredSystem:
    """Return the K-mode truncation of ``problem`` on the nodes of ``rule`` (state size ``2K``)."""
    K = rule.size
    params = np.concatenate(([problem.rho1, ridge_of(model)], rule.nodes, rule.weights[0], rule.weights[1], rule.weights[2]))
    y0 = np.concatenate((np.ones(K), np.zeros(K)))
    # Phi_j and Psi_j share the rate lam_j; only Psi_j is driven by beta.
    modal = ModalForm(
        rates=np.array(rule.nodes, dtype=np.float64),
        rate_index=np.concatenate((np.arange(K), np.arange(K))),
        forcing=np.concatenate((np.zeros(K), rule.nodes)),
        ridge=ridge_of(model),
        rho1=float(problem.rho1),
        # m1 = sum_j (Phi_j W0* + Psi_j W**), q1 = sum_j (Phi_j^2 W00 + 2 Phi_j Psi_j W0* + Psi_j^2 W**).
        m1_weights=np.concatenate((rule.weights[1], rule.weights[2])).astype(np.float64),
        q1_rows=np.concatenate((np.arange(K), np.arange(K), np.arange(K, 2 * K))),
        q1_cols=np.concatenate((np.arange(K), np.arange(K, 2 * K), np.arange(K, 2 * K))),
        q1_values=np.concatenate((rule.weights[0], 2.0 * rule.weights[1], rule.weights[2])).astype(np.float64),
    )
    return StructuredSystem(
        name=f"spectral modes (K = {K})",
        y0=y0,
        params=params,
        rhs=spectral_modes_rhs,
        jac=spectral_modes_jacobian,
        observe=spectral_modes_observe,
        observable_names=("m1", "q1"),
        kl=0,
        ku=0,
        rank=2,
        drive=model.drive,
        modal=modal,
    )
