"""The compiled Radau IIA (order 5) integrator: coefficients, standard stiff problems, structured systems, failures."""

import numpy as np
import pytest

from hierarchy.integrators import METHODS, IntegrationStatus, solve
from hierarchy.integrators import radau5
from hierarchy.model import PhaseRetrieval
from hierarchy.spectrum import PowerLawSpec
from hierarchy.truncation import build_exact_flow, build_moment_hierarchy

from stiff_problems import (
    ROBERTSON_REFERENCE,
    ROBERTSON_REFERENCE_T,
    blowup,
    logistic,
    logistic_exact,
    robertson,
    van_der_pol,
)

ROBERTSON_RTOLS = (1e-4, 1e-6, 1e-8, 1e-10)


def _robertson_error(rtol):
    solution = solve(
        robertson(), np.geomspace(1e-5, ROBERTSON_REFERENCE_T, 17), method="radau5", rtol=rtol, atol=1e-14 * rtol
    )
    assert solution.status is IntegrationStatus.SUCCESS
    return np.max(np.abs(solution.observables[-1] / ROBERTSON_REFERENCE - 1.0))


def test_method_registered():
    method = METHODS["radau5"]
    assert method.name == "radau5"
    assert method.order == 5


def test_nodes_are_radau_points():
    sqrt6 = np.sqrt(6.0)
    assert np.allclose(radau5.NODES, [(4.0 - sqrt6) / 10.0, (4.0 + sqrt6) / 10.0, 1.0], rtol=0, atol=1e-15)


def test_butcher_matrix_satisfies_collocation_conditions():
    a, nodes = radau5.BUTCHER_A, radau5.NODES
    for k in (1, 2, 3):
        assert np.allclose(a @ nodes ** (k - 1), nodes**k / k, rtol=0, atol=1e-14)
    # The weights b (last row of A) integrate polynomials of degree 4 exactly, so the order is 5.
    weights = a[2]
    for k in range(1, 6):
        assert weights @ nodes ** (k - 1) == pytest.approx(1.0 / k, abs=1e-14)


def test_transform_block_diagonalises_inverse():
    blocks = radau5.TRANSFORM_INVERSE @ np.linalg.inv(radau5.BUTCHER_A) @ radau5.TRANSFORM
    expected = np.array(
        [
            [radau5.GAMMA, 0.0, 0.0],
            [0.0, radau5.ALPHA, -radau5.BETA],
            [0.0, radau5.BETA, radau5.ALPHA],
        ]
    )
    assert np.allclose(blocks, expected, rtol=0, atol=1e-12)
    assert np.allclose(radau5.TRANSFORM @ radau5.TRANSFORM_INVERSE, np.eye(3), rtol=0, atol=1e-14)
    assert radau5.BETA > 0.0
    # det(I - z A) is the denominator 1 - 3z/5 + 3z^2/20 - z^3/60 of the (2, 3)
    # Pade approximant of exp(z), so the eigenvalues of A^{-1} are the roots
    # of mu^3 - 9 mu^2 + 36 mu - 60.
    roots = np.roots([1.0, -9.0, 36.0, -60.0])
    real_root = roots[np.argmin(np.abs(roots.imag))].real
    pair_root = roots[np.argmax(roots.imag)]
    assert radau5.GAMMA == pytest.approx(real_root, rel=1e-13)
    assert radau5.ALPHA == pytest.approx(pair_root.real, rel=1e-13)
    assert radau5.BETA == pytest.approx(pair_root.imag, rel=1e-13)


def test_error_weights_give_order_three_embedded_formula():
    # y_hat - y_new = h b0_hat f(y0) + h sum_i (b_hat_i - b_i) f(Y_i) with
    # h F = A^{-1} Z, so b_hat = b + A^T e / gamma and b0_hat = 1 / gamma.
    a, nodes, gamma = radau5.BUTCHER_A, radau5.NODES, radau5.GAMMA
    b_hat = a[2] + a.T @ radau5.ERROR_WEIGHTS / gamma
    b0_hat = 1.0 / gamma
    assert b0_hat + b_hat.sum() == pytest.approx(1.0, abs=1e-14)
    assert b_hat @ nodes == pytest.approx(0.5, abs=1e-14)
    assert b_hat @ nodes**2 == pytest.approx(1.0 / 3.0, abs=1e-14)
    # Not order 4, otherwise the estimate would vanish at leading order.
    assert abs(b_hat @ nodes**3 - 0.25) > 1e-3


def test_dense_output_interpolates_stages():
    # The cubic sum_p d_p theta^p with d = DENSE_OUTPUT @ Z passes through Z_i at theta = c_i.
    rng = np.random.default_rng(5)
    stages = rng.standard_normal(3)
    coefficients = radau5.DENSE_OUTPUT @ stages
    for node, stage in zip(radau5.NODES, stages):
        value = sum(coefficients[p] * node ** (p + 1) for p in range(3))
        assert value == pytest.approx(stage, abs=1e-13)


@pytest.mark.parametrize("rtol", ROBERTSON_RTOLS)
def test_robertson_reaches_reference(rtol):
    # Measured: relative errors of 0.02 to 0.08 rtol over this range.
    assert _robertson_error(rtol) < 10 * rtol


def test_robertson_error_falls_with_tolerance():
    errors = [_robertson_error(rtol) for rtol in ROBERTSON_RTOLS]
    for looser, tighter in zip(errors, errors[1:]):
        assert tighter < looser


def test_robertson_conserves_mass():
    solution = solve(robertson(), np.geomspace(1e-5, 1e11, 50), method="radau5", rtol=1e-8, atol=1e-20)
    assert solution.success
    assert np.max(np.abs(solution.observables.sum(axis=1) - 1.0)) < 1e-12


def test_robertson_fewer_steps_than_rodas4():
    t_out = [ROBERTSON_REFERENCE_T]
    radau = solve(robertson(), t_out, method="radau5", rtol=1e-8, atol=1e-22)
    rodas = solve(robertson(), t_out, method="rodas4", rtol=1e-8, atol=1e-22)
    assert radau.success
    assert rodas.success
    # Measured: about 640 steps against 1670.
    assert radau.stats["steps"] < rodas.stats["steps"]


def test_step_statistics_are_consistent():
    solution = solve(robertson(), [ROBERTSON_REFERENCE_T], method="radau5", rtol=1e-6, atol=1e-20)
    stats = solution.stats
    assert stats["steps"] == stats["accepted"] + stats["rejected"]
    # One real and one complex factorisation per attempted step.
    assert stats["factorizations"] == 2 * stats["steps"]
    assert stats["newton_iterations"] >= stats["accepted"]
    # Three stage evaluations per Newton iteration, one f(y) per accepted step, one at the start.
    assert stats["rhs_evaluations"] >= 3 * stats["newton_iterations"] + stats["accepted"] + 1
    assert 0 < stats["jacobian_evaluations"] <= stats["steps"]


def test_logistic_convergence_order():
    """Error against the exact solution falls like steps^(-5) or faster for the order-5 method."""
    # Four output times, fewer than the steps at every rtol, so every output
    # is a step point and the fit measures the steps, not the collocation cubic.
    t_out = np.array([2.5, 5.0, 7.5, 10.0])
    steps, errors = [], []
    for rtol in np.geomspace(1e-5, 1e-11, 13):
        solution = solve(logistic(), t_out, method="radau5", rtol=rtol, atol=rtol)
        assert solution.success
        steps.append(solution.stats["accepted"])
        errors.append(np.max(np.abs(solution.observables[:, 0] - logistic_exact(t_out))))
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    # Measured: -6.22 (20 to 143 steps), and -5.91 and -6.61 for the rtol
    # ranges 1e-6..1e-12 and 1e-4..1e-10: the adaptive step sequence moves
    # the fitted slope by a few tenths.
    assert -6.9 < slope < -5.0


@pytest.mark.parametrize("rtol", [1e-8, 1e-10])
def test_sparse_outputs_meet_tolerance(rtol):
    t_out = np.linspace(0.5, 12.0, 24)
    solution = solve(logistic(), t_out, method="radau5", rtol=rtol, atol=1e-3 * rtol)
    assert solution.success
    # Every output time ends a step, so the outputs are as accurate as the
    # steps (measured: 0.19 rtol and 0.47 rtol). Taken from the collocation
    # cubic inside longer steps, they had errors of 6.9 rtol and 27 rtol.
    assert np.max(np.abs(solution.observables[:, 0] - logistic_exact(t_out))) < rtol


@pytest.mark.parametrize("rtol", [1e-5, 1e-7, 1e-9])
def test_dense_grid_keeps_long_steps(rtol):
    t_out = np.linspace(0.01, 12.0, 997)
    solution = solve(logistic(), t_out, method="radau5", rtol=rtol, atol=1e-3 * rtol)
    assert solution.success
    # Far more outputs than steps: each step ends on the last output time in
    # its reach, and the outputs inside it come from the collocation cubic.
    assert solution.stats["accepted"] < t_out.size / 4
    # The cubic is accurate to O(h^4), like the error estimate, so its error
    # follows the tolerance of the local error test, 0.1 rtol^(2/3), rather
    # than rtol (measured: 0.14 to 0.26 of it).
    local_tolerance = 0.1 * rtol ** (2.0 / 3.0)
    assert np.max(np.abs(solution.observables[:, 0] - logistic_exact(t_out))) < 0.5 * local_tolerance


def test_step_count_independent_of_output_density():
    # Where the grid is denser than the steps, a step ends on the last output
    # time in its reach, so a thousand times more output times do not
    # multiply the steps (measured: 71 and 52 accepted steps).
    coarse = solve(logistic(), np.linspace(0.01, 12.0, 100), method="radau5", rtol=1e-7, atol=1e-10)
    fine = solve(logistic(), np.linspace(0.01, 12.0, 100_000), method="radau5", rtol=1e-7, atol=1e-10)
    assert coarse.success
    assert fine.success
    assert fine.stats["accepted"] <= 1.5 * coarse.stats["accepted"]


def test_rounding_close_outputs_share_step():
    # The last two output times differ by one unit of rounding. A step
    # between them would be below the step-size collapse limit, so the step
    # ends on the last one and the other is taken from the dense output.
    t_out = np.array([1.0, 2.0, np.nextafter(2.0, 3.0)])
    solution = solve(logistic(), t_out, method="radau5", rtol=1e-8, atol=1e-11)
    assert solution.success
    assert solution.t_reached == t_out[-1]
    assert np.max(np.abs(solution.observables[:, 0] - logistic_exact(t_out))) < 1e-8


def test_close_output_chain_stays_in_reach():
    # With rate 1e6 the steps near t = 100 + 4e-6 are about 1e-9 long. The
    # 200000 output times there lie 100 units of rounding apart, each within
    # rounding of its neighbour, and the chain spans 2.8e-7. Extending the
    # step end along the whole chain made every step fail its error test.
    t0 = 100.0
    chain = t0 + 4e-6 + np.arange(200_000) * 100.0 * np.spacing(t0)
    t_out = np.concatenate((chain, [t0 + 1e-5]))
    solution = solve(logistic(rate=1e6), t_out, t0=t0, method="radau5", rtol=1e-10, atol=1e-14, max_steps=2000)
    assert solution.success
    assert solution.stats["steps"] < 1000
    exact = logistic_exact(t_out, rate=1e6, t0=t0)
    assert np.max(np.abs(solution.observables[:, 0] - exact)) < 1e-8


def test_output_pairs_avoid_newton_failures():
    # Each output time has a partner 1e-12 later, so every pair forces a very
    # short step. Extrapolating its collocation polynomial to the next, much
    # longer step gave starting values that failed Newton (782 failures).
    grid = np.geomspace(1e-5, ROBERTSON_REFERENCE_T, 60)
    t_out = np.sort(np.concatenate((grid, grid * (1.0 + 1e-12))))
    solution = solve(robertson(), t_out, method="radau5", rtol=1e-8, atol=1e-14)
    assert solution.success
    assert solution.stats["newton_failures"] <= 10
    assert np.max(np.abs(solution.observables[-1] / ROBERTSON_REFERENCE - 1.0)) < 1e-6


def test_van_der_pol_stiff_periodic_orbit():
    """Stiff Van der Pol (eps = 1e-6): |y1| <= 2.01, y1 changes sign, and rodas4 agrees."""
    t_out = np.linspace(0.0, 2.0, 201)
    solution = solve(van_der_pol(1e-6), t_out, method="radau5", rtol=1e-6, atol=1e-8)
    assert solution.status is IntegrationStatus.SUCCESS
    y1 = solution.observables[:, 0]
    assert np.max(np.abs(y1)) < 2.01
    assert np.min(y1) < -1.0
    rodas = solve(van_der_pol(1e-6), t_out, method="rodas4", rtol=1e-6, atol=1e-8)
    assert np.max(np.abs(y1 - rodas.observables[:, 0])) < 1e-3


def test_van_der_pol_tolerance_convergence():
    reference = solve(van_der_pol(1e-3), [2.0], method="rodas4", rtol=1e-12, atol=1e-12).observables[-1]
    errors = []
    for rtol in (1e-4, 1e-6, 1e-8):
        solution = solve(van_der_pol(1e-3), [2.0], method="radau5", rtol=rtol, atol=rtol)
        errors.append(np.max(np.abs(solution.observables[-1] - reference)))
    assert errors[1] < errors[0]
    assert errors[2] < errors[1]
    assert errors[2] < 1e-7


def _structured_systems():
    problem = PowerLawSpec(d=50, a=1.5).build()
    model = PhaseRetrieval()
    # The moment hierarchy leaves the exact flow and grows without bound
    # after t of order 10 for this spectrum, so it is compared up to t = 10.
    cases = [
        (build_exact_flow(problem, model), np.geomspace(0.1, 1e6, 40)),
        (build_moment_hierarchy(problem, model, 8, closure="copy"), np.geomspace(0.01, 10.0, 30)),
    ]
    return [pytest.param(system, t_out, id=system.name) for system, t_out in cases]


@pytest.mark.parametrize("system, t_out", _structured_systems())
def test_structured_system_matches_rodas4(system, t_out):
    assert system.rank >= 2
    radau = solve(system, t_out, method="radau5", rtol=1e-11, atol=1e-14)
    rodas = solve(system, t_out, method="rodas4", rtol=1e-11, atol=1e-14)
    assert radau.status is IntegrationStatus.SUCCESS
    assert rodas.status is IntegrationStatus.SUCCESS
    # Measured: at most 5e-9 relative.
    relative = np.abs(radau.observables - rodas.observables) / np.abs(rodas.observables)
    assert np.max(relative) < 1e-7


def test_blowup_reports_failure_near_singularity():
    t_out = np.linspace(0.05, 1.95, 20)
    solution = solve(blowup(), t_out, method="radau5", rtol=1e-8, atol=1e-10)
    assert solution.status in (IntegrationStatus.DIVERGED, IntegrationStatus.STEP_SIZE_COLLAPSE)
    # The discrete solution blows up within the tolerance of t = 1.
    assert solution.t_reached < 1.0 + 1e-6
    assert "t = 1" in solution.message
    # Outputs before the singularity are kept and correct.
    assert solution.t.size == np.count_nonzero(t_out < 1.0)
    assert np.allclose(solution.observables[:, 0], 1.0 / (1.0 - solution.t), rtol=1e-6)


def test_step_budget_stops_and_keeps_outputs():
    t_out = np.geomspace(1e-5, 1e11, 17)
    solution = solve(robertson(), t_out, method="radau5", rtol=1e-8, atol=1e-20, max_steps=50)
    assert solution.status is IntegrationStatus.STEP_BUDGET
    assert solution.stats["steps"] == 50
    assert 0 < solution.t.size < t_out.size
    assert "step budget of 50 steps" in solution.message


def test_output_at_final_time_is_exact_step_end():
    # The last step is clipped to the final output time, which it must not pass.
    solution = solve(logistic(0.25), [0.0, 3.0], method="radau5", rtol=1e-8, atol=1e-10)
    assert solution.success
    assert solution.t_reached == 3.0
    assert solution.observables[0, 0] == 0.25
    assert solution.observables[1, 0] == pytest.approx(logistic_exact(3.0, 0.25), abs=1e-8)
