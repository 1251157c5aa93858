"""Tests of phase detection and the leading-order predictions on trajectories with closed-form phase times."""

import json
import math

import numpy as np
import pytest

from hierarchy.phases import (
    PhaseReport,
    analyze_phases,
    convergence_deviation,
    find_convergence_time,
    find_escape_time,
    predict_escape_time,
    predict_tail_loss,
    select_tail_comparison_indices,
)
from hierarchy.spectrum import PowerLawSpec, Problem
from hierarchy.trajectory import Trajectory


def _direct_tail_loss(problem, t):
    """The phase-3 sum written out with one dense matrix, as a reference."""
    exponentials = np.exp(-4.0 * problem.rho1 * np.outer(t, problem.lam))
    return problem.rho1 * exponentials @ (problem.lam * problem.wstar**2)


def _trajectory(t, m1, q1, loss, rho1=1.0, rho2=0.5, status="SUCCESS"):
    return Trajectory(
        t=np.asarray(t, dtype=float),
        m1=np.asarray(m1, dtype=float),
        q1=np.asarray(q1, dtype=float),
        loss=np.asarray(loss, dtype=float),
        rho1=rho1,
        rho2=rho2,
        truncation="synthetic",
        state_size=2,
        status=status,
        message="synthetic trajectory",
        t_requested_end=float(t[-1]) if len(t) else 1.0,
    )


# Escape time


def test_escape_time_linear_in_log_time():
    # |m_1| / rho_1 = 0.13 (log10 t + 2) is linear in log t, so the
    # interpolation is exact: the level 1/2 is crossed at log10 t = 0.5/0.13 - 2.
    rho1 = 2.0
    t = np.geomspace(1e-2, 1e3, 31)
    m1 = -rho1 * 0.13 * (np.log10(t) + 2.0)
    expected = 10.0 ** (0.5 / 0.13 - 2.0)

    assert find_escape_time(t, m1, rho1) == pytest.approx(expected, rel=1e-12)


def test_escape_time_logistic_closed_form():
    # m(t) = m0 e^{mu t} / (1 + m0 (e^{mu t} - 1)) reaches 1/2 at t = ln((1 - m0)/m0) / mu.
    m0, mu = 1e-4, 1.7
    t = np.geomspace(1e-3, 1e2, 4000)
    growth = np.exp(mu * t)
    m1 = m0 * growth / (1.0 + m0 * (growth - 1.0))
    expected = math.log((1.0 - m0) / m0) / mu

    assert find_escape_time(t, m1, 1.0) == pytest.approx(expected, rel=1e-4)


def test_escape_time_other_level():
    t = np.geomspace(1.0, 100.0, 21)
    m1 = np.log10(t)  # linear in log t, crosses 0.25 at t = 10^0.25

    assert find_escape_time(t, m1, 1.0, level=0.25) == pytest.approx(10.0**0.25, rel=1e-12)


def test_escape_time_never_reached():
    t = np.geomspace(1e-2, 1e2, 50)

    assert find_escape_time(t, np.full(t.size, 0.49), 1.0) is None
    assert find_escape_time(np.zeros(0), np.zeros(0), 1.0) is None


def test_escape_time_reached_at_first_output():
    t = np.geomspace(0.5, 10.0, 5)

    assert find_escape_time(t, np.full(t.size, 0.7), 1.0) == 0.5


def test_escape_time_ignores_nan():
    t = np.array([1.0, 2.0, 4.0, 8.0])
    m1 = np.array([0.1, np.nan, 0.2, 0.9])
    # The crossing lies between t = 4 (0.2) and t = 8 (0.9), linear in log2 t.
    expected = 2.0 ** (2.0 + (0.5 - 0.2) / 0.7)

    assert find_escape_time(t, m1, 1.0) == pytest.approx(expected, rel=1e-12)


def test_escape_prediction_formula():
    predicted = predict_escape_time(1e-3, rho1=1.0, rho2=0.25)

    assert predicted == pytest.approx(math.log(0.5 / 1e-3) / 0.5, rel=1e-14)
    assert predict_escape_time(-1e-3, rho1=1.0, rho2=0.25) == predicted
    assert predict_escape_time(1e-3, rho1=2.0, rho2=0.25) == pytest.approx(math.log(1.0 / 1e-3) / 0.5)


def test_escape_prediction_matches_exponential_growth():
    # On the manifold q_1 = rho_1/3 the overlap grows as m_1(0) exp(2 rho_2 t),
    # so the measured crossing of that curve is the prediction.
    m0, rho1, rho2 = 3e-5, 1.0, 0.4
    t = np.geomspace(1e-2, 1e2, 5000)
    m1 = m0 * np.exp(2.0 * rho2 * t)

    measured = find_escape_time(t, m1, rho1)

    assert measured == pytest.approx(predict_escape_time(m0, rho1, rho2), rel=1e-4)


@pytest.mark.parametrize(
    "m1_initial, rho1, rho2",
    [(0.0, 1.0, 0.5), (0.5, 1.0, 0.5), (0.9, 1.0, 0.5), (1e-3, 1.0, 0.0), (math.nan, 1.0, 0.5), (1e-3, 1.0, math.inf)],
)
def test_escape_prediction_not_applicable(m1_initial, rho1, rho2):
    assert predict_escape_time(m1_initial, rho1, rho2) is None


# Convergence time


def test_convergence_time_exponential_relaxation():
    # |m_1|/rho_1 - 1 = -e^{-t/tau} and q_1/rho_1 - 1 = -2 e^{-t/tau}: the larger
    # deviation 2 e^{-t/tau} drops below tol at t = tau ln(2 / tol).
    rho1, tau, tol = 1.5, 30.0, 1e-2
    t = np.geomspace(1e-1, 1e4, 6000)
    m1 = -rho1 * (1.0 - np.exp(-t / tau))
    q1 = rho1 * (1.0 - 2.0 * np.exp(-t / tau))
    expected = tau * math.log(2.0 / tol)

    assert find_convergence_time(t, m1, q1, rho1, tol) == pytest.approx(expected, rel=1e-4)


def test_convergence_time_linear_in_log_time():
    t = np.geomspace(1.0, 1e4, 17)
    deviation = 0.05 - 0.01 * np.log10(t)  # crosses 0.02 at t = 10^3
    deviation = np.maximum(deviation, 0.001)
    m1 = 1.0 + deviation
    q1 = 1.0 - 0.5 * deviation

    assert find_convergence_time(t, m1, q1, 1.0, tolerance=0.02) == pytest.approx(10.0**3, rel=1e-12)


def test_convergence_time_uses_last_exit():
    t = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
    m1 = np.array([0.5, 0.995, 0.98, 0.999, 0.9995, 0.9999])
    q1 = np.ones(t.size)
    # Within 1e-2 at t = 2, outside again at t = 4 (deviation 0.02), then inside at t = 8 (0.001).
    expected = 2.0 ** (2.0 + (0.02 - 0.01) / (0.02 - 0.001))

    assert find_convergence_time(t, m1, q1, 1.0) == pytest.approx(expected, rel=1e-12)


def test_convergence_time_requires_both_statistics():
    t = np.geomspace(1.0, 100.0, 10)
    converged = np.ones(t.size)

    assert find_convergence_time(t, converged, np.full(t.size, 0.9), 1.0) is None
    assert find_convergence_time(t, np.full(t.size, 0.9), converged, 1.0) is None
    assert find_convergence_time(t, converged, converged, 1.0) == 1.0


def test_convergence_time_last_output_outside():
    t = np.geomspace(1.0, 100.0, 10)
    m1 = np.ones(t.size)
    m1[-1] = np.nan

    assert find_convergence_time(t, m1, np.ones(t.size), 1.0) is None
    assert find_convergence_time(np.zeros(0), np.zeros(0), np.zeros(0), 1.0) is None


def test_convergence_deviation_non_finite():
    deviation = convergence_deviation([1.0, np.inf, np.nan], [1.0, 1.0, 1.0], 1.0)

    assert deviation[0] == 0.0
    assert np.isinf(deviation[1])
    assert np.isinf(deviation[2])


# Phase-3 prediction


def test_tail_loss_single_direction_closed_form():
    lam = np.array([0.3])
    wstar = np.array([2.0])
    problem = Problem(lam=lam, wstar=wstar, w0=np.array([0.01]))
    rho1 = 0.3 * 4.0
    t = np.array([0.0, 0.5, 3.0, 10.0])
    expected = rho1 * 0.3 * 4.0 * np.exp(-4.0 * rho1 * 0.3 * t)

    np.testing.assert_allclose(predict_tail_loss(problem, t), expected, rtol=1e-14)


@pytest.mark.parametrize("max_chunk_elements", [1, 7, 500, 3000, 10**7])
def test_tail_loss_chunking_matches_direct_sum(max_chunk_elements):
    problem = PowerLawSpec(d=3000, a=1.5, b=0.5).build()
    t = np.geomspace(1e-3, 1e8, 37)
    expected = _direct_tail_loss(problem, t)

    predicted = predict_tail_loss(problem, t, max_chunk_elements=max_chunk_elements)

    np.testing.assert_allclose(predicted, expected, rtol=1e-12, atol=0.0)


def test_tail_loss_underflow_is_exact_zero():
    problem = Problem(lam=np.array([1.0, 0.5]), wstar=np.array([1.0, 1.0]), w0=np.zeros(2))

    assert predict_tail_loss(problem, np.array([1e4]))[0] == 0.0


def test_tail_loss_keeps_shape():
    problem = PowerLawSpec(d=50, a=1.0).build()
    t = np.array([[1.0, 2.0], [3.0, 4.0]])

    predicted = predict_tail_loss(problem, t)

    assert predicted.shape == (2, 2)
    np.testing.assert_allclose(predicted.ravel(), _direct_tail_loss(problem, t.ravel()), rtol=1e-13)


def test_tail_comparison_indices_respect_window():
    t = np.geomspace(1.0, 1e6, 61)
    loss = np.exp(-t / 1e4)
    start, floor = 100.0, 1e-10

    indices = select_tail_comparison_indices(t, loss, start, floor, n_points=5)

    assert indices.size == 5
    assert np.all(t[indices] >= start)
    assert np.all(loss[indices] > floor)
    assert np.all(np.diff(indices) > 0)
    assert t[indices[0]] == t[t >= start][0]
    assert indices[-1] == np.flatnonzero(loss > floor)[-1]


def test_tail_comparison_indices_empty_cases():
    t = np.geomspace(1.0, 100.0, 10)
    loss = np.full(t.size, 1e-3)

    assert select_tail_comparison_indices(t, loss, None, 0.0, 5).size == 0
    assert select_tail_comparison_indices(t, loss, 1.0, 1.0, 5).size == 0
    assert select_tail_comparison_indices(t, loss, 1e3, 0.0, 5).size == 0


# Phase report


@pytest.fixture(scope="module")
def small_problem():
    return PowerLawSpec(d=400, a=1.5, sigma0=0.1, seed=3).build()


def test_report_tail_rows_match_prediction(small_problem):
    # A synthetic trajectory whose loss is 2 % above the phase-3 prediction
    # and whose statistics have converged from the first output on.
    t = np.geomspace(1.0, 1e7, 120)
    loss = 1.02 * predict_tail_loss(small_problem, t)
    trajectory = _trajectory(t, np.ones(t.size), np.ones(t.size), loss, rho1=small_problem.rho1)

    report = analyze_phases(trajectory, small_problem, initial_loss=0.75)

    assert report.convergence_time == 1.0
    assert 2 <= len(report.tail_comparison) <= 6
    for row in report.tail_comparison:
        assert row.relative_error == pytest.approx(1.0 / 1.02 - 1.0, rel=1e-9)
        assert row.measured_loss > 0.75e-12
    assert report.tail_loss_floor == pytest.approx(0.75e-12)


def test_report_escape_and_precomputed_prediction(small_problem):
    rho1, rho2, m0 = small_problem.rho1, small_problem.rho(2), small_problem.m(1)
    t = np.geomspace(1e-2, 1e5, 3000)
    # Exponential growth capped at rho_1: the escape must match the prediction.
    m1 = np.minimum(m0 * np.exp(np.minimum(2.0 * rho2 * t, 700.0)), rho1)
    q1 = np.where(m1 < rho1, rho1 / 3.0, rho1)
    loss = predict_tail_loss(small_problem, t)
    trajectory = _trajectory(t, m1, q1, loss, rho1=rho1, rho2=rho2)

    report = analyze_phases(trajectory, small_problem, tail_prediction=loss * 1.5)

    assert report.escape_time == pytest.approx(report.escape_time_predicted, rel=1e-3)
    assert report.escape_time_relative_error == pytest.approx(0.0, abs=1e-3)
    assert report.convergence_time is not None
    assert report.initial_loss == loss[0]
    for row in report.tail_comparison:
        assert row.relative_error == pytest.approx(0.5, rel=1e-12)
        assert row.t >= report.convergence_time


def test_report_of_stalled_run(small_problem):
    t = np.geomspace(1e-2, 10.0, 20)
    m1 = np.full(t.size, 1e-3)
    trajectory = _trajectory(t, m1, m1, np.full(t.size, 0.75), status="STEP_BUDGET")

    report = analyze_phases(trajectory, small_problem)

    assert report.escape_time is None
    assert report.escape_time_relative_error is None
    assert report.convergence_time is None
    assert report.tail_comparison == []
    assert report.trajectory_complete is False


def test_report_dict_is_strict_json(small_problem):
    t = np.geomspace(1.0, 1e6, 40)
    loss = predict_tail_loss(small_problem, t)
    trajectory = _trajectory(t, np.ones(t.size), np.ones(t.size), loss, rho1=small_problem.rho1)
    report = analyze_phases(trajectory, small_problem, initial_loss=math.nan)

    plain = report.to_dict()
    text = json.dumps(plain, allow_nan=False)

    assert isinstance(report, PhaseReport)
    assert plain["initial_loss"] is None
    assert plain["escape_time"] == 1.0
    assert isinstance(plain["tail_comparison"], list)
    assert set(plain) == set(json.loads(text))
