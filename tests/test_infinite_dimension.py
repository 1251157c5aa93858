"""The d = inf problem: power-law quadrature, zeta moments and convergence of the spectral modes."""

import math

import numpy as np
import pytest
from scipy.special import zeta

from hierarchy.model import PhaseRetrieval
from hierarchy.pipeline import SolverOptions, TruncationOptions, integrate_problem
from hierarchy.spectrum import PowerLawSpec
from hierarchy.truncation import build_exact_flow, build_moment_hierarchy
from hierarchy.truncation.power_law_rule import DIRECT_ATOMS_PER_BIN, _euler_maclaurin_bin, _lagrange_basis, _weights_at, power_law_rule

MODEL = PhaseRetrieval()


def _infinite(**overrides):
    parameters = dict(d=math.inf, a=1.5, b=0.0, sigma0=0.1, init_teacher_scale=1e-3)
    parameters.update(overrides)
    return PowerLawSpec(**parameters).build()


def test_zeta_moments_of_infinite_problem():
    problem = _infinite(b=0.5, init_isotropic_exponent=0.2)
    assert problem.rho(1) == pytest.approx(1.0, rel=1e-14)
    assert problem.rho(2) == pytest.approx(zeta(3.5) / zeta(2.0), rel=1e-14)
    assert problem.m(3) == pytest.approx(1e-3 * zeta(5.0) / zeta(2.0), rel=1e-14)
    isotropic_share = problem.q(1) - 1e-6 * problem.rho(1)
    assert isotropic_share == pytest.approx(0.01, rel=1e-12)


def test_infinite_finite_limit_of_moments():
    """A large finite problem with the same deterministic start approaches the zeta values."""
    infinite = _infinite(b=1.0)
    finite = PowerLawSpec(d=200_000, a=1.5, b=1.0, sigma0=1e-9, seed=0, init_teacher_scale=1e-3).build()
    for k in (1, 2, 3):
        assert finite.rho(k) == pytest.approx(infinite.rho(k), rel=1e-4)
        assert finite.m(k) == pytest.approx(infinite.m(k), rel=1e-4)


@pytest.mark.parametrize("bins_per_decade, rule_order", [(3, 4), (6, 5)])
def test_power_law_rule_moments(bins_per_decade, rule_order):
    problem = _infinite()
    rule = power_law_rule(problem.a, problem.measure_terms(), bins_per_decade, rule_order, 8, 1e10)
    teacher = rule.weights[2]
    assert teacher.sum() == pytest.approx(problem.rho(1), rel=1e-12)
    assert rule.weights[1].sum() == pytest.approx(problem.m(1), rel=1e-12)
    assert rule.weights[0].sum() == pytest.approx(problem.q(1), rel=1e-12)
    # rho_2 = sum lam_i (lam_i w*_i^2): lam is smooth in log lam, so the rule is accurate.
    assert np.sum(teacher * rule.nodes) == pytest.approx(problem.rho(2), rel=1e-7)


def test_euler_maclaurin_bin_matches_direct_sum():
    a = 1.5
    terms = [[(0.7, 1.5)], [(0.2, 2.1), (0.1, 1.7)]]
    first, last = 2 * DIRECT_ATOMS_PER_BIN, 3 * DIRECT_ATOMS_PER_BIN
    nodes = np.linspace(-a * math.log(last), -a * math.log(first), 5)
    index = np.arange(first, last + 1, dtype=np.float64)
    direct = _weights_at(index, terms) @ _lagrange_basis(-a * np.log(index), nodes)
    summed = _euler_maclaurin_bin(first, last, a, terms, nodes)
    assert np.allclose(summed, direct, rtol=1e-11, atol=0.0)


def test_infinite_problem_validation():
    with pytest.raises(ValueError, match="a \\+ b"):
        PowerLawSpec(d=math.inf, a=0.8, b=0.1, init_teacher_scale=1e-3)
    with pytest.raises(ValueError, match="init_teacher_scale"):
        PowerLawSpec(d=math.inf, a=1.5)
    with pytest.raises(ValueError, match="init_isotropic_exponent"):
        PowerLawSpec(d=math.inf, a=1.5, init_teacher_scale=1e-3, init_isotropic_exponent=-1.0)
    with pytest.raises(ValueError, match="^d = "):
        PowerLawSpec(d=-math.inf, a=1.5)


def test_exact_flow_rejects_infinite_dimension():
    with pytest.raises(ValueError, match="finite dimension"):
        build_exact_flow(_infinite(), MODEL)


def test_moment_hierarchy_runs_at_infinite_dimension():
    system = build_moment_hierarchy(_infinite(), MODEL, 4, "quadrature")
    assert system.size == 8
    assert system.y0[0] == pytest.approx(1e-3)


def test_spectral_modes_converge_at_infinite_dimension():
    """a = 1.5, b = 0 to t = 1e6: a few hundred modes agree with a much finer rule to 1e-6 on the loss."""
    problem = _infinite()
    solver = SolverOptions(t_first=1e-2, t_end=1e6, n_out=120, rtol=1e-12, atol=1e-16)
    reference = integrate_problem(problem, MODEL, TruncationOptions(bins_per_decade=12, rule_order=8, exact_top=16), solver)
    errors = []
    for bins_per_decade, rule_order in ((3, 4), (4, 5), (6, 6)):
        truncation = TruncationOptions(bins_per_decade=bins_per_decade, rule_order=rule_order, exact_top=8)
        modes = integrate_problem(problem, MODEL, truncation, solver)
        assert modes.success
        errors.append(np.max(np.abs(modes.loss / reference.loss - 1)))
    assert modes.state_size // 2 <= 400
    assert errors[1] < errors[0]
    assert errors[2] < errors[1]
    assert errors[1] <= 1e-6
    # The escape and convergence happen: the loss falls by orders of magnitude.
    assert reference.loss[-1] < 1e-2 * reference.loss[0]
