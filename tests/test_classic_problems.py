"""Every integrator against published reference solutions of classic stiff test problems.

The problems and their reference values come from the Test Set for IVP
Solvers (F. Mazzia and C. Magherini, University of Bari); see
``stiff_problems.py``. Each method runs at several tolerances, and the
relative error of every component at the final time is checked against a
bound taken from measurement, and for a fall as the tolerance falls.
"""

import functools

import numpy as np
import pytest

from hierarchy.integrators import IntegrationStatus, solve
from hierarchy.integrators.system import no_drive

from stiff_problems import (
    HIRES_REFERENCE,
    HIRES_REFERENCE_T,
    OREGO_REFERENCE,
    OREGO_REFERENCE_T,
    POLLU_REFERENCE,
    POLLU_REFERENCE_T,
    VDPOL_REFERENCE,
    VDPOL_REFERENCE_T,
    hires,
    orego,
    pollu,
    vdpol,
)

PROBLEMS = {
    "vdpol": (vdpol, VDPOL_REFERENCE_T, VDPOL_REFERENCE),
    "hires": (hires, HIRES_REFERENCE_T, HIRES_REFERENCE),
    "orego": (orego, OREGO_REFERENCE_T, OREGO_REFERENCE),
    "pollu": (pollu, POLLU_REFERENCE_T, POLLU_REFERENCE),
}
RTOLS = (1e-4, 1e-6, 1e-8, 1e-10)

# atol = ATOL_PER_RTOL * rtol lies below every reference component except
# POLLU's y16 (4.4e-18). That one follows y4 through a fast equilibrium,
# y16 = k16 y4 / (k18 + k19), so its relative error follows rtol as well.
ATOL_PER_RTOL = 1e-6

# Measured maximum relative error over the components, divided by rtol, for
# rtol = 1e-4, 1e-6, 1e-8, 1e-10. Radau5 tests its local
# error against 0.1 rtol^(2/3), so its ratio grows as rtol falls. BDF's
# ratio on OREGO grows too, and SciPy 1.17's BDF with the same tolerances
# and Jacobian measures 4.2, 66, 139, 294 there.
MEASURED_ERROR_PER_RTOL = {
    ("vdpol", "rodas4"): (0.11, 0.11, 0.044, 0.29),
    ("vdpol", "radau5"): (0.018, 0.13, 0.14, 0.32),
    ("vdpol", "bdf"): (9.0, 14.0, 12.0, 8.3),
    ("hires", "rodas4"): (0.12, 0.058, 0.0068, 0.013),
    ("hires", "radau5"): (0.38, 0.13, 5.3, 17.0),
    ("hires", "bdf"): (3.9, 4.3, 6.0, 19.0),
    ("orego", "rodas4"): (2.7, 2.1, 2.1, 1.4),
    ("orego", "radau5"): (0.45, 0.64, 2.4, 5.4),
    ("orego", "bdf"): (25.0, 71.0, 140.0, 320.0),
    ("pollu", "rodas4"): (0.061, 0.029, 0.33, 0.27),
    ("pollu", "radau5"): (0.029, 1.5, 0.93, 6.9),
    ("pollu", "bdf"): (0.97, 0.63, 1.6, 4.3),
}
# The bound is SAFETY_FACTOR times the measured ratio, but never below
# rtol itself, so that a lucky small error does not make the bound brittle.
SAFETY_FACTOR = 10.0
MIN_BOUND_PER_RTOL = 1.0


@functools.lru_cache(maxsize=None)
def _relative_error(problem, method, rtol):
    """Return the maximum relative error of any component at the reference time."""
    build, t_reference, reference = PROBLEMS[problem]
    solution = solve(build(), [t_reference], method=method, rtol=rtol, atol=ATOL_PER_RTOL * rtol)
    assert solution.status is IntegrationStatus.SUCCESS, solution.message
    return float(np.max(np.abs(solution.observables[-1] / reference - 1.0)))


def _accuracy_cases():
    for problem, method in MEASURED_ERROR_PER_RTOL:
        for rtol in RTOLS:
            yield pytest.param(problem, method, rtol, id=f"{problem}-{method}-{rtol:g}")


@pytest.mark.parametrize("problem, method, rtol", list(_accuracy_cases()))
def test_error_within_measured_bound(problem, method, rtol):
    measured = MEASURED_ERROR_PER_RTOL[problem, method][RTOLS.index(rtol)]
    bound = max(SAFETY_FACTOR * measured, MIN_BOUND_PER_RTOL) * rtol
    assert _relative_error(problem, method, rtol) < bound


@pytest.mark.parametrize("problem, method", list(MEASURED_ERROR_PER_RTOL))
def test_error_falls_with_tolerance(problem, method):
    errors = [_relative_error(problem, method, rtol) for rtol in RTOLS]
    for looser, tighter in zip(errors, errors[1:]):
        assert tighter < looser, errors
    # Six decades of rtol gain at least two decades of accuracy. The smallest
    # gain measured is 4e3 (radau5 on POLLU).
    assert errors[-1] < 1e-2 * errors[0], errors


def _dense_jacobian(system, y):
    n = system.size
    band = np.zeros((n, system.kl + system.ku + 1))
    no_columns = np.zeros((n, 0))
    system.jac(0.0, y, system.params, no_drive, band, no_columns, no_columns)
    jacobian = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            jacobian[i, j] = band[i, system.kl + j - i]
    return jacobian


def _finite_difference_jacobian(system, y):
    """Return the central-difference Jacobian, which is exact up to rounding for the quadratic rates of HIRES, OREGO and POLLU."""
    n = system.size
    jacobian = np.zeros((n, n))
    f_plus, f_minus = np.zeros(n), np.zeros(n)
    for j in range(n):
        step = 1e-4 * abs(y[j])
        y_plus, y_minus = y.copy(), y.copy()
        y_plus[j] += step
        y_minus[j] -= step
        system.rhs(0.0, y_plus, system.params, no_drive, f_plus)
        system.rhs(0.0, y_minus, system.params, no_drive, f_minus)
        jacobian[:, j] = (f_plus - f_minus) / (2.0 * step)
    return jacobian


@pytest.mark.parametrize("problem", list(PROBLEMS))
@pytest.mark.parametrize("state", ["reference", "generic"])
def test_jacobian_matches_finite_differences(problem, state):
    build, _, reference = PROBLEMS[problem]
    system = build()
    y = reference.copy() if state == "reference" else np.linspace(0.5, 1.5, system.size)
    # Entry (i, j) times y_j is the change of f_i under a relative change of
    # y_j. Comparing it with the largest such change in row i keeps entries
    # that are small in absolute terms, but matter for the row, in the test.
    analytic = _dense_jacobian(system, y) * np.abs(y)
    numeric = _finite_difference_jacobian(system, y) * np.abs(y)
    row_scale = np.max(np.abs(analytic), axis=1, keepdims=True)
    assert np.all(np.abs(analytic - numeric) <= 1e-9 * row_scale)
