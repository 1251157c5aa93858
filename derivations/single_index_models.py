"""Derive and check the loss, gradient flow and hierarchy of single-index models.

Student ``σ(w·x)``, teacher ``g(w*·x)``, data ``x ~ N(0, Σ)`` and loss
``F = c E[(σ(u) - g(v))^2]`` with ``(u, v) = (w·x, w*·x)``. The script prints
and checks with SymPy

(a) the general hierarchy for an arbitrary ``F(q_1, m_1; rho_1)``:
    ``dm_k/dt = -2 F_q m_{k+1} - F_m rho_{k+1}``,
    ``dq_k/dt = -4 F_q q_{k+1} - 2 F_m m_{k+1}``, and the ridge terms
    ``-μ m_k`` and ``-2 μ q_k``;
(b) the Mehler formula ``E[He_a(u) He_b(v)] = δ_ab a! m^a`` at ``q = rho = 1``
    from the Wick moments, which underlies the Hermite surrogates;
(c) linear regression ``σ = g = z`` with a symbolic prefactor ``c``:
    ``F = c (q_1 - 2 m_1 + rho_1)``, ``alpha = -2c``, ``beta = 2c``, a linear
    hierarchy, and the closed form ``w(t) - w* = exp(-2cΣt)(w(0) - w*)``
    (``exp(-Σt)`` for the half square loss ``c = 1/2``, ``exp(-Σt/2)`` for
    the default ``c = 1/4``) solving the flow and the hierarchy;
(d) phase retrieval ``σ = g = z^2`` through the single-index derivation,
    symbol for symbol equal to the phase-retrieval derivation;
(e) the Hermite target ``g = He_3(z) = z^3 - 3z`` with ``σ = He_3`` and with
    ``σ = z^3``: the Wick loss in closed form, the Mehler value
    ``12 c (1 - m^3)`` at ``q = rho = 1``, and the stationary point at ``w = w*``.

It exits with status 1 if a check fails. Run it from the repository root with
the package importable, for instance ``PYTHONPATH=. python derivations/single_index_models.py``.
"""

from __future__ import annotations

import sys

import sympy

from hierarchy.symbolic import gaussian_moments as gm
from hierarchy.symbolic.expression_parser import parse_activation
from hierarchy.symbolic.hierarchy_equations import (
    derive_hierarchy,
    derive_phase_retrieval,
    k,
    m,
    population_square_loss,
    q,
    rho,
)
from hierarchy.symbolic.single_index import derive_single_index


def check(label: str, difference: sympy.Expr) -> bool:
    """Print whether ``difference`` simplifies to zero and return the result."""
    passed = sympy.simplify(difference) == 0
    print(f"  [{'ok' if passed else 'FAILED'}] {label}")
    if not passed:
        print(f"           nonzero difference: {sympy.simplify(difference)}")
    return passed


def check_true(label: str, condition: bool) -> bool:
    """Print whether ``condition`` is true and return it."""
    print(f"  [{'ok' if condition else 'FAILED'}] {label}")
    return bool(condition)


def general_hierarchy() -> list[bool]:
    """(a) The hierarchy of an arbitrary loss F(q_1, m_1; rho_1), with and without ridge."""
    loss_function = sympy.Function("F")
    equations = derive_hierarchy(loss_function(gm.q, gm.m, gm.rho))
    F_q, F_m = equations.F_q, equations.F_m
    print("(a) General single-index loss F(q_1, m_1; rho_1):")
    print(f"  dm_k/dt = {equations.dm_k}")
    print(f"  dq_k/dt = {equations.dq_k}")

    # derive_single_index takes a numerical ridge strength, so the ridge terms are checked at mu = 3/10.
    mu = sympy.Rational(3, 10)
    linear = derive_single_index(parse_activation("z"), parse_activation("z"), ridge=mu)
    print(f"  ridge mu = {mu}: dm_k/dt gains {sympy.expand(linear.dm_k_with_ridge - linear.equations.dm_k)}, "
          f"dq_k/dt gains {sympy.expand(linear.dq_k_with_ridge - linear.equations.dq_k)}")
    return [
        check("(a) alpha = -2 F_q", equations.alpha + 2 * F_q),
        check("(a) beta = -F_m", equations.beta + F_m),
        check("(a) dm_k/dt = -2 F_q m_{k+1} - F_m rho_{k+1}", equations.dm_k - (-2 * F_q * m[k + 1] - F_m * rho[k + 1])),
        check("(a) dq_k/dt = -4 F_q q_{k+1} - 2 F_m m_{k+1}", equations.dq_k - (-4 * F_q * q[k + 1] - 2 * F_m * m[k + 1])),
        check("(a) ridge adds -mu m_k to dm_k/dt", linear.dm_k_with_ridge - linear.equations.dm_k + mu * m[k]),
        check("(a) ridge adds -2 mu q_k to dq_k/dt", linear.dq_k_with_ridge - linear.equations.dq_k + 2 * mu * q[k]),
    ]


def mehler_formula() -> list[bool]:
    """(b) E[He_a(u) He_b(v)] = δ_ab a! m^a for unit variances, from the Wick moments."""
    print("(b) Mehler formula from Wick moments, a, b <= 6:")
    z = sympy.Symbol("z")
    failures = []
    for a in range(7):
        for b in range(7):
            product = sympy.hermite_prob(a, z).xreplace({z: gm.u}) * sympy.hermite_prob(b, z).xreplace({z: gm.v})
            value = gm.gaussian_expectation(product, q=1, m=gm.m, rho=1)
            expected = sympy.factorial(a) * gm.m**a if a == b else 0
            if sympy.expand(value - expected) != 0:
                failures.append((a, b))
    return [check_true(f"(b) E[He_a(u) He_b(v)] = δ_ab a! m^a for all 49 pairs (failures: {failures})", not failures)]


def linear_regression() -> list[bool]:
    """(c) σ = g = z: loss, drive, linear hierarchy and its closed-form solution."""
    c, t = sympy.symbols("c t", positive=True)
    equations = derive_hierarchy(population_square_loss(gm.u, gm.v, prefactor=c))
    print("(c) Linear regression, σ = g = z, F = c E[(u - v)^2]:")
    print(f"  F = {equations.loss},  alpha = {equations.alpha},  beta = {equations.beta}")
    print(f"  dm_k/dt = {equations.dm_k},  dq_k/dt = {equations.dq_k}")

    default = derive_single_index(parse_activation("z"), parse_activation("z"))
    print(f"  default prefactor 1/4: alpha = {default.equations.alpha}, beta = {default.equations.beta}")

    results = [
        check("(c) F = c (q_1 - 2 m_1 + rho_1)", equations.loss - c * (q[1] - 2 * m[1] + rho[1])),
        check("(c) alpha = -2c", equations.alpha + 2 * c),
        check("(c) beta = 2c", equations.beta - 2 * c),
        check("(c) dm_k/dt = 2c (rho_{k+1} - m_{k+1})", equations.dm_k - 2 * c * (rho[k + 1] - m[k + 1])),
        check("(c) dq_k/dt = 4c (m_{k+1} - q_{k+1})", equations.dq_k - 4 * c * (m[k + 1] - q[k + 1])),
        check("(c) c = 1/2 gives alpha = -1", equations.alpha.subs(c, sympy.Rational(1, 2)) + 1),
        check("(c) c = 1/4 (default) gives alpha = -1/2, beta = 1/2",
              (default.equations.alpha + sympy.Rational(1, 2)) ** 2 + (default.equations.beta - sympy.Rational(1, 2)) ** 2),
    ]

    # Closed form in dimension 3 with symbolic eigenvalues, teacher and initial offset δ = w(0) - w*.
    dimension = 3
    eigenvalues = sympy.symbols(f"lambda1:{dimension + 1}", positive=True)
    teacher = sympy.symbols(f"s1:{dimension + 1}", real=True)
    offset = sympy.symbols(f"delta1:{dimension + 1}", real=True)
    weights = [teacher[i] + sympy.exp(-2 * c * eigenvalues[i] * t) * offset[i] for i in range(dimension)]

    alpha, beta = equations.alpha, equations.beta
    flow_residual = sum(
        (sympy.diff(weights[i], t) - eigenvalues[i] * (alpha * weights[i] + beta * teacher[i])) ** 2 for i in range(dimension)
    )
    results.append(check("(c) w(t) = w* + exp(-2cΣt)(w(0) - w*) solves dw/dt = alpha Σw + beta Σw*", flow_residual))

    def statistic(first, second, power):
        return sum(eigenvalues[i] ** power * first[i] * second[i] for i in range(dimension))

    closed_m = {j: statistic(weights, teacher, j) for j in range(5)}
    closed_q = {j: statistic(weights, weights, j) for j in range(5)}
    teacher_rho = {j: statistic(teacher, teacher, j) for j in range(5)}
    print("  m_k(t) = rho_k + sum_i lambda_i^k e^(-2c lambda_i t) delta_i w*_i,")
    print("  q_k(t) = sum_i lambda_i^k (w*_i + e^(-2c lambda_i t) delta_i)^2")
    hierarchy_residual = 0
    for level in range(4):
        dm, dq = equations.level(level)
        substitution = {m[level + 1]: closed_m[level + 1], q[level + 1]: closed_q[level + 1], rho[level + 1]: teacher_rho[level + 1]}
        hierarchy_residual += (sympy.diff(closed_m[level], t) - dm.xreplace(substitution)) ** 2
        hierarchy_residual += (sympy.diff(closed_q[level], t) - dq.xreplace(substitution)) ** 2
    closed_m_formula = teacher_rho[1] + sum(
        eigenvalues[i] * sympy.exp(-2 * c * eigenvalues[i] * t) * offset[i] * teacher[i] for i in range(dimension)
    )
    results.append(check("(c) closed-form m_k, q_k solve the hierarchy for k = 0..3", sympy.expand(hierarchy_residual)))
    results.append(check("(c) m_1(t) = rho_1 + sum_i lambda_i e^(-2c lambda_i t) delta_i w*_i", closed_m[1] - closed_m_formula))
    return results


def phase_retrieval() -> list[bool]:
    """(d) σ = g = z^2 through derive_single_index equals the phase-retrieval derivation."""
    reference = derive_phase_retrieval()
    derived = derive_single_index(parse_activation("z**2"), parse_activation("z**2")).equations
    print("(d) Phase retrieval through the single-index derivation:")
    print(f"  F = {derived.loss}")
    fields = ("loss", "F_q", "F_m", "alpha", "beta", "dalpha_dq1", "dalpha_dm1", "dbeta_dq1", "dbeta_dm1", "dm_k", "dq_k")
    mismatches = [name for name in fields if getattr(derived, name) != getattr(reference, name)]
    return [check_true(f"(d) all {len(fields)} expressions equal symbol for symbol (mismatches: {mismatches})", not mismatches)]


def hermite_target() -> list[bool]:
    """(e) Teacher He_3(z) = z^3 - 3z with student He_3 and with student z^3."""
    c = sympy.Rational(1, 4)
    matched = derive_single_index(parse_activation("z**3 - 3*z"), parse_activation("z**3 - 3*z"))
    cubic = derive_single_index(parse_activation("z**3"), parse_activation("z**3 - 3*z"))
    Q, M, R = q[1], m[1], rho[1]

    def hermite_3_variance(s):
        return 15 * s**3 - 18 * s**2 + 9 * s  # E[He_3(u)^2] for Var u = s

    cross = 9 * Q * M * R + 6 * M**3 - 9 * Q * M - 9 * M * R + 9 * M  # E[He_3(u) He_3(v)]
    expected = c * (hermite_3_variance(Q) + hermite_3_variance(R) - 2 * cross)
    print("(e) Student He_3, teacher He_3 = z^3 - 3z:")
    print(f"  F = {sympy.factor(matched.equations.loss)}")
    print(f"  alpha = {matched.equations.alpha}")
    print(f"  beta  = {matched.equations.beta}")
    print("  Student z^3, teacher He_3:")
    print(f"  F = {cubic.equations.loss}")

    # At w = w* the gradient alpha Σw* + beta Σw* vanishes, so alpha + beta = 0 at q = m = rho.
    at_teacher = {Q: R, M: R}
    student_cubic_at_teacher = sympy.expand((cubic.equations.alpha + cubic.equations.beta).xreplace(at_teacher))
    return [
        check("(e) F = c (E[He_3(u)^2] + E[He_3(v)^2] - 2 E[He_3(u) He_3(v)]) by Wick moments", matched.equations.loss - expected),
        check("(e) at q = rho = 1: F = 12 c (1 - m^3) (Mehler)", matched.equations.loss.xreplace({Q: 1, R: 1}) - 12 * c * (1 - M**3)),
        check("(e) w = w* is stationary: alpha + beta = 0 at q = m = rho", (matched.equations.alpha + matched.equations.beta).xreplace(at_teacher)),
        check_true(
            f"(e) student z^3 cannot fit He_3: alpha + beta at q = m = rho is {student_cubic_at_teacher}, not 0",
            student_cubic_at_teacher != 0,
        ),
        check_true("(e) polynomial models are exact (no surrogate)", matched.is_exact and cubic.is_exact),
    ]


def main() -> int:
    results: list[bool] = []
    for section in (general_hierarchy, mehler_formula, linear_regression, phase_retrieval, hermite_target):
        results += section()
        print()

    if not all(results):
        print(f"{results.count(False)} of {len(results)} checks failed.")
        return 1
    print(f"All {len(results)} checks passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
