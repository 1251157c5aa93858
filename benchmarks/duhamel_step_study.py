"""How many steps per decade an integrator that propagates the spectral modes exactly would need.

An oracle experiment, not an integrator. After the escape, ``alpha < 0`` and
the spectral modes of phase retrieval obey, in the internal time
``v = -int alpha dt``,

    dPhi_j/dv = -lam_j Phi_j,    dPsi_j/dv = -lam_j (Psi_j + g(v)),    g = beta / alpha,

a diagonal linear system driven by one scalar ``g``. Given ``g`` as a
polynomial on a step, every mode is propagated exactly with the functions
``phi_k`` of exponential integrators (Hochbruck and Ostermann, "Exponential
integrators", Acta Numerica 19 (2010), section 2.3), whatever the stiffness
``lam_j dv``. This script takes ``g`` at the four Radau points of each step
(0 and the three Radau IIA nodes) from a dense reference trajectory and
steps with ``dv = theta (v + v_1 / 10)``, where ``v_1`` is the internal time
one e-fold after the start. It reports the steps per decade of t and the
errors of q1, m1 and the loss at t = 1e3, 1e5 and 1e7 against the reference.

What it leaves out: an integrator must find ``g`` at the nodes itself, by an
implicit solve on three scalars per step. Explicit stages would be unstable
for large steps: linearised at the late fixed point, the relaxed modes feed
a change of ``g`` back with a gain of about -2 (an estimate). It must also handle the escape, where ``alpha > 0`` and the
internal time runs backwards, and a ridge penalty, which adds a rate that
varies along the step. The study starts at t = 100 from the reference state.
The reference is ``radau5`` at rtol 1e-12 and atol 1e-16 on 2401 output
times per decade, interpolated by cubic splines in log t, so errors below
about 1e-10 are not resolved. At t = 1e7 the loss is 8.9e-11 and is formed
from q1 and m1 near 1, so rounding alone gives it a relative error of about
eps / L = 2.5e-6.

Usage: ``python benchmarks/duhamel_step_study.py [--thetas 2,1,0.5,0.3,0.1]``
(about 20 s, most of it the reference).
"""

import argparse
import math

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.optimize import brentq

import cases
from hierarchy.integrators import solve

START_TIME = 100.0
CHECK_TIMES = (1e3, 1e5, 1e7)
# 0 and the Radau IIA nodes (4 -/+ sqrt 6) / 10 and 1: g is interpolated by a cubic on them.
NODES = np.array([0.0, (4.0 - math.sqrt(6.0)) / 10.0, (4.0 + math.sqrt(6.0)) / 10.0, 1.0])
# Below this |z| the phi functions are summed as series, where the recurrence loses digits.
SERIES_LIMIT = 0.5
SERIES_TERMS = 30


def phi_functions(z: np.ndarray, highest: int) -> np.ndarray:
    """Return ``phi_k(-z)`` for k = 0..highest, one row each, with ``phi_0(w) = e^w``."""
    w = -z
    values = np.empty((highest + 1, z.size))
    values[0] = np.exp(w)
    small = np.abs(z) < SERIES_LIMIT
    for k in range(1, highest + 1):
        with np.errstate(divide="ignore", invalid="ignore"):
            values[k] = (values[k - 1] - 1.0 / math.factorial(k - 1)) / w
        if small.any():
            w_small = w[small]
            term = np.full(w_small.shape, 1.0 / math.factorial(k))
            total = np.zeros_like(w_small)
            for j in range(SERIES_TERMS):
                total += term
                term = term * w_small / (k + j + 1)
            values[k, small] = total
    return values


class Reference:
    """Dense reference trajectory of the K = 517 system, with ``v(log t)`` and ``g(log t)`` as splines."""

    def __init__(self):
        self.case = cases.work_precision_case()
        problem = self.case.peer_problem
        self.lam, self.rho1, self.K = problem.lam, problem.rho1, problem.K
        self.problem = problem
        self.t = np.logspace(-1.0, 7.0, 19201)
        solution = solve(self.case.system, self.t, method="radau5", rtol=1e-12, atol=1e-16)
        if not solution.success:
            raise RuntimeError(f"the reference failed: {solution.message}")
        self.m1 = solution.observable("m1")
        self.q1 = solution.observable("q1")
        start = solve(self.case.system, [START_TIME], method="radau5", rtol=1e-12, atol=1e-16, save_state=True)
        self.start_state = start.states[-1]

        alpha = self.rho1 - 3.0 * self.q1
        beta = 2.0 * self.m1
        late = self.t >= 0.5 * START_TIME
        log_t = np.log(self.t[late])
        # dv / d(log t) = -alpha t, so v is the antiderivative of a smooth function of log t.
        self.v_antiderivative = CubicSpline(log_t, -(alpha * self.t)[late]).antiderivative()
        self.g = CubicSpline(log_t, (beta / alpha)[late])
        self.start_log_t = math.log(START_TIME)

    def v(self, log_t: float) -> float:
        return float(self.v_antiderivative(log_t) - self.v_antiderivative(self.start_log_t))

    def log_t_at(self, v: float, low: float, high: float) -> float:
        return brentq(lambda log_t: self.v(log_t) - v, low, high, xtol=1e-14, rtol=1e-15)

    def loss(self, q1: float, m1: float) -> float:
        return 0.25 * (3.0 * q1**2 - 2.0 * q1 * self.rho1 - 4.0 * m1**2 + 3.0 * self.rho1**2)


def step_to(reference: Reference, theta: float, t_end: float) -> tuple:
    """Step from ``START_TIME`` to ``t_end`` with relative step ``theta``; return (steps, q1, m1)."""
    lam, K = reference.lam, reference.K
    phi = reference.start_state[:K].copy()
    psi = reference.start_state[K:].copy()
    log_t = reference.start_log_t
    log_t_end = math.log(t_end)
    v = 0.0
    v_end = reference.v(log_t_end)
    v_scale = 0.1 * reference.v(log_t + 1.0)
    vandermonde = np.vander(NODES, NODES.size, increasing=True)
    steps = 0

    while v < v_end * (1.0 - 1e-14):
        dv = min(theta * (v + v_scale), v_end - v)
        node_log_t = [log_t] + [
            reference.log_t_at(v + node * dv, log_t - 1e-9, log_t_end + 1e-9) for node in NODES[1:]
        ]
        # g(v + x dv) = sum_k coefficients[k] x^k on the step.
        coefficients = np.linalg.solve(vandermonde, reference.g(np.array(node_log_t)))
        z = lam * dv
        phis = phi_functions(z, NODES.size)
        # Psi(dv) = e^{-z} Psi(0) - z sum_k coefficients[k] k! phi_{k+1}(-z): exact for a polynomial g.
        forcing = sum(coefficients[k] * z * math.factorial(k) * phis[k + 1] for k in range(NODES.size))
        psi = phis[0] * psi - forcing
        phi = phis[0] * phi
        v += dv
        log_t = node_log_t[-1]
        steps += 1

    problem = reference.problem
    q1 = float(problem.w00 @ (phi * phi) + 2.0 * (problem.w0s @ (phi * psi)) + problem.wss @ (psi * psi))
    m1 = float(problem.w0s @ phi + problem.wss @ psi)
    return steps, q1, m1


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--thetas", default="2,1,0.5,0.3,0.1", help="relative step sizes, comma-separated")
    arguments = parser.parse_args(argv)
    thetas = [float(value) for value in arguments.thetas.split(",")]
    reference = Reference()
    print(f"K = {reference.K} modes, start t = {START_TIME:g}; errors are relative to the reference")
    print(f"{'theta':>6} {'t':>8} {'steps':>6} {'per decade':>10} {'err q1':>9} {'err m1':>9} {'err L':>9} {'L':>9}")
    for theta in thetas:
        for t_end in CHECK_TIMES:
            steps, q1, m1 = step_to(reference, theta, t_end)
            q1_ref = float(np.interp(t_end, reference.t, reference.q1))
            m1_ref = float(np.interp(t_end, reference.t, reference.m1))
            loss_ref = reference.loss(q1_ref, m1_ref)
            loss_error = abs(reference.loss(q1, m1) - loss_ref) / loss_ref
            per_decade = steps / math.log10(t_end / START_TIME)
            print(
                f"{theta:>6g} {t_end:>8.0e} {steps:>6d} {per_decade:>10.1f} {abs(q1 - q1_ref) / q1_ref:>9.1e} "
                f"{abs(m1 - m1_ref) / abs(m1_ref):>9.1e} {loss_error:>9.1e} {loss_ref:>9.2e}"
            )


if __name__ == "__main__":
    main()
