"""Tests of the SymPy layer: Gaussian moments, hierarchy derivation, code generation."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy

from hierarchy.symbolic import gaussian_moments as gm
from hierarchy.symbolic.codegen import (
    PHASE_RETRIEVAL_MODULE_PATH,
    generate_model_module,
    magnitude_expression,
    rounded_operations,
    write_phase_retrieval_module,
)
from hierarchy.symbolic.gaussian_moments import gaussian_expectation, gaussian_moment
from hierarchy.symbolic.hierarchy_equations import (
    STUDENT,
    TEACHER,
    SigmaPowerCombination,
    derive_hierarchy,
    derive_phase_retrieval,
    inner_product,
    k,
    m,
    merge_levels,
    phase_retrieval_loss,
    q,
    rho,
)

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


def _subprocess_environment(**extra: str) -> dict[str, str]:
    environment = dict(os.environ, **extra)
    existing = environment.get("PYTHONPATH")
    environment["PYTHONPATH"] = str(REPOSITORY_ROOT) + (os.pathsep + existing if existing else "")
    return environment


def _brute_force_moment(i: int, j: int) -> sympy.Expr:
    """Sum over every perfect matching of i copies of u and j copies of v, enumerated one by one."""
    covariance = {("u", "u"): gm.q, ("u", "v"): gm.m, ("v", "u"): gm.m, ("v", "v"): gm.rho}

    def matchings_sum(labels: tuple[str, ...]) -> sympy.Expr:
        if not labels:
            return sympy.Integer(1)
        first, rest = labels[0], labels[1:]
        total = sympy.Integer(0)
        for position, partner in enumerate(rest):
            remaining = rest[:position] + rest[position + 1 :]
            total += covariance[(first, partner)] * matchings_sum(remaining)
        return total

    return sympy.expand(matchings_sum(("u",) * i + ("v",) * j))


# ---------------------------------------------------------------- Gaussian moments


def test_moment_known_values():
    assert gaussian_moment(0, 0) == 1
    assert gaussian_moment(2, 0) == gm.q
    assert gaussian_moment(1, 1) == gm.m
    assert gaussian_moment(0, 2) == gm.rho
    assert gaussian_moment(4, 0) == 3 * gm.q**2
    assert gaussian_moment(0, 4) == 3 * gm.rho**2
    assert gaussian_moment(2, 2) == sympy.expand(gm.q * gm.rho + 2 * gm.m**2)
    assert gaussian_moment(3, 1) == 3 * gm.q * gm.m
    assert gaussian_moment(1, 3) == 3 * gm.m * gm.rho
    assert gaussian_moment(6, 0) == 15 * gm.q**3


def test_moment_odd_orders_vanish():
    for i in range(8):
        for j in range(8):
            if (i + j) % 2 == 1:
                assert gaussian_moment(i, j) == 0, (i, j)


@pytest.mark.parametrize("i, j", [(i, j) for i in range(7) for j in range(7) if (i + j) % 2 == 0 and i + j <= 8])
def test_moment_matches_matching_enumeration(i, j):
    assert gaussian_moment(i, j) == _brute_force_moment(i, j)


def test_moment_accepts_numerical_covariance():
    assert gaussian_moment(2, 2, q=2, m=1, rho=3) == 2 * 3 + 2 * 1


def test_moment_rejects_invalid_order():
    with pytest.raises(ValueError, match="non-negative"):
        gaussian_moment(-1, 2)
    with pytest.raises(ValueError, match="non-negative"):
        gaussian_moment(2, 1.0)


@pytest.mark.parametrize("i, j", [(4, 2), (3, 3)])
def test_moment_sixth_order_monte_carlo(i, j):
    covariance = np.array([[1.3, 0.6], [0.6, 0.9]])
    rng = np.random.default_rng(20240611)
    samples = rng.multivariate_normal(np.zeros(2), covariance, size=2_000_000)
    values = samples[:, 0] ** i * samples[:, 1] ** j
    estimate = values.mean()
    standard_error = values.std(ddof=1) / np.sqrt(values.size)

    exact = float(gaussian_moment(i, j, q=sympy.Rational(13, 10), m=sympy.Rational(6, 10), rho=sympy.Rational(9, 10)))

    assert standard_error < 0.02 * abs(exact)
    assert abs(estimate - exact) < 5 * standard_error


def test_expectation_of_polynomial():
    u, v = gm.u, gm.v
    assert gaussian_expectation((u + 2 * v) ** 2) == sympy.expand(gm.q + 4 * gm.m + 4 * gm.rho)
    assert gaussian_expectation(u**2 * v**2 - 3 * u * v + 7) == sympy.expand(gm.q * gm.rho + 2 * gm.m**2 - 3 * gm.m + 7)
    # Coefficients that depend on other symbols are constants of the expectation.
    scale = sympy.Symbol("scale")
    assert gaussian_expectation(scale * u**4 + gm.rho * v) == 3 * scale * gm.q**2


def test_expectation_rejects_non_polynomial():
    with pytest.raises(ValueError, match="polynomial in u and v"):
        gaussian_expectation(sympy.exp(gm.u))


# ---------------------------------------------------------------- hierarchy derivation


def test_phase_retrieval_loss_closed_form():
    closed_form = sympy.Rational(1, 4) * (3 * gm.q**2 - 2 * gm.q * gm.rho - 4 * gm.m**2 + 3 * gm.rho**2)
    assert sympy.expand(phase_retrieval_loss() - closed_form) == 0


def test_phase_retrieval_hierarchy_symbol_for_symbol():
    equations = derive_phase_retrieval()

    assert equations.loss == sympy.expand(
        sympy.Rational(1, 4) * (3 * q[1] ** 2 - 2 * q[1] * rho[1] - 4 * m[1] ** 2 + 3 * rho[1] ** 2)
    )
    assert equations.F_q == sympy.expand((3 * q[1] - rho[1]) / 2)
    assert equations.F_m == -2 * m[1]
    assert equations.alpha == sympy.expand(rho[1] - 3 * q[1])
    assert equations.beta == 2 * m[1]
    assert (equations.dalpha_dq1, equations.dalpha_dm1) == (-3, 0)
    assert (equations.dbeta_dq1, equations.dbeta_dm1) == (0, 2)
    assert equations.dm_k == sympy.expand((rho[1] - 3 * q[1]) * m[k + 1] + 2 * m[1] * rho[k + 1])
    assert equations.dq_k == sympy.expand(2 * (rho[1] - 3 * q[1]) * q[k + 1] + 4 * m[1] * m[k + 1])


def test_flow_terms_alpha_beta():
    equations = derive_phase_retrieval()
    assert set(equations.flow.terms) == {(STUDENT, 1), (TEACHER, 1)}
    assert equations.flow.coefficient(STUDENT, 1) == equations.alpha
    assert equations.flow.coefficient(TEACHER, 1) == equations.beta


def test_hierarchy_general_loss_matches_formula():
    loss = gm.q**3 * gm.m + sympy.exp(-gm.m) * gm.rho + gm.q * gm.rho**2
    equations = derive_hierarchy(loss)
    F_q = sympy.diff(loss, gm.q).xreplace({gm.q: q[1], gm.m: m[1], gm.rho: rho[1]})
    F_m = sympy.diff(loss, gm.m).xreplace({gm.q: q[1], gm.m: m[1], gm.rho: rho[1]})

    assert sympy.expand(equations.F_q - F_q) == 0
    assert sympy.expand(equations.F_m - F_m) == 0
    assert sympy.expand(equations.alpha + 2 * F_q) == 0
    assert sympy.expand(equations.beta + F_m) == 0
    assert sympy.expand(equations.dalpha_dm1 + 2 * sympy.diff(F_q, m[1])) == 0
    assert sympy.expand(equations.dbeta_dq1 + sympy.diff(F_m, q[1])) == 0
    assert sympy.expand(equations.dm_k - (-2 * F_q * m[k + 1] - F_m * rho[k + 1])) == 0
    assert sympy.expand(equations.dq_k - (-4 * F_q * q[k + 1] - 2 * F_m * m[k + 1])) == 0


def test_hierarchy_level_substitutes_k():
    dm_2, dq_2 = derive_phase_retrieval().level(2)
    assert dm_2 == sympy.expand((rho[1] - 3 * q[1]) * m[3] + 2 * m[1] * rho[3])
    assert dq_2 == sympy.expand(2 * (rho[1] - 3 * q[1]) * q[3] + 4 * m[1] * m[3])


def test_merge_levels_isotropic_system():
    equations = derive_phase_retrieval()
    assert merge_levels(equations.dm_k) == sympy.expand((gm.rho - 3 * gm.q) * gm.m + 2 * gm.m * gm.rho)
    assert merge_levels(equations.dq_k) == sympy.expand(2 * (gm.rho - 3 * gm.q) * gm.q + 4 * gm.m**2)


@pytest.mark.parametrize(
    "loss",
    [
        phase_retrieval_loss(),
        gm.q**2 * gm.m + sympy.exp(gm.m) * gm.rho - gm.q * gm.rho,
    ],
    ids=["phase_retrieval", "general"],
)
def test_hierarchy_matches_explicit_coordinates(loss):
    """Compare the derivation with direct differentiation in dimension 3 with diagonal Σ."""
    dimension = 3
    weights = sympy.symbols(f"w1:{dimension + 1}", real=True)
    teacher = sympy.symbols(f"s1:{dimension + 1}", real=True)
    eigenvalues = sympy.symbols(f"lambda1:{dimension + 1}", positive=True)

    def level_statistic(first, second, power):
        return sum(eigenvalues[i] ** power * first[i] * second[i] for i in range(dimension))

    coordinates = {}
    for power in range(1, 4):
        coordinates[q[power]] = level_statistic(weights, weights, power)
        coordinates[m[power]] = level_statistic(weights, teacher, power)
        coordinates[rho[power]] = level_statistic(teacher, teacher, power)

    equations = derive_hierarchy(loss)
    loss_in_w = equations.loss.xreplace(coordinates)
    flow_in_w = [-sympy.diff(loss_in_w, weights[i]) for i in range(dimension)]

    alpha = equations.alpha.xreplace(coordinates)
    beta = equations.beta.xreplace(coordinates)
    for i in range(dimension):
        predicted = alpha * eigenvalues[i] * weights[i] + beta * eigenvalues[i] * teacher[i]
        assert sympy.expand(flow_in_w[i] - predicted) == 0, i

    dm_2, dq_2 = equations.level(2)
    dm_2_direct = sum(eigenvalues[i] ** 2 * teacher[i] * flow_in_w[i] for i in range(dimension))
    dq_2_direct = sum(2 * eigenvalues[i] ** 2 * weights[i] * flow_in_w[i] for i in range(dimension))
    assert sympy.expand(dm_2.xreplace(coordinates) - dm_2_direct) == 0
    assert sympy.expand(dq_2.xreplace(coordinates) - dq_2_direct) == 0


def test_inner_product_reads_statistics():
    left = 2 * SigmaPowerCombination.basis(STUDENT, 1) + SigmaPowerCombination.basis(TEACHER, k)
    right = SigmaPowerCombination.basis(TEACHER, 2)
    assert inner_product(left, right) == 2 * m[3] + rho[k + 2]
    assert inner_product(right, right) == rho[4]


def test_combination_rejects_unknown_base():
    with pytest.raises(ValueError, match="unknown base vector"):
        SigmaPowerCombination.basis("x", 1)


def test_derive_rejects_projection_symbols():
    with pytest.raises(ValueError, match="take the Gaussian expectation first"):
        derive_hierarchy(gm.u**2 - gm.v**2)


def test_derive_rejects_foreign_covariance_symbol():
    with pytest.raises(ValueError, match="other assumptions"):
        derive_hierarchy(sympy.Symbol("q") ** 2)


# ---------------------------------------------------------------- code generation


def test_generated_module_up_to_date(tmp_path):
    regenerated = write_phase_retrieval_module(tmp_path / "phase_retrieval.py").read_text(encoding="utf-8")
    committed = PHASE_RETRIEVAL_MODULE_PATH.read_text(encoding="utf-8")
    assert regenerated == committed, "run `python -m hierarchy.symbolic.codegen` to regenerate the committed module"


def test_generated_module_header():
    text = PHASE_RETRIEVAL_MODULE_PATH.read_text(encoding="utf-8")
    assert text.startswith("# This file is generated by hierarchy.symbolic.codegen.write_phase_retrieval_module.")
    assert "# Do not edit it by hand." in text
    assert "#   F          = -m[1]**2 + 3*q[1]**2/4 - q[1]*rho[1]/2 + 3*rho[1]**2/4" in text
    assert "@numba.njit(DRIVE_SIGNATURE, cache=True)\ndef drive(q1, m1, rho1):" in text
    assert "@numba.njit(cache=True)\ndef loss_kernel(q1, m1, rho1):" in text
    assert "\ndef loss(q1, m1, rho1):" in text
    assert "\ndef loss_rounding_bound(q1, m1, rho1, statistics_operations):" in text
    assert "    magnitude = m1**2 + (3/4)*q1**2 + (3/4)*rho1**2 + (1/2)*abs(q1)*abs(rho1)\n" in text


@pytest.mark.parametrize("hash_seed", ["0", "12345"])
def test_codegen_main_deterministic(tmp_path, hash_seed):
    output = tmp_path / "phase_retrieval.py"
    completed = subprocess.run(
        [sys.executable, "-m", "hierarchy.symbolic.codegen", "--output", str(output)],
        cwd=tmp_path,
        env=_subprocess_environment(PYTHONHASHSEED=hash_seed),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert output.read_text(encoding="utf-8") == PHASE_RETRIEVAL_MODULE_PATH.read_text(encoding="utf-8")


def test_loss_magnitude_and_operations():
    q1, m1, rho1 = sympy.symbols("q1 m1 rho1", real=True)
    loss = -(m1**2) + sympy.Rational(3, 4) * q1**2 - q1 * rho1 / 2 + sympy.Rational(3, 4) * rho1**2
    with_function = q1 - sympy.exp(-m1) * rho1**3

    expected = m1**2 + sympy.Rational(3, 4) * q1**2 + sympy.Abs(q1) * sympy.Abs(rho1) / 2 + sympy.Rational(3, 4) * rho1**2

    assert sympy.simplify(magnitude_expression(loss) - expected) == 0
    # Three additions, then (-1/2) * q1 * rho1: a constant and two products.
    assert rounded_operations(loss) == 6
    assert sympy.simplify(magnitude_expression(with_function) - (sympy.Abs(q1) + sympy.exp(-m1) * sympy.Abs(rho1) ** 3)) == 0
    # One subtraction, the product of rho1**3 and exp(-m1), and the power or exp (the negation is exact).
    assert rounded_operations(with_function) == 3


def test_codegen_rejects_unset_parameter():
    noise = sympy.Symbol("noise")
    equations = derive_hierarchy(phase_retrieval_loss() + noise * gm.q)
    with pytest.raises(ValueError, match="depends on noise"):
        generate_model_module(equations, description="test model", generator="test", regenerate_command="none")


def test_codegen_rejects_higher_level():
    equations = derive_phase_retrieval()
    broken = type(equations)(**{**equations.__dict__, "alpha": equations.alpha + q[2]})
    with pytest.raises(ValueError, match=r"depends on q\[2\]"):
        generate_model_module(broken, description="test model", generator="test", regenerate_command="none")


def test_codegen_non_polynomial_model_compiles(tmp_path):
    """Generate, import and call the kernels of a loss with exp and erf."""
    loss = gm.q**2 / 4 - gm.m * gm.rho + sympy.exp(-gm.q) + sympy.erf(gm.m)
    equations = derive_hierarchy(loss)
    source = generate_model_module(
        equations, description="a test model", generator="test_codegen_non_polynomial_model_compiles", regenerate_command="none"
    )
    assert "import math" in source
    assert "import scipy.special" in source
    path = tmp_path / "generated_test_model.py"
    path.write_text(source, encoding="utf-8")
    specification = importlib.util.spec_from_file_location("generated_test_model", path)
    module = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(module)

    point = {q[1]: 0.7, m[1]: -0.4, rho[1]: 1.3}
    expected = [
        float(getattr(equations, name).xreplace(point))
        for name in ("alpha", "beta", "dalpha_dq1", "dalpha_dm1", "dbeta_dq1", "dbeta_dm1")
    ]
    np.testing.assert_allclose(module.drive(0.7, -0.4, 1.3), expected, rtol=1e-14)
    expected_loss = float(equations.loss.xreplace(point))
    assert module.loss_kernel(0.7, -0.4, 1.3) == pytest.approx(expected_loss, rel=1e-14)
    np.testing.assert_allclose(
        module.loss(np.array([0.7, 0.7]), np.array([-0.4, -0.4]), 1.3), [expected_loss, expected_loss], rtol=1e-14
    )


# ---------------------------------------------------------------- derivation script


def test_derivation_script_passes():
    script = REPOSITORY_ROOT / "derivations" / "phase_retrieval_hierarchy.py"
    completed = subprocess.run(
        [sys.executable, str(script)],
        cwd=REPOSITORY_ROOT,
        env=_subprocess_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "All 5 checks passed." in completed.stdout
