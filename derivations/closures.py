"""Why each moment closure of the phase-retrieval hierarchy behaves as it does.

Run with ``python derivations/closures.py`` once the package is installed.
The script derives, with SymPy, what each closure does to the low-order
hierarchy, checks every statement against an integration of the truncated
system on ``d = 500``, ``a = 1.5``, ``b = 0``, ``sigma0 = 0.1``, seed 0
(``rho_1 = 1``), and exits non-zero if a check fails.

Hierarchy (phase retrieval, ``alpha = rho_1 - 3 q_1``, ``beta = 2 m_1``):

    dm_k/dt = alpha m_{k+1} + beta rho_{k+1},   dq_k/dt = 2 alpha q_{k+1} + 2 beta m_{k+1}.

1. Zero closure at K = 1 (``m_2 = q_2 = 0``). The feedback that saturates
   the overlap enters through ``alpha m_2``; with ``m_2 = 0`` it is gone, so
   ``dm_1/dt = 2 rho_2 m_1`` and ``dq_1/dt = 0``: the overlap grows as
   ``m_1(0) exp(2 rho_2 t)`` forever while ``q_1`` stays at ``q_1(0)``. The
   closure keeps only the escape instability of the top eigen-direction,
   without the norm growth that ends it. At higher K the same missing term
   sits at the last level, and the truncated system still blows up.
2. Copy closure at K = 1 (``m_2 = m_1``, ``q_2 = q_1``). This is the
   isotropic system with one eigenvalue ``lam = 1`` except that the teacher
   source keeps ``rho_2``. Its non-trivial fixed point solves
   ``alpha + 2 rho_2 = 0`` and ``q_1 alpha + 2 m_1^2 = 0``:
   ``q_1* = (rho_1 + 2 rho_2) / 3``, ``m_1*^2 = rho_2 q_1*``. It is stable,
   so the run stalls at ``m_1* < rho_1`` whenever ``rho_2 < rho_1``.
3. Ratio closure at K = 2 (``m_3 = m_2^2 / m_1``, ``q_3 = q_2^2 / q_1``):
   geometric extrapolation is exact when one eigen-direction dominates all
   moments. For a power law every level is dominated by the top
   eigenvalue only at large k, so at K = 2 the closure again creates a
   spurious fixed point below ``rho_1``, found here by solving the four
   fixed-point equations.
4. Quadrature closure (Cayley-Hamilton on the K Gauss nodes of the spectral
   measure). The closure relation is exact for a spectrum made of the K
   nodes, while the source terms keep the true ``rho_{k+1}``, so the
   truncated system is close to the flow of a K-eigenvalue problem: it has
   no spurious fixed point, and settles within about 1e-5 of ``m_1 = rho_1``
   here. Its error is that of a K-point Gauss rule on a measure that
   accumulates at ``lam = 0``, which falls only algebraically in K: the
   tail, where ``lam_i t ~ 1``, is what it misses.
"""

import sys

import numpy as np
import sympy as sp

from hierarchy.integrators import solve
from hierarchy.model import PhaseRetrieval
from hierarchy.spectrum import PowerLawSpec
from hierarchy.truncation import build_exact_flow, build_moment_hierarchy

FAILURES = []


def check(name: str, condition: bool, detail: str) -> None:
    print(f"  [{'ok' if condition else 'FAILED'}] {name}: {detail}")
    if not condition:
        FAILURES.append(name)


def copy_closure_fixed_point():
    """Return the symbolic non-trivial fixed point of the copy closure at K = 1."""
    m1, q1, rho1, rho2 = sp.symbols("m_1 q_1 rho_1 rho_2", positive=True)
    alpha = rho1 - 3 * q1
    beta = 2 * m1
    dm = alpha * m1 + beta * rho2
    dq = 2 * alpha * q1 + 2 * beta * m1
    solutions = sp.solve([sp.simplify(dm / m1), dq], [m1, q1], dict=True)
    return solutions, (m1, q1, rho1, rho2)


def ratio_closure_fixed_point(rho, guess):
    """Solve the four fixed-point equations of the ratio closure at K = 2 numerically."""
    m1, q1, m2, q2 = sp.symbols("m_1 q_1 m_2 q_2")
    alpha = rho[1] - 3 * q1
    beta = 2 * m1
    m3 = m2**2 / m1
    q3 = q2**2 / q1
    equations = [
        alpha * m2 + beta * rho[2],
        2 * alpha * q2 + 2 * beta * m2,
        alpha * m3 + beta * rho[3],
        2 * alpha * q3 + 2 * beta * m3,
    ]
    return sp.nsolve(equations, [m1, q1, m2, q2], guess, tol=1e-14, prec=30)


def main() -> int:
    model = PhaseRetrieval()
    problem = PowerLawSpec(d=500, a=1.5, b=0.0, sigma0=0.1, seed=0).build()
    rho = {k: problem.rho(k) for k in range(1, 5)}
    t_out = np.geomspace(0.1, 1e5, 80)
    exact = solve(build_exact_flow(problem, model), t_out, rtol=1e-10, atol=1e-14)
    print(f"problem: d = 500, a = 1.5, b = 0, rho_1 = {rho[1]:.6g}, rho_2 = {rho[2]:.6g}")
    print(f"exact flow: m_1(t_end) = {exact.observable('m1')[-1]:.10f}")

    print("\n1. zero closure, K = 1")
    zero = solve(build_moment_hierarchy(problem, model, 1, "zero"), t_out, rtol=1e-10, atol=1e-14)
    growth = problem.m(1) * np.exp(2 * rho[2] * zero.t)
    check("m_1 = m_1(0) exp(2 rho_2 t)", np.max(np.abs(zero.observable("m1") / growth - 1)) < 1e-7,
          f"max relative deviation {np.max(np.abs(zero.observable('m1') / growth - 1)):.2e}")
    check("q_1 constant", np.max(np.abs(zero.observable("q1") / problem.q(1) - 1)) < 1e-12,
          f"q_1 stays at {problem.q(1):.6g}")
    check("reported as diverged", zero.status.name == "DIVERGED", zero.message)

    print("\n2. copy closure, K = 1")
    solutions, (m1, q1, rho1, rho2) = copy_closure_fixed_point()
    print(f"  fixed points (m_1 != 0): {solutions}")
    q_star = (rho1 + 2 * rho2) / 3
    m_star = sp.sqrt(rho2 * q_star)
    check("symbolic fixed point", any(sp.simplify(s[q1] - q_star) == 0 and sp.simplify(s[m1] - m_star) == 0 for s in solutions),
          f"q_1* = {q_star}, m_1* = {m_star}")
    copy = solve(build_moment_hierarchy(problem, model, 1, "copy"), t_out, rtol=1e-10, atol=1e-14)
    m_star_value = float(m_star.subs({rho1: rho[1], rho2: rho[2]}))
    check("run stalls at m_1*", abs(copy.observable("m1")[-1] - m_star_value) < 1e-6,
          f"m_1(t_end) = {copy.observable('m1')[-1]:.8f}, m_1* = {m_star_value:.8f}")

    print("\n3. ratio closure, K = 2")
    ratio = solve(build_moment_hierarchy(problem, model, 2, "ratio"), t_out, rtol=1e-10, atol=1e-14, save_state=True)
    final_state = ratio.states[-1]
    fixed = ratio_closure_fixed_point(rho, list(final_state))
    check("run stalls at the closure's fixed point", abs(float(fixed[0]) - ratio.observable("m1")[-1]) < 1e-6,
          f"m_1* = {float(fixed[0]):.8f} from the fixed-point equations, m_1(t_end) = {ratio.observable('m1')[-1]:.8f}")
    check("spurious fixed point below rho_1", float(fixed[0]) < 0.9 * rho[1], f"m_1* / rho_1 = {float(fixed[0]) / rho[1]:.4f}")

    print("\n4. quadrature closure")
    errors = []
    for order in (2, 4, 6, 8):
        run = solve(build_moment_hierarchy(problem, model, order, "quadrature"), t_out, rtol=1e-10, atol=1e-14)
        errors.append(np.max(np.abs(run.observable("m1") / exact.observable("m1") - 1)))
        print(f"  K = {order}: max relative error of m_1 {errors[-1]:.3e}, m_1(t_end) = {run.observable('m1')[-1]:.8f}")
    check("error falls with K", all(b < a for a, b in zip(errors, errors[1:])), "monotone")
    slope = np.polyfit(np.log([2, 4, 6, 8]), np.log(errors), 1)[0]
    check("algebraic, not geometric, convergence", -3.0 < slope < -0.5, f"fitted error ~ K^{slope:.2f}")

    if FAILURES:
        print(f"\n{len(FAILURES)} check(s) failed: {', '.join(FAILURES)}")
        return 1
    print("\nAll checks passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
