"""Derive and check the loss, gradient flow and hierarchy of phase retrieval.

Student ``(w·x)^2``, teacher ``(w*·x)^2``, data ``x ~ N(0, Σ)``. The script
prints the loss from Wick's theorem, the gradient flow, the hierarchy at a
symbolic level ``k`` and the drive scalars, then checks with SymPy that

(a) ``F = 1/4 (3 q_1^2 - 2 q_1 rho_1 - 4 m_1^2 + 3 rho_1^2)``;
(b) for ``Σ = I`` (all levels equal) the hierarchy closes into
    ``dm/dt = (rho - 3 q) m + 2 m rho`` and ``dq/dt = 2 (rho - 3 q) q + 4 m^2``;
(c) ``alpha = rho_1 - 3 q_1`` and ``beta = 2 m_1``.

It exits with status 1 if a check fails. Run it from the repository root with
the package importable, for instance ``PYTHONPATH=. python derivations/phase_retrieval_hierarchy.py``.
"""

from __future__ import annotations

import sys

import sympy

from hierarchy.symbolic import gaussian_moments as gm
from hierarchy.symbolic.hierarchy_equations import derive_phase_retrieval, k, m, merge_levels, q, rho


def check(label: str, difference: sympy.Expr) -> bool:
    """Print whether ``difference`` simplifies to zero and return the result."""
    passed = sympy.simplify(difference) == 0
    print(f"  [{'ok' if passed else 'FAILED'}] {label}")
    if not passed:
        print(f"           nonzero difference: {sympy.simplify(difference)}")
    return passed


def main() -> int:
    equations = derive_phase_retrieval()

    print("Population loss F(q_1, m_1; rho_1) = 1/4 E[(u^2 - v^2)^2]:")
    print(f"  F   = {equations.loss}")
    print(f"  F_q = {equations.F_q}")
    print(f"  F_m = {equations.F_m}")
    print()
    print("Gradient flow dw/dt = -grad_w F = alpha Σw + beta Σw*:")
    print(f"  alpha = -2 F_q = {equations.alpha}")
    print(f"  beta  = -F_m   = {equations.beta}")
    print(
        f"  d alpha/d(q_1, m_1) = ({equations.dalpha_dq1}, {equations.dalpha_dm1}), "
        f"d beta/d(q_1, m_1) = ({equations.dbeta_dq1}, {equations.dbeta_dm1})"
    )
    print()
    print("Hierarchy at level k:")
    next_level = [m[k + 1], q[k + 1], rho[k + 1]]
    print(f"  dm_k/dt = {sympy.collect(equations.dm_k, next_level)}")
    print(f"  dq_k/dt = {sympy.collect(equations.dq_k, next_level)}")
    print()

    # The closed forms to check, in the level-one statistics and in the plain
    # symbols q, m, rho that stand for every level when Σ = I.
    loss_closed_form = sympy.Rational(1, 4) * (3 * q[1] ** 2 - 2 * q[1] * rho[1] - 4 * m[1] ** 2 + 3 * rho[1] ** 2)
    isotropic_dm = (gm.rho - 3 * gm.q) * gm.m + 2 * gm.m * gm.rho
    isotropic_dq = 2 * (gm.rho - 3 * gm.q) * gm.q + 4 * gm.m**2

    print("Checks:")
    results = [
        check("(a) F = 1/4 (3 q_1^2 - 2 q_1 rho_1 - 4 m_1^2 + 3 rho_1^2)", equations.loss - loss_closed_form),
        check("(b) Σ = I: dm/dt = (rho - 3 q) m + 2 m rho", merge_levels(equations.dm_k) - isotropic_dm),
        check("(b) Σ = I: dq/dt = 2 (rho - 3 q) q + 4 m^2", merge_levels(equations.dq_k) - isotropic_dq),
        check("(c) alpha = rho_1 - 3 q_1", equations.alpha - (rho[1] - 3 * q[1])),
        check("(c) beta = 2 m_1", equations.beta - 2 * m[1]),
    ]

    if not all(results):
        print(f"{results.count(False)} of {len(results)} checks failed.")
        return 1
    print(f"All {len(results)} checks passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
