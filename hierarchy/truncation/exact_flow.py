"""The exact d-dimensional gradient flow, the reference for every truncation.

    dw_i/dt = lam_i (alpha w_i + beta w*_i) - mu w_i,   alpha, beta = drive(q_1, m_1; rho_1),

with ``q_1 = sum_i lam_i w_i^2``, ``m_1 = sum_i lam_i w_i w*_i`` and the ridge
penalty ``mu`` of the model (0 without one). One evaluation costs ``O(d)``.
The Jacobian is ``diag(lam alpha - mu) + U V^T`` with

    U = [Sigma w, Sigma w*],
    V = [grad_w alpha, grad_w beta] = [2 alpha_q Sigma w + alpha_m Sigma w*, 2 beta_q Sigma w + beta_m Sigma w*].

Parameter layout: ``[rho_1, mu, lam_1..lam_d, w*_1..w*_d]``.
"""

import numba
import numpy as np

from ..integrators.system import ModalForm, StructuredSystem
from ..kernel_types import JAC_SIGNATURE, OBSERVE_SIGNATURE, RHS_SIGNATURE
from ..spectrum import Problem
from .ridge import ridge_of


@numba.njit(cache=True)
def _overlaps(w, lam, wstar):
    q1 = 0.0
    m1 = 0.0
    for i in range(w.shape[0]):
        q1 += lam[i] * w[i] * w[i]
        m1 += lam[i] * w[i] * wstar[i]
    return q1, m1


@numba.njit(RHS_SIGNATURE, cache=True)
def exact_flow_rhs(t, w, params, drive, out):
    d = w.shape[0]
    rho1 = params[0]
    lam = params[2 : 2 + d]
    wstar = params[2 + d : 2 + 2 * d]
    q1, m1 = _overlaps(w, lam, wstar)
    alpha, beta, _, _, _, _ = drive(q1, m1, rho1)
    mu = params[1]
    for i in range(d):
        out[i] = lam[i] * (alpha * w[i] + beta * wstar[i]) - mu * w[i]


@numba.njit(JAC_SIGNATURE, cache=True)
def exact_flow_jacobian(t, w, params, drive, band, U, V):
    d = w.shape[0]
    rho1 = params[0]
    lam = params[2 : 2 + d]
    wstar = params[2 + d : 2 + 2 * d]
    q1, m1 = _overlaps(w, lam, wstar)
    alpha, beta, alpha_q, alpha_m, beta_q, beta_m = drive(q1, m1, rho1)
    for i in range(d):
        sigma_w = lam[i] * w[i]
        sigma_wstar = lam[i] * wstar[i]
        band[i, 0] = lam[i] * alpha - params[1]
        U[i, 0] = sigma_w
        U[i, 1] = sigma_wstar
        V[i, 0] = 2.0 * alpha_q * sigma_w + alpha_m * sigma_wstar
        V[i, 1] = 2.0 * beta_q * sigma_w + beta_m * sigma_wstar


@numba.njit(OBSERVE_SIGNATURE, cache=True)
def exact_flow_observe(w, params, drive, out):
    d = w.shape[0]
    q1, m1 = _overlaps(w, params[2 : 2 + d], params[2 + d : 2 + 2 * d])
    out[0] = m1
    out[1] = q1


def build_exact_flow(problem: Problem, model) -> StructuredSystem:
    """Return the exact flow of ``problem`` under ``model`` as a structured system of size ``d``."""
    if not isinstance(problem, Problem):
        raise ValueError("the exact flow needs a finite dimension d; for d = inf use spectral modes")
    params = np.concatenate(([problem.rho1, ridge_of(model)], problem.lam, problem.wstar))
    modal = ModalForm(
        rates=np.array(problem.lam, dtype=np.float64),
        rate_index=np.arange(problem.d),
        forcing=np.asarray(problem.lam * problem.wstar, dtype=np.float64),
        ridge=ridge_of(model),
        rho1=float(problem.rho1),
        # m1 = sum_i lam_i w*_i w_i, q1 = sum_i lam_i w_i^2.
        m1_weights=np.asarray(problem.lam * problem.wstar, dtype=np.float64),
        q1_rows=np.arange(problem.d),
        q1_cols=np.arange(problem.d),
        q1_values=np.array(problem.lam, dtype=np.float64),
    )
    return StructuredSystem(
        name=f"exact flow (d = {problem.d})",
        y0=np.array(problem.w0, dtype=np.float64),
        params=params,
        rhs=exact_flow_rhs,
        jac=exact_flow_jacobian,
        observe=exact_flow_observe,
        observable_names=("m1", "q1"),
        kl=0,
        ku=0,
        rank=2,
        drive=model.drive,
        modal=modal,
    )
