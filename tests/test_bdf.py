"""The compiled variable-order BDF (NDF) integrator on standard stiff problems and on the project's truncations."""

import numba
import numpy as np
import pytest

from hierarchy.integrators import METHODS, IntegrationStatus, StructuredSystem, driver, solve
from hierarchy.integrators.bdf import NDF_ALPHA, BDFMethod
from hierarchy.kernel_types import JAC_SIGNATURE, RHS_SIGNATURE
from hierarchy.model import PhaseRetrieval
from hierarchy.spectrum import PowerLawSpec
from hierarchy.truncation import build_exact_flow, build_moment_hierarchy

from stiff_problems import (
    ROBERTSON_REFERENCE,
    ROBERTSON_REFERENCE_T,
    VDPOL_REFERENCE,
    VDPOL_REFERENCE_T,
    blowup,
    logistic,
    logistic_exact,
    observe_state,
    robertson,
    van_der_pol,
    vdpol,
)


@numba.njit(RHS_SIGNATURE, cache=True)
def decay_rhs(t, y, params, drive, out):
    out[0] = -y[0]


@numba.njit(JAC_SIGNATURE, cache=True)
def split_decay_jacobian(t, y, params, drive, band, U, V):
    # J = -1 written as the core B = params[0] plus the rank-one part U V^T = -1 - params[0].
    band[0, 0] = params[0]
    U[0, 0] = -1.0 - params[0]
    V[0, 0] = 1.0


def _robertson_error(rtol):
    solution = solve(
        robertson(), np.geomspace(1e-5, ROBERTSON_REFERENCE_T, 17), method="bdf", rtol=rtol, atol=1e-14 * rtol
    )
    assert solution.status is IntegrationStatus.SUCCESS
    return np.max(np.abs(solution.observables[-1] / ROBERTSON_REFERENCE - 1.0))


def test_bdf_is_registered():
    assert METHODS["bdf"].name == "bdf"
    assert METHODS["bdf"].order == 5


@pytest.mark.parametrize("max_order", [0, 6, 2.0, True])
def test_invalid_max_order_rejected(max_order):
    with pytest.raises(ValueError, match="max_order"):
        BDFMethod(max_order=max_order)


@pytest.mark.parametrize("rtol", [1e-4, 1e-6, 1e-8, 1e-10])
def test_robertson_reaches_reference(rtol):
    # Measured error / rtol: 2.9, 7.1, 18, 42 (SciPy's BDF: 2.0, 4.1, 10, 26).
    assert _robertson_error(rtol) < 100 * rtol


def test_robertson_error_falls_with_tolerance():
    errors = [_robertson_error(rtol) for rtol in (1e-4, 1e-6, 1e-8, 1e-10)]
    for looser, tighter in zip(errors, errors[1:]):
        assert tighter < looser / 10


def test_robertson_conserves_mass():
    solution = solve(robertson(), np.geomspace(1e-5, 1e11, 50), method="bdf", rtol=1e-8, atol=1e-20)
    assert solution.success
    assert np.max(np.abs(solution.observables.sum(axis=1) - 1.0)) < 1e-12


def test_robertson_reuses_jacobian_and_factors():
    solution = solve(robertson(), [ROBERTSON_REFERENCE_T], method="bdf", rtol=1e-8, atol=1e-22)
    accepted = solution.stats["accepted"]
    # Measured: 1563 accepted steps, 104 Jacobians, 374 factorisations, 2822 f evaluations.
    assert solution.stats["jacobian_evaluations"] < accepted / 5
    assert solution.stats["factorizations"] < accepted / 2
    assert solution.stats["rhs_evaluations"] < 3 * accepted
    assert solution.stats["newton_iterations"] > 0


def test_van_der_pol_stiff_periodic_orbit():
    """Stiff Van der Pol (eps = 1e-6): the relaxation oscillation keeps |y1| <= 2.01 and y1 changes sign."""
    t_out = np.linspace(0.0, 2.0, 201)
    solution = solve(van_der_pol(1e-6), t_out, method="bdf", rtol=1e-6, atol=1e-8)
    assert solution.status is IntegrationStatus.SUCCESS
    y1 = solution.observables[:, 0]
    assert np.max(np.abs(y1)) < 2.01
    assert np.min(y1) < -1.0
    reference = solve(van_der_pol(1e-6), t_out, method="rodas4", rtol=1e-10, atol=1e-12).observables[:, 0]
    # Away from the fast jumps both runs agree to about the tolerance.
    assert np.max(np.abs(y1[:100] - reference[:100])) < 1e-4


@pytest.mark.parametrize("rtol, atol_per_rtol", [(1e-3, 1e-6), (5.6e-4, 1e-6), (1e-4, 1e-6), (5.6e-4, 1.0), (1.8e-4, 1.0)])
def test_loose_tolerance_stays_on_van_der_pol_orbit(rtol, atol_per_rtol):
    """After each fast jump the Newton iteration must converge with the Jacobian it has.

    When the first Newton iterate was accepted on the contraction rate of an
    earlier step, these runs left the slow manifold after the first jump and
    ended near (-1.20, 0.667) with status success.
    """
    solution = solve(vdpol(), [VDPOL_REFERENCE_T], method="bdf", rtol=rtol, atol=atol_per_rtol * rtol)
    assert solution.status is IntegrationStatus.SUCCESS
    assert np.max(np.abs(solution.observables[-1] / VDPOL_REFERENCE - 1.0)) < 1000 * rtol


def test_van_der_pol_tolerance_convergence():
    reference = solve(van_der_pol(1e-3), [2.0], method="rodas4", rtol=1e-12, atol=1e-12).observables[-1]
    errors = []
    for rtol in (1e-4, 1e-6, 1e-8, 1e-10):
        solution = solve(van_der_pol(1e-3), [2.0], method="bdf", rtol=rtol, atol=rtol)
        assert solution.success
        errors.append(np.max(np.abs(solution.observables[-1] - reference)))
    # Measured: 1.9e-3, 1.9e-5, 2.2e-7, 4.1e-9.
    for looser, tighter in zip(errors, errors[1:]):
        assert tighter < looser / 10
    assert errors[-1] < 1e-7


def _logistic_convergence_slope(monkeypatch, max_order):
    name = f"bdf capped at order {max_order}"
    monkeypatch.setitem(METHODS, name, BDFMethod(max_order=max_order))
    t_out = np.linspace(0.5, 10.0, 20)
    steps, errors = [], []
    for rtol in np.geomspace(1e-4, 1e-9, 6):
        solution = solve(logistic(), t_out, method=name, rtol=rtol, atol=rtol)
        assert solution.success
        steps.append(solution.stats["accepted"])
        errors.append(np.max(np.abs(solution.observables[:, 0] - logistic_exact(t_out))))
    return np.polyfit(np.log(steps), np.log(errors), 1)[0]


def test_order_cap_sets_convergence_slope(monkeypatch):
    """Error against the exact logistic solution falls like steps^(-q) with the order capped at q."""
    slopes = {q: _logistic_convergence_slope(monkeypatch, q) for q in (1, 2, 3, 4)}
    # Measured slopes: -1.01, -2.12, -3.34, -4.52.
    assert -1.2 < slopes[1] < -0.8
    assert -2.5 < slopes[2] < -1.8
    assert -3.8 < slopes[3] < -2.8
    assert -5.2 < slopes[4] < -3.8
    assert slopes[2] < slopes[1] - 0.7
    assert slopes[3] < slopes[2] - 0.7
    assert slopes[4] < slopes[3] - 0.7


def test_dense_output_matches_exact_solution():
    t_out = np.linspace(0.01, 12.0, 997)
    solution = solve(logistic(), t_out, method="bdf", rtol=1e-7, atol=1e-10)
    assert solution.success
    # Far more outputs than steps: most values come from the dense output.
    assert solution.stats["accepted"] < t_out.size / 4
    # Measured: 4.5e-7 with 129 steps.
    assert np.max(np.abs(solution.observables[:, 0] - logistic_exact(t_out))) < 1.5e-6


def test_dense_output_converges_with_tolerance():
    t_out = np.linspace(0.01, 12.0, 997)
    errors = []
    for rtol in (1e-6, 1e-8, 1e-10):
        solution = solve(logistic(), t_out, method="bdf", rtol=rtol, atol=rtol)
        errors.append(np.max(np.abs(solution.observables[:, 0] - logistic_exact(t_out))))
    for looser, tighter in zip(errors, errors[1:]):
        assert tighter < looser / 10


def _structured_systems():
    problem = PowerLawSpec(d=50, a=1.5).build()
    model = PhaseRetrieval()
    # With the copy closure at K = 4, m_1 grows without bound after t ~ 10
    # and both integrators stop near t = 80, so this grid ends at t = 10.
    return [
        (build_exact_flow(problem, model), np.geomspace(0.1, 1e4, 40)),
        (build_moment_hierarchy(problem, model, 4, closure="copy"), np.geomspace(0.01, 10.0, 40)),
    ]


@pytest.mark.parametrize("system, t_out", _structured_systems(), ids=["exact flow", "moment hierarchy"])
def test_structured_system_matches_rodas4(system, t_out):
    assert system.rank >= 2
    bdf = solve(system, t_out, method="bdf", rtol=1e-10, atol=1e-14)
    rodas4 = solve(system, t_out, method="rodas4", rtol=1e-10, atol=1e-14)
    assert bdf.success
    assert rodas4.success
    for name in ("m1", "q1"):
        assert np.max(np.abs(bdf.observable(name) / rodas4.observable(name) - 1.0)) < 1e-6
    assert bdf.stats["jacobian_evaluations"] < bdf.stats["accepted"] / 10


def test_history_carried_across_driver_slices(monkeypatch):
    """Slices of 37 steps continue at the order reached, so the steps and the result barely change."""
    t_out = np.geomspace(1e-5, ROBERTSON_REFERENCE_T, 17)
    whole = solve(robertson(), t_out, method="bdf", rtol=1e-8, atol=1e-22)
    monkeypatch.setattr(driver, "STEPS_PER_CALL", 37)
    sliced = solve(robertson(), t_out, method="bdf", rtol=1e-8, atol=1e-22)
    assert sliced.success
    assert abs(sliced.stats["accepted"] - whole.stats["accepted"]) < 0.1 * whole.stats["accepted"]
    assert np.max(np.abs(sliced.observables / whole.observables - 1.0)) < 1e-6


def test_new_solve_restarts_history():
    """A second solve of another system with the same method object is unaffected by the first."""
    first = solve(logistic(0.3), [5.0], method="bdf", rtol=1e-8, atol=1e-10)
    solve(robertson(), [1.0], method="bdf", rtol=1e-8, atol=1e-20)
    second = solve(logistic(0.3), [5.0], method="bdf", rtol=1e-8, atol=1e-10)
    assert second.stats == first.stats
    assert second.observables[0, 0] == first.observables[0, 0]


def test_blowup_reports_failure_before_singularity():
    t_out = np.linspace(0.05, 1.95, 20)
    solution = solve(blowup(), t_out, method="bdf", rtol=1e-8, atol=1e-10)
    assert solution.status in (IntegrationStatus.DIVERGED, IntegrationStatus.STEP_SIZE_COLLAPSE)
    assert solution.t_reached < 1.0 + 1e-6
    assert "t = 1" in solution.message
    # Outputs before the singularity are kept and correct. The relative
    # error grows like 1 / (1 - t); measured 5.8e-6 at t = 0.95.
    assert solution.t.size == np.count_nonzero(t_out < 1.0)
    assert np.allclose(solution.observables[:, 0], 1.0 / (1.0 - solution.t), rtol=2e-5)


def test_blowup_diverges_past_state_bound():
    solution = solve(blowup(), [0.5, 1.5], method="bdf", rtol=1e-8, atol=1e-10, max_abs_state=1e4)
    assert solution.status is IntegrationStatus.DIVERGED
    assert 0.999 < solution.t_reached < 1.0
    assert solution.t.size == 1


def test_singular_core_retried_with_smaller_step():
    """y' = -y with a Jacobian split whose banded core is exactly singular at the first step."""
    first_step = 1e-3
    # The first step is at order 1 with c = h / alpha_1, and the kernel
    # factorises (1 / c) I - B, which this core makes exactly zero.
    core = 1.0 / (first_step / NDF_ALPHA[1])
    system = StructuredSystem(
        "split decay", np.array([1.0]), np.array([core]), decay_rhs, split_decay_jacobian, observe_state,
        ("y",), 0, 0, 1,
    )
    solution = solve(system, [1.0], method="bdf", rtol=1e-8, atol=1e-10, first_step=first_step)
    assert solution.success
    assert solution.stats["singular_rejections"] >= 1
    assert solution.observables[0, 0] == pytest.approx(np.exp(-1.0), rel=1e-6)


def test_step_budget_stops_and_keeps_outputs():
    t_out = np.geomspace(1e-5, 1e11, 17)
    solution = solve(robertson(), t_out, method="bdf", rtol=1e-8, atol=1e-20, max_steps=50)
    assert solution.status is IntegrationStatus.STEP_BUDGET
    assert solution.stats["steps"] == 50
    assert 0 < solution.t.size < t_out.size
    assert "step budget of 50 steps" in solution.message


def test_last_step_ends_at_last_output_time():
    solution = solve(logistic(), [0.3, 7.0], method="bdf", rtol=1e-9, atol=1e-12)
    assert solution.t_reached == 7.0
    assert solution.observables[-1, 0] == pytest.approx(logistic_exact(7.0), rel=1e-7)
