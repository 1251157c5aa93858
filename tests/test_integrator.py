"""The compiled Rosenbrock integrator on standard stiff problems with known solutions."""

import numpy as np
import pytest

from hierarchy.integrators import IntegrationStatus, solve
from hierarchy.model import PhaseRetrieval
from hierarchy.spectrum import PowerLawSpec
from hierarchy.truncation import build_exact_flow

from stiff_problems import (
    ROBERTSON_REFERENCE,
    ROBERTSON_REFERENCE_T,
    blowup,
    logistic,
    logistic_exact,
    robertson,
    van_der_pol,
)


@pytest.mark.parametrize("rtol", [1e-4, 1e-6, 1e-8, 1e-10])
def test_robertson_reaches_reference(rtol):
    solution = solve(robertson(), np.geomspace(1e-5, ROBERTSON_REFERENCE_T, 17), rtol=rtol, atol=1e-14 * rtol)
    assert solution.status is IntegrationStatus.SUCCESS
    relative_error = np.abs(solution.observables[-1] / ROBERTSON_REFERENCE - 1.0)
    # Global error stays within a modest multiple of the local tolerance.
    assert np.max(relative_error) < 100 * rtol


def test_robertson_error_falls_with_tolerance():
    errors = []
    for rtol in (1e-3, 1e-5, 1e-7):
        solution = solve(robertson(), [ROBERTSON_REFERENCE_T], rtol=rtol, atol=1e-14 * rtol)
        errors.append(np.max(np.abs(solution.observables[-1] / ROBERTSON_REFERENCE - 1.0)))
    assert errors[1] < errors[0]
    assert errors[2] < errors[1]


def test_robertson_conserves_mass():
    solution = solve(robertson(), np.geomspace(1e-5, 1e11, 50), rtol=1e-8, atol=1e-20)
    assert np.max(np.abs(solution.observables.sum(axis=1) - 1.0)) < 1e-12


def test_logistic_convergence_order():
    """Error against the exact solution falls like steps^(-4) for the order-4 method."""
    t_out = np.linspace(0.5, 10.0, 20)
    steps, errors = [], []
    for rtol in np.geomspace(1e-5, 1e-10, 6):
        solution = solve(logistic(), t_out, rtol=rtol, atol=rtol)
        assert solution.success
        steps.append(solution.stats["accepted"])
        errors.append(np.max(np.abs(solution.observables[:, 0] - logistic_exact(t_out))))
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert -4.8 < slope < -3.3


def test_dense_output_matches_exact_solution():
    t_out = np.linspace(0.01, 12.0, 997)
    solution = solve(logistic(), t_out, rtol=1e-7, atol=1e-10)
    # Far more outputs than steps: most values come from the dense output.
    assert solution.stats["accepted"] < t_out.size / 4
    assert np.max(np.abs(solution.observables[:, 0] - logistic_exact(t_out))) < 1e-6


def test_van_der_pol_stiff_periodic_orbit():
    """Stiff Van der Pol (eps = 1e-6): the relaxation oscillation keeps |y1| <= 2.01 and y1 changes sign."""
    t_out = np.linspace(0.0, 2.0, 201)
    solution = solve(van_der_pol(1e-6), t_out, rtol=1e-6, atol=1e-8)
    assert solution.status is IntegrationStatus.SUCCESS
    y1 = solution.observables[:, 0]
    assert np.max(np.abs(y1)) < 2.01
    assert np.min(y1) < -1.0


def test_van_der_pol_tolerance_convergence():
    reference = solve(van_der_pol(1e-3), [2.0], rtol=1e-12, atol=1e-12).observables[-1]
    errors = []
    for rtol in (1e-4, 1e-6, 1e-8):
        errors.append(np.max(np.abs(solve(van_der_pol(1e-3), [2.0], rtol=rtol, atol=rtol).observables[-1] - reference)))
    assert errors[1] < errors[0]
    assert errors[2] < errors[1]


def test_blowup_reports_divergence_before_singularity():
    t_out = np.linspace(0.05, 1.95, 20)
    solution = solve(blowup(), t_out, rtol=1e-8, atol=1e-10)
    assert solution.status in (IntegrationStatus.DIVERGED, IntegrationStatus.STEP_SIZE_COLLAPSE)
    assert solution.t_reached < 1.0 + 1e-6
    assert "t = 1" in solution.message
    # Outputs before the singularity are kept and correct.
    assert solution.t.size == np.count_nonzero(t_out < 1.0)
    assert np.allclose(solution.observables[:, 0], 1.0 / (1.0 - solution.t), rtol=1e-6)


def test_step_budget_stops_and_keeps_outputs():
    t_out = np.geomspace(1e-5, 1e11, 17)
    solution = solve(robertson(), t_out, rtol=1e-8, atol=1e-20, max_steps=50)
    assert solution.status is IntegrationStatus.STEP_BUDGET
    assert solution.stats["steps"] == 50
    assert 0 < solution.t.size < t_out.size
    assert "step budget of 50 steps" in solution.message


def test_output_at_initial_time_is_initial_state():
    solution = solve(logistic(0.25), [0.0, 1.0], rtol=1e-8, atol=1e-10)
    assert solution.observables[0, 0] == 0.25


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"rtol": 0.0}, "rtol"),
        ({"rtol": 2.0}, "rtol"),
        ({"atol": -1.0}, "atol"),
        ({"max_steps": 0}, "max_steps"),
        ({"method": "euler"}, "method"),
    ],
)
def test_invalid_settings_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        solve(logistic(), [1.0], **kwargs)


@pytest.mark.parametrize("t_out", [[2.0, 1.0], [np.nan], [], [-1.0]])
def test_invalid_output_times_rejected(t_out):
    with pytest.raises(ValueError, match="t_out|output time"):
        solve(logistic(), t_out)


@pytest.mark.parametrize("method", ["rodas4", "radau5", "bdf"])
def test_event_located_on_dense_output(method):
    """The logistic solution crosses 1/2 at t = ln(1/y0 - 1) exactly; a coarse output grid does not limit the event."""
    from hierarchy.integrators import Event

    y0 = 0.01
    crossing = np.log(1.0 / y0 - 1.0)
    events = (Event("half", "y", 0.5), Event("never", "y", 2.0), Event("absolute", "y", 0.9, absolute=True))
    solution = solve(logistic(y0), [1.0, 20.0], method=method, rtol=1e-10, atol=1e-12, events=events)
    assert solution.success
    assert solution.event_times["half"] == pytest.approx(crossing, rel=1e-8)
    assert solution.event_times["never"] is None
    assert solution.event_times["absolute"] == pytest.approx(np.log(0.9 / 0.1 * (1.0 / y0 - 1.0)), rel=1e-8)


def test_event_with_unknown_observable_rejected():
    from hierarchy.integrators import Event

    with pytest.raises(ValueError, match="unknown observable 'x'"):
        solve(logistic(), [1.0], events=(Event("bad", "x", 0.5),))


def test_oversized_system_rejected_before_allocation(monkeypatch):
    from hierarchy.integrators import driver

    monkeypatch.setattr(driver, "_physical_memory_bytes", lambda: 1024)
    with pytest.raises(ValueError, match="GiB of work memory"):
        solve(robertson(), [1.0])


def test_wall_clock_limit_stops_large_system_early():
    """A run of far fewer steps than STEPS_PER_CALL, at milliseconds per step, still stops at the limit."""
    system = build_exact_flow(PowerLawSpec(d=100_000, a=1.5, b=0, sigma0=0.1, seed=0).build(), PhaseRetrieval())
    solution = solve(system, np.geomspace(0.1, 1e7, 9), rtol=1e-8, atol=1e-12, max_wall_seconds=0.01)
    assert solution.status is IntegrationStatus.WALL_TIME
    assert solution.t_reached < 1e7
    assert solution.stats["steps"] < 100
    assert "wall-clock limit of 0.01 s" in solution.message


@pytest.mark.parametrize("method", ["rodas4", "radau5", "bdf"])
def test_output_near_t0_is_initial_state(method):
    # One unit of rounding after t0 no step can reach: it used to end the
    # run with STEP_SIZE_COLLAPSE.
    t_out = np.array([np.nextafter(1.0, 2.0), 2.0])
    solution = solve(logistic(), t_out, t0=1.0, method=method, rtol=1e-8, atol=1e-11)
    assert solution.success
    assert solution.observables[0, 0] == 0.01
    exact = 1.0 / (1.0 + np.exp(-1.0) * (1.0 / 0.01 - 1.0))
    assert abs(solution.observables[1, 0] - exact) < 1e-7
