"""A-posteriori truncation error estimates and the adaptive choice of the spectral rule."""

import math

import numpy as np
import pytest

from hierarchy.model import PhaseRetrieval
from hierarchy.pipeline import SolverOptions, TruncationOptions, integrate_problem
from hierarchy.rule_selection import estimate_difference, select_spectral_rule
from hierarchy.spectrum import PowerLawSpec

MODEL = PhaseRetrieval()


def test_selection_meets_tolerance_at_finite_dimension():
    problem = PowerLawSpec(d=2000, a=1.5, b=0.0, sigma0=0.1, seed=0).build()
    solver = SolverOptions(t_first=0.1, t_end=1e6, n_out=120, rtol=1e-11, atol=1e-16)
    selection = select_spectral_rule(problem, MODEL, solver, tolerance=1e-5)
    assert selection.converged
    assert selection.estimate.loss <= 1e-5
    assert len(selection.history) >= 1

    exact = integrate_problem(problem, MODEL, TruncationOptions(kind="exact"), solver)
    true_error = estimate_difference(selection.trajectory, exact).loss
    assert true_error <= 1e-5
    assert 0.1 <= selection.estimate.loss / true_error <= 10.0


@pytest.mark.slow
def test_infinite_dimension_rule_meets_1e_minus_6_to_1e10():
    """d = inf, a = 1.5, b = 0 to t = 1e10: at most 400 modes for an estimated error <= 1e-6, honest within 10x."""
    problem = PowerLawSpec(d=math.inf, a=1.5, b=0.0, sigma0=0.1, init_teacher_scale=1e-3).build()
    solver = SolverOptions(t_first=1e-2, t_end=1e10, n_out=150, rtol=1e-12, atol=1e-16)
    selection = select_spectral_rule(problem, MODEL, solver, tolerance=1e-6, max_modes=400)
    assert selection.converged, selection.message
    assert selection.trajectory.state_size // 2 <= 400
    assert selection.estimate.loss <= 1e-6

    finest = integrate_problem(problem, MODEL, TruncationOptions(bins_per_decade=16, rule_order=10, exact_top=16), solver)
    true_error = estimate_difference(selection.trajectory, finest).loss
    assert 0.1 <= selection.estimate.loss / true_error <= 10.0


def test_selection_reports_mode_budget():
    problem = PowerLawSpec(d=2000, a=1.5, b=0.0, sigma0=0.1, seed=0).build()
    solver = SolverOptions(t_first=0.1, t_end=1e5, n_out=60, rtol=1e-10, atol=1e-14)
    selection = select_spectral_rule(problem, MODEL, solver, tolerance=1e-12, max_modes=60)
    assert not selection.converged
    assert "max_modes = 60" in selection.message


def test_estimate_difference_on_identical_trajectories_is_zero():
    problem = PowerLawSpec(d=100, a=1.0, b=0.0, sigma0=0.1, seed=2).build()
    solver = SolverOptions(t_first=0.1, t_end=1e3, n_out=30)
    trajectory = integrate_problem(problem, MODEL, TruncationOptions(kind="exact"), solver)
    estimate = estimate_difference(trajectory, trajectory)
    assert estimate.worst == 0.0


@pytest.mark.parametrize("tolerance", [0.0, 1.5, -1e-3])
def test_selection_rejects_invalid_tolerance(tolerance):
    problem = PowerLawSpec(d=100, a=1.0).build()
    with pytest.raises(ValueError, match="tolerance"):
        select_spectral_rule(problem, MODEL, SolverOptions(), tolerance=tolerance)
