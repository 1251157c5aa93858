"""The ridge penalty in every truncation, against the closed form of ridge linear regression."""

import numpy as np
import pytest

from hierarchy.integrators import solve
from hierarchy.model import SingleIndexModel
from hierarchy.spectrum import PowerLawSpec
from hierarchy.truncation import build_exact_flow, build_moment_hierarchy, build_spectral_modes, build_spectral_rule

MU = 0.05


@pytest.fixture(scope="module")
def ridge_linear_model():
    return SingleIndexModel("z", "z", ridge=MU)


def _closed_form(problem, t):
    """Linear regression with c = 1/4: dw_i/dt = lam_i (w*_i - w_i) / 2 - mu w_i, solved per coordinate."""
    rate = problem.lam / 2 + MU
    w_limit = (problem.lam / 2) * problem.wstar / rate
    w = w_limit + (problem.w0 - w_limit) * np.exp(-np.outer(t, rate))
    return w @ (problem.lam * problem.wstar), (w**2) @ problem.lam


def test_ridge_in_exact_flow_and_modes(ridge_linear_model):
    problem = PowerLawSpec(d=60, a=1.2, b=0.0, sigma0=0.3, seed=1).build()
    t_out = np.geomspace(0.1, 1e4, 40)
    m1_expected, q1_expected = _closed_form(problem, t_out)
    rule = build_spectral_rule(problem, exact_top=problem.d)
    for system in (build_exact_flow(problem, ridge_linear_model), build_spectral_modes(problem, ridge_linear_model, rule)):
        solution = solve(system, t_out, rtol=1e-11, atol=1e-15)
        assert solution.success
        assert np.max(np.abs(solution.observable("m1") / m1_expected - 1)) < 1e-8, system.name
        assert np.max(np.abs(solution.observable("q1") / q1_expected - 1)) < 1e-8, system.name
    # The penalty shrinks the limit below the teacher: m_1(inf) < rho_1.
    assert m1_expected[-1] < 0.999 * problem.rho1


def test_ridge_in_moment_hierarchy_isotropic(ridge_linear_model):
    """Sigma = I: the copy closure at K = 1 is exact, with the ridge terms -mu m_1 and -2 mu q_1."""
    problem = PowerLawSpec(d=30, a=0.0, b=0.0, sigma0=0.5, seed=2).build()
    t_out = np.geomspace(0.1, 100.0, 30)
    m1_expected, q1_expected = _closed_form(problem, t_out)
    solution = solve(build_moment_hierarchy(problem, ridge_linear_model, 1, "copy"), t_out, rtol=1e-11, atol=1e-15)
    assert np.max(np.abs(solution.observable("m1") / m1_expected - 1)) < 1e-8
    assert np.max(np.abs(solution.observable("q1") / q1_expected - 1)) < 1e-8


def test_negative_ridge_rejected():
    from hierarchy.truncation.ridge import ridge_of

    class Model:
        ridge = -1.0

    with pytest.raises(ValueError, match="ridge"):
        ridge_of(Model())
