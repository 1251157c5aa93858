"""Tests of the phase-retrieval model object against sampled data and finite differences."""

from __future__ import annotations

import dataclasses
import logging
import types

import numba
import numpy as np
import pytest

from hierarchy._generated import phase_retrieval
from hierarchy.kernel_types import DriveType
from hierarchy.model import PhaseRetrieval, evaluate_loss

UNIT_ROUNDOFF = 2.0**-53

DIMENSION = 20
EXPONENT = 1.5


@pytest.fixture(scope="module")
def problem():
    """Power-law covariance and random student and teacher weights, with a fixed seed."""
    rng = np.random.default_rng(7)
    eigenvalues = np.arange(1, DIMENSION + 1, dtype=float) ** -EXPONENT
    teacher = rng.standard_normal(DIMENSION)
    teacher /= np.sqrt(eigenvalues @ teacher**2)  # rho_1 = 1
    weights = 0.8 * rng.standard_normal(DIMENSION)
    return eigenvalues, weights, teacher


def _statistics(eigenvalues, weights, teacher):
    q1 = eigenvalues @ (weights * weights)
    m1 = eigenvalues @ (weights * teacher)
    rho1 = eigenvalues @ (teacher * teacher)
    return q1, m1, rho1


def test_model_name_and_frozen():
    model = PhaseRetrieval()
    assert model.name == "phase_retrieval"
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.extra = 1


def test_loss_matches_monte_carlo(problem):
    eigenvalues, weights, teacher = problem
    model = PhaseRetrieval()

    rng = np.random.default_rng(11)
    samples = rng.standard_normal((400_000, DIMENSION)) * np.sqrt(eigenvalues)
    prediction = (samples @ weights) ** 2
    label = (samples @ teacher) ** 2
    per_sample_loss = 0.25 * (prediction - label) ** 2
    estimate = per_sample_loss.mean()
    standard_error = per_sample_loss.std(ddof=1) / np.sqrt(per_sample_loss.size)

    exact = model.loss(*_statistics(eigenvalues, weights, teacher))

    assert standard_error < 0.05 * exact
    assert abs(estimate - exact) < 4 * standard_error


def test_loss_broadcasts_over_arrays():
    model = PhaseRetrieval()
    q1 = np.array([0.0, 0.5, 1.0])
    m1 = np.array([0.0, 0.2, 1.0])
    values = model.loss(q1, m1, 1.0)
    expected = 0.25 * (3 * q1**2 - 2 * q1 - 4 * m1**2 + 3)
    np.testing.assert_allclose(values, expected, rtol=1e-15)
    assert values[2] == 0.0  # zero loss at w = w*


def test_loss_kernel_matches_loss():
    model = PhaseRetrieval()
    for q1, m1, rho1 in [(0.3, -0.1, 1.0), (2.0, 1.5, 0.7), (0.0, 0.0, 1.0)]:
        assert model.loss_kernel(q1, m1, rho1) == pytest.approx(model.loss(q1, m1, rho1), rel=1e-15)


def test_loss_of_converged_run_is_zero():
    """The last output of the spectral modes on examples/power_law.toml (K = 163), where the formula gives -1.8e-15."""
    q1, m1, rho1 = 0.999999999999492, 0.9999999999997469, 1.0
    model = PhaseRetrieval()

    # The formula itself rounds to a negative value here (-1.8e-15).
    assert model.loss_kernel(q1, m1, rho1) < 0.0
    assert model.loss(q1, m1, rho1) == 0.0
    assert model.loss(q1, m1, rho1, statistics_operations=326 + 5) == 0.0


def test_loss_of_near_teacher_weights_not_negative():
    """Weights 1e-9 away from the teacher: the true loss is about 1e-18, below the rounding of the sums."""
    dimension = 2000
    eigenvalues = np.arange(1, dimension + 1, dtype=float) ** -EXPONENT
    rng = np.random.default_rng(5)
    teacher = rng.standard_normal(dimension)
    q1, m1, rho1 = [], [], []
    for _ in range(50):
        weights = teacher * (1.0 + 1e-9 * rng.standard_normal(dimension))
        q1.append(np.sum(eigenvalues * weights * weights))
        m1.append(np.sum(eigenvalues * weights * teacher))
        rho1.append(np.sum(eigenvalues * teacher * teacher))
    q1, m1, rho1 = np.array(q1), np.array(m1), np.array(rho1)
    model = PhaseRetrieval()

    formula = np.array([model.loss_kernel(*point) for point in zip(q1, m1, rho1)])
    values = model.loss(q1, m1, rho1, statistics_operations=dimension + 2)

    assert np.any(formula < 0.0), "no negative rounding value to clear; change the seed"
    assert np.all(values >= 0.0)
    np.testing.assert_array_equal(values[formula >= 0.0], formula[formula >= 0.0])


def test_loss_of_inconsistent_state_kept(caplog):
    """m1 > sqrt(q1 rho1) by 1e-3: no real weights have these statistics, and F = -2.001e-3."""
    model = PhaseRetrieval()
    q1 = np.array([1.0, 0.5, 1.0])
    m1 = np.array([1.001, 0.2, 1.0 + 1e-8])

    with caplog.at_level(logging.WARNING, logger="hierarchy.model"):
        values = model.loss(q1, m1, 1.0, statistics_operations=1000, description="the loss of a test state")

    assert values[0] == pytest.approx(-2.001e-3, rel=1e-12)
    assert values[1] == pytest.approx(0.25 * (3 * 0.25 - 1.0 - 4 * 0.04 + 3), rel=1e-15)
    assert values[2] == pytest.approx(-2e-8, rel=1e-6)
    assert "the loss of a test state is negative beyond rounding at 2 of 3 points" in caplog.text
    assert "lowest -0.002" in caplog.text


def test_loss_rounding_bound_values():
    # At |q1| = |m1| = |rho1| = 1 the terms of F sum to 3 in absolute value, and sum |x dF/dx| = 6.
    evaluation = 6 * UNIT_ROUNDOFF / (1 - 6 * UNIT_ROUNDOFF)
    inputs = 1000 * UNIT_ROUNDOFF / (1 - 1000 * UNIT_ROUNDOFF)

    exact_inputs = phase_retrieval.loss_rounding_bound(1.0, 1.0, 1.0, 0)
    rounded_inputs = phase_retrieval.loss_rounding_bound(1.0, -1.0, 1.0, 1000)

    assert exact_inputs == pytest.approx(3 * evaluation, rel=1e-14)
    assert rounded_inputs == pytest.approx(3 * evaluation + 6 * inputs, rel=1e-14)


def test_evaluate_loss_clears_only_rounding():
    kernels = types.SimpleNamespace(
        loss=lambda q1, m1, rho1: np.array([-1e-16, -1e-15, -1e-10, 0.5, np.nan, -np.inf, -np.inf]),
        loss_rounding_bound=lambda q1, m1, rho1, operations: np.array([1e-15] * 6 + [np.inf]),
    )

    values = evaluate_loss(kernels, np.ones(7), np.ones(7), 1.0)

    np.testing.assert_array_equal(values, [0.0, 0.0, -1e-10, 0.5, np.nan, -np.inf, -np.inf])


def test_evaluate_loss_keeps_scalars():
    kernels = types.SimpleNamespace(loss=lambda q1, m1, rho1: -1e-17, loss_rounding_bound=lambda *arguments: 1e-15)

    value = evaluate_loss(kernels, 1.0, 1.0, 1.0)

    assert type(value) is float
    assert value == 0.0


def test_gradient_matches_finite_differences(problem):
    """Check grad_w L = -(alpha Σw + beta Σw*) against central differences of L(w)."""
    eigenvalues, weights, teacher = problem
    model = PhaseRetrieval()

    def population_loss(w):
        return model.loss(*_statistics(eigenvalues, w, teacher))

    alpha, beta = model.drive(*_statistics(eigenvalues, weights, teacher))[:2]
    gradient = -(alpha * eigenvalues * weights + beta * eigenvalues * teacher)

    step = 1e-5
    finite_difference = np.empty(DIMENSION)
    for i in range(DIMENSION):
        offset = np.zeros(DIMENSION)
        offset[i] = step
        finite_difference[i] = (population_loss(weights + offset) - population_loss(weights - offset)) / (2 * step)

    relative_error = np.linalg.norm(finite_difference - gradient) / np.linalg.norm(gradient)
    assert relative_error < 1e-6


@pytest.mark.parametrize("q1, m1, rho1", [(0.3, -0.1, 1.0), (1.7, 0.9, 0.6), (1 / 3, 0.05, 1.0)])
def test_drive_matches_loss_derivatives(q1, m1, rho1):
    """Check alpha = -2 dF/dq_1 and beta = -dF/dm_1 by central differences of the loss."""
    model = PhaseRetrieval()
    alpha, beta = model.drive(q1, m1, rho1)[:2]
    step = 1e-6

    dF_dq1 = (model.loss(q1 + step, m1, rho1) - model.loss(q1 - step, m1, rho1)) / (2 * step)
    dF_dm1 = (model.loss(q1, m1 + step, rho1) - model.loss(q1, m1 - step, rho1)) / (2 * step)

    assert alpha == pytest.approx(-2 * dF_dq1, rel=1e-7, abs=1e-9)
    assert beta == pytest.approx(-dF_dm1, rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("q1, m1, rho1", [(0.3, -0.1, 1.0), (1.7, 0.9, 0.6), (1 / 3, 0.05, 1.0)])
def test_drive_derivatives_match_finite_differences(q1, m1, rho1):
    model = PhaseRetrieval()
    _, _, dalpha_dq1, dalpha_dm1, dbeta_dq1, dbeta_dm1 = model.drive(q1, m1, rho1)
    step = 1e-6

    alpha_q_plus, beta_q_plus = model.drive(q1 + step, m1, rho1)[:2]
    alpha_q_minus, beta_q_minus = model.drive(q1 - step, m1, rho1)[:2]
    alpha_m_plus, beta_m_plus = model.drive(q1, m1 + step, rho1)[:2]
    alpha_m_minus, beta_m_minus = model.drive(q1, m1 - step, rho1)[:2]

    assert dalpha_dq1 == pytest.approx((alpha_q_plus - alpha_q_minus) / (2 * step), abs=1e-8)
    assert dalpha_dm1 == pytest.approx((alpha_m_plus - alpha_m_minus) / (2 * step), abs=1e-8)
    assert dbeta_dq1 == pytest.approx((beta_q_plus - beta_q_minus) / (2 * step), abs=1e-8)
    assert dbeta_dm1 == pytest.approx((beta_m_plus - beta_m_minus) / (2 * step), abs=1e-8)


def test_drive_values_and_float_outputs():
    values = PhaseRetrieval().drive(0.5, 0.25, 1.0)
    assert values == (1.0 - 1.5, 0.5, -3.0, 0.0, 0.0, 2.0)
    assert all(isinstance(value, float) for value in values)


def test_drive_is_first_class_function():
    """Pass the drive to compiled code typed with the shared DriveType signature."""

    @numba.njit(numba.float64(DriveType, numba.float64, numba.float64, numba.float64))
    def alpha_plus_beta(drive, q1, m1, rho1):
        values = drive(q1, m1, rho1)
        return values[0] + values[1]

    assert alpha_plus_beta(PhaseRetrieval().drive, 0.5, 0.25, 1.0) == pytest.approx(0.0)
