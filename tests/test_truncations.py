"""Truncations of the hierarchy against the exact flow, SciPy, closed forms and finite differences."""

import time

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from hierarchy.integrators import IntegrationStatus, solve
from hierarchy.model import PhaseRetrieval, SingleIndexModel
from hierarchy.pipeline import SolverOptions, TruncationOptions, integrate_problem
from hierarchy.spectrum import PowerLawSpec
from hierarchy.truncation import (
    build_exact_flow,
    build_moment_hierarchy,
    build_spectral_modes,
    build_spectral_rule,
    log_gauss_rule,
)

MODEL = PhaseRetrieval()
# Phase retrieval with a ridge penalty: the drive is the same, the Jacobian diagonal gains -mu.
RIDGE_MODEL = SingleIndexModel("z**2", "z**2", ridge=0.3)


def _dense_jacobian(system, y):
    n = system.size
    band = np.zeros((n, system.kl + system.ku + 1))
    U = np.zeros((n, system.rank))
    V = np.zeros((n, system.rank))
    system.jac(0.0, y, system.params, system.drive, band, U, V)
    dense = U @ V.T
    for i in range(n):
        for j in range(max(0, i - system.kl), min(n, i + system.ku + 1)):
            dense[i, j] += band[i, j - i + system.kl]
    return dense


def _finite_difference_jacobian(system, y, step=1e-6):
    n = system.size
    jacobian = np.zeros((n, n))
    plus = np.empty(n)
    minus = np.empty(n)
    for j in range(n):
        shifted = y.copy()
        shifted[j] += step
        system.rhs(0.0, shifted, system.params, system.drive, plus)
        shifted[j] -= 2 * step
        system.rhs(0.0, shifted, system.params, system.drive, minus)
        jacobian[:, j] = (plus - minus) / (2 * step)
    return jacobian


def _systems_for_jacobian_check():
    problem = PowerLawSpec(d=7, a=1.2, b=0.5, sigma0=0.7, seed=3).build()
    rule = build_spectral_rule(problem, bins_per_decade=2, rule_order=2, exact_top=2)
    return [
        build_exact_flow(problem, MODEL),
        build_spectral_modes(problem, MODEL, rule),
        build_moment_hierarchy(problem, MODEL, 1, "zero"),
        build_moment_hierarchy(problem, MODEL, 1, "copy"),
        build_moment_hierarchy(problem, MODEL, 4, "zero"),
        build_moment_hierarchy(problem, MODEL, 4, "copy"),
        build_moment_hierarchy(problem, MODEL, 2, "ratio"),
        build_moment_hierarchy(problem, MODEL, 4, "ratio"),
        build_moment_hierarchy(problem, MODEL, 1, "quadrature"),
        build_moment_hierarchy(problem, MODEL, 5, "quadrature"),
        build_exact_flow(problem, RIDGE_MODEL),
        build_spectral_modes(problem, RIDGE_MODEL, rule),
        build_moment_hierarchy(problem, RIDGE_MODEL, 1, "copy"),
        build_moment_hierarchy(problem, RIDGE_MODEL, 4, "ratio"),
    ]


@pytest.mark.parametrize("system", _systems_for_jacobian_check(), ids=lambda system: system.name)
def test_structured_jacobian_matches_finite_differences(system):
    rng = np.random.default_rng(11)
    y = system.y0 + 0.3 * rng.standard_normal(system.size)
    expected = _finite_difference_jacobian(system, y)
    assert np.allclose(_dense_jacobian(system, y), expected, rtol=1e-6, atol=1e-8)


def test_exact_flow_matches_scipy_radau():
    problem = PowerLawSpec(d=50, a=1.5, b=0.0, sigma0=0.1, seed=1).build()
    t_out = np.geomspace(0.1, 1e4, 60)
    solution = solve(build_exact_flow(problem, MODEL), t_out, rtol=1e-11, atol=1e-14)
    assert solution.success

    lam, wstar, rho1 = problem.lam, problem.wstar, problem.rho1

    def gradient_flow(t, w):
        q1 = np.sum(lam * w * w)
        m1 = np.sum(lam * w * wstar)
        return lam * ((rho1 - 3 * q1) * w + 2 * m1 * wstar)

    reference = solve_ivp(gradient_flow, (0.0, t_out[-1]), problem.w0, method="Radau", t_eval=t_out, rtol=1e-12, atol=1e-15)
    m1_reference = (lam * wstar) @ reference.y
    q1_reference = lam @ reference.y**2
    assert np.max(np.abs(solution.observable("m1") / m1_reference - 1)) <= 1e-7
    assert np.max(np.abs(solution.observable("q1") / q1_reference - 1)) <= 1e-7


def test_spectral_modes_exact_on_all_eigenvalues():
    """With every eigenvalue a node, the K-mode system is the exact flow rewritten."""
    problem = PowerLawSpec(d=40, a=1.0, b=0.3, sigma0=0.2, seed=4).build()
    rule = build_spectral_rule(problem, exact_top=problem.d)
    assert rule.size == problem.d
    t_out = np.geomspace(0.1, 1e4, 40)
    modes = solve(build_spectral_modes(problem, MODEL, rule), t_out, rtol=1e-11, atol=1e-14)
    exact = solve(build_exact_flow(problem, MODEL), t_out, rtol=1e-11, atol=1e-14)
    for name in ("m1", "q1"):
        assert np.max(np.abs(modes.observable(name) / exact.observable(name) - 1)) < 1e-8


def test_rule_reproduces_initial_statistics():
    problem = PowerLawSpec(d=3000, a=1.5, b=0.0, sigma0=0.1, seed=2).build()
    rule = build_spectral_rule(problem, bins_per_decade=4, rule_order=5, exact_top=8)
    assert rule.size < problem.d / 5
    assert rule.weights[1].sum() == pytest.approx(problem.m(1), rel=1e-12)
    assert rule.weights[0].sum() == pytest.approx(problem.q(1), rel=1e-12)
    assert rule.weights[2].sum() == pytest.approx(problem.rho(1), rel=1e-12)


def test_rule_exact_for_polynomials_in_log_lam():
    rng = np.random.default_rng(5)
    lam = np.sort(rng.uniform(1e-4, 1.0, 5000))[::-1]
    measure = rng.uniform(0.0, 1.0, lam.size)
    rule = log_gauss_rule(lam, measure[None, :], bins_per_decade=3, rule_order=4)
    for degree in range(4):
        exact = np.sum(measure * np.log(lam) ** degree)
        approximate = np.sum(rule.weights[0] * np.log(rule.nodes) ** degree)
        assert approximate == pytest.approx(exact, rel=1e-10)


def test_spectral_modes_converge_to_exact_flow():
    """d = 2000, a = 1.5: 8 bins per decade and 6-point rules give loss errors <= 1e-4, shrinking when refined."""
    problem = PowerLawSpec(d=2000, a=1.5, b=0.0, sigma0=0.1, seed=0).build()
    solver = SolverOptions(t_first=0.1, t_end=1e7, n_out=200, rtol=1e-11, atol=1e-16)
    exact = integrate_problem(problem, MODEL, TruncationOptions(kind="exact"), solver)
    assert exact.success
    relevant = exact.loss > 1e-8

    errors = []
    for bins_per_decade, rule_order in ((4, 4), (8, 6), (12, 8)):
        truncation = TruncationOptions(kind="spectral_modes", bins_per_decade=bins_per_decade, rule_order=rule_order)
        modes = integrate_problem(problem, MODEL, truncation, solver)
        assert modes.success
        assert modes.state_size < problem.d
        errors.append(np.max(np.abs(modes.loss[relevant] / exact.loss[relevant] - 1)))

    assert errors[1] <= 1e-4
    assert errors[1] < errors[0]
    assert errors[2] < errors[1]


def test_copy_closure_exact_for_isotropic_data():
    """Sigma = I has one distinct eigenvalue, so the copy closure at K = 1 is the exact 2-D system."""
    problem = PowerLawSpec(d=100, a=0.0, b=0.0, sigma0=0.5, seed=6).build()
    t_out = np.geomspace(0.01, 100.0, 50)
    moments = solve(build_moment_hierarchy(problem, MODEL, 1, "copy"), t_out, rtol=1e-11, atol=1e-14)
    exact = solve(build_exact_flow(problem, MODEL), t_out, rtol=1e-11, atol=1e-14)
    for name in ("m1", "q1"):
        assert np.max(np.abs(moments.observable(name) / exact.observable(name) - 1)) < 1e-8
    assert moments.observable("m1")[-1] == pytest.approx(problem.rho1, rel=1e-8)


def test_zero_closure_diverges_quickly():
    """At K = 1 the zero closure gives m_1 = m_1(0) exp(2 rho_2 t) exactly, which the run must report as divergence."""
    problem = PowerLawSpec(d=500, a=1.5, b=0.0, sigma0=0.1, seed=0).build()
    t_out = np.geomspace(0.1, 1e7, 100)
    started = time.perf_counter()
    solution = solve(build_moment_hierarchy(problem, MODEL, 1, "zero"), t_out, rtol=1e-10, atol=1e-14)
    elapsed = time.perf_counter() - started

    assert solution.status is IntegrationStatus.DIVERGED
    assert elapsed < 30.0
    assert "diverged at t = " in solution.message
    closed_form = problem.m(1) * np.exp(2 * problem.rho(2) * solution.t)
    assert np.max(np.abs(solution.observable("m1") / closed_form - 1)) < 1e-7
    # Divergence is declared once |m_1| passes the default bound 1e100.
    expected_time = np.log(1e100 / problem.m(1)) / (2 * problem.rho(2))
    assert solution.t_reached == pytest.approx(expected_time, rel=1e-3)


@pytest.mark.parametrize("order", [3, 5])
def test_zero_closure_fails_without_hanging(order):
    problem = PowerLawSpec(d=500, a=1.5, b=0.0, sigma0=0.1, seed=0).build()
    started = time.perf_counter()
    solution = solve(
        build_moment_hierarchy(problem, MODEL, order, "zero"), np.geomspace(0.1, 1e7, 50), rtol=1e-8, atol=1e-12,
        max_steps=200_000,
    )
    assert solution.status is not IntegrationStatus.SUCCESS
    assert time.perf_counter() - started < 60.0


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"d": 0}, "d"),
        ({"d": 2.5}, "d"),
        ({"a": -1.0}, "a"),
        ({"b": 20.0}, "b"),
        ({"sigma0": 0.0}, "sigma0"),
        ({"seed": -1}, "seed"),
    ],
)
def test_problem_validation_names_field(kwargs, field):
    parameters = {"d": 10, "a": 1.0}
    parameters.update(kwargs)
    with pytest.raises(ValueError, match=rf"^{field} = "):
        PowerLawSpec(**parameters)


def test_initial_point_has_positive_overlap_and_unit_rho():
    for seed in range(5):
        problem = PowerLawSpec(d=300, a=1.5, b=0.5, sigma0=0.1, seed=seed).build()
        assert problem.m(1) > 0
        assert problem.rho(1) == pytest.approx(1.0, rel=1e-12)


def test_moment_hierarchy_rejects_unknown_closure():
    problem = PowerLawSpec(d=10, a=1.0).build()
    with pytest.raises(ValueError, match="closure"):
        build_moment_hierarchy(problem, MODEL, 2, "pade")


def test_ratio_closure_needs_two_levels():
    problem = PowerLawSpec(d=10, a=1.0).build()
    with pytest.raises(ValueError, match="K >= 2"):
        build_moment_hierarchy(problem, MODEL, 1, "ratio")


def _closure_run(closure, order, t_end=1e5):
    problem = PowerLawSpec(d=500, a=1.5, b=0.0, sigma0=0.1, seed=0).build()
    t_out = np.geomspace(0.1, t_end, 60)
    moments = solve(build_moment_hierarchy(problem, MODEL, order, closure), t_out, rtol=1e-8, atol=1e-12, max_steps=200_000)
    exact = solve(build_exact_flow(problem, MODEL), t_out, rtol=1e-10, atol=1e-14)
    return moments, exact


def test_copy_and_ratio_closures_stall_below_teacher():
    """Low-order copy and ratio closures settle at a spurious overlap while the exact flow reaches m_1 = rho_1."""
    copy_run, exact = _closure_run("copy", 1)
    ratio_run, _ = _closure_run("ratio", 2)
    assert exact.observable("m1")[-1] == pytest.approx(1.0, abs=1e-6)
    assert copy_run.success
    assert ratio_run.success
    assert 0.5 < copy_run.observable("m1")[-1] < 0.62
    assert 0.55 < ratio_run.observable("m1")[-1] < 0.67


def test_quadrature_closure_converges_with_order():
    errors = []
    for order in (2, 4, 6, 8):
        moments, exact = _closure_run("quadrature", order)
        assert moments.success
        assert moments.observable("m1")[-1] == pytest.approx(1.0, abs=1e-3)
        errors.append(np.max(np.abs(moments.observable("m1") / exact.observable("m1") - 1)))
    assert all(later < earlier for earlier, later in zip(errors, errors[1:]))
    assert errors[-1] < 0.03


def test_quadrature_closure_nodes_are_gauss_nodes():
    """The Stieltjes nodes integrate lam^j exactly for j < 2K against the discrete measure."""
    from hierarchy.truncation.moment_hierarchy import gauss_nodes_of_discrete_measure

    rng = np.random.default_rng(8)
    atoms = np.sort(rng.uniform(0.01, 1.0, 300))[::-1]
    weights = rng.uniform(0.0, 1.0, 300)
    nodes = gauss_nodes_of_discrete_measure(atoms, weights, 5)
    vandermonde = np.vander(nodes, 5, increasing=True).T
    node_weights = np.linalg.solve(vandermonde, [np.sum(weights * atoms**j) for j in range(5)])
    for power in range(10):
        assert np.sum(node_weights * nodes**power) == pytest.approx(np.sum(weights * atoms**power), rel=1e-9)


def test_spectral_modes_merge_repeated_eigenvalues():
    """a = 0: one distinct eigenvalue, so one node reproduces the exact flow."""
    problem = PowerLawSpec(d=100, a=0.0, b=0.0, sigma0=0.1, seed=0).build()
    rule = build_spectral_rule(problem)
    assert rule.size == 1
    assert np.all(np.isfinite(rule.weights))
    t_out = np.geomspace(0.1, 100.0, 30)
    modes = solve(build_spectral_modes(problem, MODEL, rule), t_out, rtol=1e-11, atol=1e-14)
    exact = solve(build_exact_flow(problem, MODEL), t_out, rtol=1e-11, atol=1e-14)
    assert np.max(np.abs(modes.observable("m1") / exact.observable("m1") - 1)) < 1e-8


def test_spectral_modes_converge_geometrically_in_nodes_per_decade():
    """At a fixed rule order the loss error falls like exp(-c n) in the number n of bins per decade."""
    problem = PowerLawSpec(d=2000, a=1.5, b=0.0, sigma0=0.1, seed=0).build()
    solver = SolverOptions(t_first=0.1, t_end=1e5, n_out=100, rtol=1e-12, atol=1e-16)
    exact = integrate_problem(problem, MODEL, TruncationOptions(kind="exact"), solver)
    relevant = exact.loss > 1e-8 * exact.loss[0]
    bins = np.array([1, 2, 3, 4])
    errors = []
    for bins_per_decade in bins:
        truncation = TruncationOptions(kind="spectral_modes", bins_per_decade=int(bins_per_decade), rule_order=4)
        modes = integrate_problem(problem, MODEL, truncation, solver)
        errors.append(np.max(np.abs(modes.loss[relevant] / exact.loss[relevant] - 1)))
    slope, intercept = np.polyfit(bins, np.log(errors), 1)
    fitted = slope * bins + intercept
    residual = np.log(errors) - fitted
    # A geometric rate: a straight line in log(error) against bins per decade,
    # losing at least a factor e^1.5 (about 4.5) per added bin per decade.
    assert slope < -1.5
    assert np.max(np.abs(residual)) < 1.0
