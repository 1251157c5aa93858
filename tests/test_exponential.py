"""Exponential collocation for systems in modal form: phi functions, exact cases, order, phase retrieval, failures."""

import math

import mpmath
import numpy as np
import pytest

from hierarchy.integrators import METHODS, Event, IntegrationStatus, solve
from hierarchy.integrators.exponential_basis import phi_values
from hierarchy.model import PhaseRetrieval, SingleIndexModel
from hierarchy.spectrum import PowerLawSpec
from hierarchy.truncation import build_exact_flow, build_moment_hierarchy, build_spectral_modes, build_spectral_rule

from stiff_problems import logistic, logistic_exact, modal_logistic


def _phi_reference(k, z):
    """Return ``phi_k(z)`` from its integral form at 40 digits."""
    with mpmath.workdps(40):
        if k == 0:
            return float(mpmath.exp(z))
        integrand = lambda x: mpmath.exp((1 - x) * z) * x ** (k - 1) / mpmath.factorial(k - 1)  # noqa: E731
        return float(mpmath.quad(integrand, [0, 1]))


@pytest.mark.parametrize("z", [0.0, 1e-9, -0.3, 0.7, -0.999, 1.0, -1.001, 3.0, -20.0, -1e6])
def test_phi_values_match_integral_form(z):
    values = phi_values(z)
    for k in range(5):
        expected = _phi_reference(k, z)
        assert values[k] == pytest.approx(expected, rel=1e-13, abs=1e-300), f"phi_{k}({z})"


def test_method_registered_for_modal_systems_only():
    assert METHODS["exponential"].name == "exponential"
    with pytest.raises(ValueError, match="needs a system in modal form"):
        solve(logistic(), [1.0], method="exponential")


def test_moment_hierarchy_rejected():
    problem = PowerLawSpec(d=100, a=1.5, b=0, sigma0=0.1, seed=0).build()
    system = build_moment_hierarchy(problem, PhaseRetrieval(), 4)
    with pytest.raises(ValueError, match="modal form"):
        solve(system, [1.0], method="exponential")


def test_constant_drive_is_exact():
    """Linear regression has constant alpha and beta, so every step is exact to rounding, however long."""
    problem = PowerLawSpec(d=60, a=1.2, b=0.0, sigma0=0.3, seed=1).build()
    model = SingleIndexModel("z", "z")
    t_out = np.geomspace(0.1, 1e4, 40)
    # dw_i/dt = lam_i (w*_i - w_i) / 2, solved per coordinate.
    decay = np.exp(-np.outer(t_out, problem.lam / 2))
    w = problem.wstar + (problem.w0 - problem.wstar) * decay
    m1_expected, q1_expected = w @ (problem.lam * problem.wstar), (w**2) @ problem.lam

    rule = build_spectral_rule(problem, exact_top=problem.d)
    for system in (build_exact_flow(problem, model), build_spectral_modes(problem, model, rule)):
        solution = solve(system, t_out, method="exponential", rtol=1e-6, atol=1e-12)
        assert solution.success, system.name
        assert np.max(np.abs(solution.observable("m1") / m1_expected - 1)) < 1e-12, system.name
        assert np.max(np.abs(solution.observable("q1") / q1_expected - 1)) < 1e-12, system.name
        assert solution.stats["steps"] < 30, system.name


def test_ridge_rejected():
    problem = PowerLawSpec(d=60, a=1.2, b=0.0, sigma0=0.3, seed=1).build()
    system = build_exact_flow(problem, SingleIndexModel("z", "z", ridge=0.05))
    with pytest.raises(ValueError, match="supports ridge = 0 only.*ridge = 0.05"):
        solve(system, [1.0], method="exponential")


def _modal_logistic_error(rtol):
    t_out = np.geomspace(0.01, 20.0, 30)
    solution = solve(modal_logistic(0.1, 1.0), t_out, method="exponential", rtol=rtol, atol=1e-14)
    assert solution.success
    error = np.max(np.abs(solution.observable("q1") / logistic_exact(t_out, 0.01, 2.0) - 1.0))
    return error, solution.stats["accepted"]


def test_convergence_order_on_exact_solution():
    """On q1' = 2 q1 (1 - q1) the error falls with the accepted steps N as N^-p, p about 5."""
    coarse_error, coarse_steps = _modal_logistic_error(1e-6)
    fine_error, fine_steps = _modal_logistic_error(1e-10)
    assert fine_error < 1e-9
    order = math.log(coarse_error / fine_error) / math.log(fine_steps / coarse_steps)
    assert 4.5 < order < 7.0


@pytest.fixture(scope="module")
def phase_retrieval_modes():
    problem = PowerLawSpec(d=2000, a=1.5, b=0, sigma0=0.1, seed=0).build()
    rule = build_spectral_rule(problem, 4, 4, 4)
    system = build_spectral_modes(problem, PhaseRetrieval(), rule)
    t_out = np.geomspace(0.1, 1e6, 29)
    escape = (Event("escape", "q1", 0.5 * problem.rho1),)
    reference = solve(system, t_out, method="radau5", rtol=1e-12, atol=1e-16, events=escape)
    assert reference.success
    return system, t_out, escape, reference


@pytest.mark.parametrize("rtol", [1e-6, 1e-8, 1e-10])
def test_phase_retrieval_modes_against_radau5(phase_retrieval_modes, rtol):
    """Through the escape (alpha changes sign) and six decades of relaxation."""
    system, t_out, escape, reference = phase_retrieval_modes
    solution = solve(system, t_out, method="exponential", rtol=rtol, atol=1e-14, events=escape)
    assert solution.success
    error = np.max(np.abs(solution.observables / reference.observables - 1.0))
    assert error < 50 * rtol
    assert solution.event_times["escape"] == pytest.approx(reference.event_times["escape"], rel=max(100 * rtol, 1e-9))


def test_phase_retrieval_error_falls_with_tolerance(phase_retrieval_modes):
    system, t_out, _, reference = phase_retrieval_modes
    errors = []
    for rtol in (1e-5, 1e-7, 1e-9):
        solution = solve(system, t_out, method="exponential", rtol=rtol, atol=1e-14)
        errors.append(np.max(np.abs(solution.observables / reference.observables - 1.0)))
    assert errors[0] > 10 * errors[1] > 100 * errors[2]


def test_exact_flow_against_radau5():
    problem = PowerLawSpec(d=500, a=1.5, b=0, sigma0=0.1, seed=2).build()
    system = build_exact_flow(problem, PhaseRetrieval())
    t_out = np.geomspace(0.1, 1e5, 25)
    reference = solve(system, t_out, method="radau5", rtol=1e-12, atol=1e-16)
    solution = solve(system, t_out, method="exponential", rtol=1e-8, atol=1e-14, save_state=True)
    assert solution.success
    q1, q1_reference = solution.observable("q1"), reference.observable("q1")
    # The largest error, 1.3e-6 when measured, is in the escape.
    assert np.max(np.abs(q1 / q1_reference - 1.0)) < 3e-6
    # m1 changes sign on the way to -rho1 (this start falls to the teacher's mirror image), so its error is
    # measured against its largest size.
    m1, m1_reference = solution.observable("m1"), reference.observable("m1")
    assert np.max(np.abs(m1 - m1_reference)) < 1e-7 * np.max(np.abs(m1_reference))
    assert solution.states.shape == (t_out.size, problem.d)


def test_output_grid_does_not_change_steps(phase_retrieval_modes):
    """Outputs come from the exact propagation inside steps, so a dense grid adds no steps and no error."""
    system, t_out, _, reference = phase_retrieval_modes
    sparse = solve(system, [t_out[-1]], method="exponential", rtol=1e-8, atol=1e-14)
    dense = solve(system, np.geomspace(1e-3, t_out[-1], 2000), method="exponential", rtol=1e-8, atol=1e-14)
    assert dense.stats["steps"] == sparse.stats["steps"]
    assert dense.observables[-1] == pytest.approx(sparse.observables[-1], rel=1e-14)
    on_grid = solve(system, t_out, method="exponential", rtol=1e-8, atol=1e-14)
    assert np.max(np.abs(on_grid.observables / reference.observables - 1.0)) < 1e-6


def test_step_budget_keeps_outputs(phase_retrieval_modes):
    system, t_out, _, _ = phase_retrieval_modes
    solution = solve(system, t_out, method="exponential", rtol=1e-8, atol=1e-14, max_steps=30)
    assert solution.status is IntegrationStatus.STEP_BUDGET
    assert 0 < solution.t.size < t_out.size
    assert np.all(np.isfinite(solution.observables))
    assert "step budget of 30 steps" in solution.message


@pytest.mark.parametrize(
    "document, message",
    [
        ({"truncation": {"kind": "moments"}}, 'invalid with truncation.kind = "moments"'),
        ({"model": {"student": "z", "teacher": "z", "ridge": 0.1}}, "invalid with model.ridge = 0.1"),
    ],
)
def test_config_rejects_unsupported_systems(document, message):
    from hierarchy.config import ConfigError, parse_config

    document = {"problem": {"d": 100, "a": 1.5}, "solver": {"method": "exponential"}, **document}
    with pytest.raises(ConfigError, match=message):
        parse_config(document, "run.toml")


def test_compare_config_needs_no_moment_orders():
    from hierarchy.config import ConfigError, parse_compare_config

    document = {"problem": {"d": 100, "a": 1.5}, "solver": {"method": "exponential"}}
    with pytest.raises(ConfigError, match="compare.moment_orders"):
        parse_compare_config(document, "compare.toml")
    document["compare"] = {"moment_orders": []}
    assert parse_compare_config(document, "compare.toml").solver.method == "exponential"


@pytest.mark.parametrize(
    "model, teacher_scale",
    [(SingleIndexModel("erf(z)", "erf(z)"), 0.0), (PhaseRetrieval(), 3.0), (SingleIndexModel("tanh(z)", "tanh(z)"), 2.0)],
)
def test_alpha_settling_lower_keeps_long_steps(model, teacher_scale):
    """|alpha| ends well below its start here; the steps used to stop growing (about 20000 of them)."""
    problem = PowerLawSpec(d=100, a=1.5, sigma0=0.1, seed=0, init_teacher_scale=teacher_scale).build()
    system = build_exact_flow(problem, model)
    t_out = np.geomspace(1e-2, 1e7, 30)
    solution = solve(system, t_out, method="exponential", rtol=1e-8, atol=1e-14)
    reference = solve(system, t_out, method="radau5", rtol=1e-12, atol=1e-16)
    assert solution.success
    assert solution.stats["steps"] < 400
    scale = np.maximum(np.abs(reference.observables), 1e-3)
    assert np.max(np.abs(solution.observables - reference.observables) / scale) < 1e-6
