"""Exponential collocation for systems in modal form: phi functions, exact cases, order, phase retrieval, failures."""

import dataclasses
import math

import mpmath
import numpy as np
import pytest

from hierarchy.integrators import METHODS, Event, IntegrationStatus, ModalForm, solve
from hierarchy.integrators import exponential_basis as basis
from hierarchy.integrators import exponential_internal_time as internal
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


@pytest.mark.parametrize(
    "z", [0.0, 1e-9, -9.9e-4, 1e-3, -9.9e-3, 0.01, -0.099, 0.1, -0.3, 0.7, -0.999, 1.0, -1.001, 3.0, -20.0, -1e6]
)
def test_phi_values_match_integral_form(z):
    values = phi_values(z)
    for k in range(5):
        expected = _phi_reference(k, z)
        assert values[k] == pytest.approx(expected, rel=1e-13, abs=1e-300), f"phi_{k}({z})"


def test_exp_into_matches_math_exp():
    """The vectorised exponential agrees with the C library's to a few units in the last place over its range."""
    z = np.concatenate((np.linspace(-707.9, 707.9, 20001), -np.logspace(-12, 2, 999), np.logspace(-12, 2, 999)))
    values = np.empty_like(z)
    basis.exp_into(z, values, np.empty_like(z))
    expected = np.array([math.exp(x) for x in z])
    assert np.max(np.abs(values / expected - 1.0)) < 1e-15
    edges = np.array([-800.0, 800.0, np.nan, 0.0])
    basis.exp_into(edges, values[:4], np.empty(4))
    assert values[0] == 0.0
    assert values[1] == math.inf
    assert math.isnan(values[2])
    assert values[3] == 1.0


def test_phi_into_arrays_match_single_values():
    """The vectorised loop over many z gives what the per-value path gives, in every branch and series band."""
    z = np.concatenate((-np.logspace(-9, 3, 101), np.logspace(-9, 1.5, 101), [0.0]))
    values = np.empty((5, z.size))
    basis.phi_into(z, values, np.empty(z.size))
    for index, x in enumerate(z):
        assert values[:, index] == pytest.approx(phi_values(x), rel=1e-15, abs=1e-300), f"z = {x}"


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


def _overlap_case(builder):
    """A phase-retrieval system of either modal kind, a state away from y0 and its per-rate arrays."""
    problem = PowerLawSpec(d=300, a=1.5, b=0, sigma0=0.1, seed=3).build()
    if builder == "modes":
        system = build_spectral_modes(problem, PhaseRetrieval(), build_spectral_rule(problem, 4, 4, 4))
    else:
        system = build_exact_flow(problem, PhaseRetrieval())
    modal = system.modal
    rng = np.random.default_rng(5)
    state = system.y0 + 0.3 * rng.standard_normal(system.size)
    arrays = (modal.m1_weights, modal.q1_rows.astype(np.int64), modal.q1_cols.astype(np.int64), modal.q1_values,
              modal.rate_index.astype(np.int64), modal.forcing)
    rate_sums = np.empty((basis.RATE_SUM_ROWS, modal.rates.size))
    basis.fill_fixed_sums(*arrays, rate_sums)
    basis.fill_start_sums(state, *arrays, rate_sums)
    return system, state, arrays, rate_sums


def _observed(system, state):
    out = np.empty(2)
    system.observe(state, system.params, system.drive, out)
    return out


@pytest.mark.parametrize("builder", ["modes", "exact flow"])
def test_node_forms_give_the_observed_overlaps(builder):
    """m1 and q1 at the nodes, as polynomials in the cubic of g, equal observe() of the node states."""
    system, state, arrays, rate_sums = _overlap_case(builder)
    modal = system.modal
    tables = np.empty((3, internal.TABLE_ROWS, modal.rates.size))
    internal.fill_tables(-40.0, modal.rates, tables)
    constants, linear, quadratic = np.empty((3, 2)), np.empty((3, 2, 4)), np.empty((3, 4, 4))
    internal.fill_node_forms(tables, rate_sums, constants, linear, quadratic)
    g = np.array([0.7, -0.4, 0.25, 0.1])
    node = np.empty(system.size)
    for k in range(3):
        internal.node_state(k + 1, g, tables, arrays[4], modal.forcing, state, node)
        m1 = constants[k, 0] + linear[k, 0] @ g
        q1 = constants[k, 1] + linear[k, 1] @ g + g @ quadratic[k] @ g
        assert np.array([m1, q1]) == pytest.approx(_observed(system, node), rel=1e-12)


@pytest.mark.parametrize("builder", ["modes", "exact flow"])
def test_rate_sums_follow_the_state(builder):
    """Advancing the per-rate sums in O(rates) matches summing them from the new state."""
    system, state, arrays, rate_sums = _overlap_case(builder)
    modal = system.modal
    rng = np.random.default_rng(6)
    decay = np.exp(-modal.rates * rng.uniform(0.0, 3.0))
    integral = rng.standard_normal(modal.rates.size)
    index = arrays[4]
    new_state = decay[index] * state + modal.forcing * integral[index]
    assert np.array(basis.overlaps_from_rates(decay, integral, rate_sums)) == pytest.approx(
        _observed(system, new_state), rel=1e-12
    )
    basis.advance_start_sums(decay, integral, rate_sums)
    expected = np.empty_like(rate_sums)
    basis.fill_fixed_sums(*arrays, expected)
    basis.fill_start_sums(new_state, *arrays, expected)
    assert rate_sums == pytest.approx(expected, rel=1e-12, abs=1e-14 * np.max(np.abs(expected)))


def _small_exact_flow():
    """Phase retrieval as an exact flow of 50 equations."""
    return build_exact_flow(PowerLawSpec(d=50, a=1.5, b=0, sigma0=0.1, seed=0).build(), PhaseRetrieval())


def test_wrong_overlap_forms_rejected():
    system = _small_exact_flow()
    wrong = dataclasses.replace(system.modal, q1_values=2.0 * system.modal.q1_values)
    with pytest.raises(ValueError, match="modal form of q1"):
        solve(dataclasses.replace(system, modal=wrong), [1.0], method="exponential")


def test_modal_form_must_match_rhs():
    system = _small_exact_flow()
    wrong = dataclasses.replace(system.modal, rho1=2.0 * system.modal.rho1)
    with pytest.raises(ValueError, match="rates, rate_index, forcing, ridge and rho1"):
        solve(dataclasses.replace(system, modal=wrong), [1.0], method="exponential")


def test_index_changed_in_place_is_checked_again():
    system = _small_exact_flow()
    assert solve(system, [1.0], method="exponential").success
    system.modal.rate_index[0] = 10**6
    with pytest.raises(ValueError, match="rate_index must lie in"):
        solve(system, [1.0], method="exponential")


def test_non_finite_start_reported_as_diverged():
    system = _small_exact_flow()
    y0 = system.y0.copy()
    y0[3] = np.nan
    solution = solve(dataclasses.replace(system, y0=y0), [1.0], method="exponential")
    assert solution.status == IntegrationStatus.DIVERGED


def test_event_after_last_output_not_reported(phase_retrieval_modes):
    """The last step may pass the last output time, and a crossing beyond it is not reported."""
    system, _, escape, reference = phase_retrieval_modes
    before = 0.99 * reference.event_times["escape"]
    solution = solve(system, np.geomspace(0.1, before, 10), method="exponential", rtol=1e-6, atol=1e-14, events=escape)
    assert solution.success
    assert solution.event_times["escape"] is None


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("q1_rows", np.array([0, 1]), "one length"),
        ("q1_cols", np.array([0, 1, 9]), r"must lie in \[0, 2\]"),
        ("q1_cols", np.array([0, 2, 1]), "one rate"),
        ("m1_weights", np.array([1.0, np.nan, 0.0]), "m1_weights must be finite"),
        ("q1_rows", np.ones(3, dtype=bool), "integer indices, got dtype bool"),
        ("rate_index", np.array([0.0, 0.0, 1.0]), "integer indices, got dtype float64"),
        ("forcing", [0.0, 0.0, 0.0], "must be a numpy array, got list"),
    ],
)
def test_modal_form_checks_its_overlap_fields(field, value, message):
    fields = dict(
        rates=np.array([1.0, 0.5]), rate_index=np.array([0, 0, 1]), forcing=np.zeros(3), ridge=0.0, rho1=1.0,
        m1_weights=np.ones(3), q1_rows=np.array([0, 1, 2]), q1_cols=np.array([0, 1, 2]), q1_values=np.ones(3),
    )
    fields[field] = value
    with pytest.raises(ValueError, match=message):
        ModalForm(**fields).check(3)


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
