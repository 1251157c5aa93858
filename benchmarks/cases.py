"""The systems benchmarked: spectral modes for a range of K, the exact flow for a range of d.

Every case is phase retrieval with a power-law spectrum ``lam_i = i^(-1.5)``
and a flat teacher profile (``b = 0``), integrated from t = 0 to ``T_END`` and
observed at ``OUTPUT_TIMES``.
"""

import math
from dataclasses import dataclass

import numpy as np

from hierarchy.model import PhaseRetrieval
from hierarchy.spectrum import PowerLawSpec
from hierarchy.truncation import build_exact_flow, build_spectral_modes, build_spectral_rule

from peers import LowRankProblem

T_END = 1e7
# 81 log-spaced output times from 0.1 to T_END (t = 0 is the initial state).
OUTPUT_TIMES = np.logspace(-1.0, math.log10(T_END), 81)
SPECTRAL_EXPONENT = 1.5
RULE_ORDER = 6
EXACT_TOP = 8

MODEL = PhaseRetrieval()


@dataclass
class Case:
    """One system to integrate, with its peer callbacks and the labels of the report."""

    name: str
    family: str  # "spectral modes (d = inf)", "spectral modes (d = 20000)" or "exact flow"
    K: int | None  # modes (state size 2K) for spectral modes
    d: float  # dimension of the problem, math.inf for the d = inf rule
    bins_per_decade: int | None
    system: object
    peer_problem: LowRankProblem
    rho1: float

    @property
    def size(self) -> int:
        return self.system.size


def work_precision_case() -> Case:
    """Return the K ~ 600 system of the work-precision sweep: d = 20000, 20 bins per decade, 6-point rules."""
    problem = PowerLawSpec(d=20000, a=SPECTRAL_EXPONENT, b=0, sigma0=0.1, seed=0).build()
    rule = build_spectral_rule(problem, 20, RULE_ORDER, EXACT_TOP)
    system = build_spectral_modes(problem, MODEL, rule)
    return Case(
        name=f"modes K={rule.size} (d=20000, 20 bins/decade)",
        family="spectral modes (d = 20000)",
        K=rule.size,
        d=20000,
        bins_per_decade=20,
        system=system,
        peer_problem=LowRankProblem.spectral_modes(problem, MODEL, rule),
        rho1=problem.rho1,
    )


def spectral_mode_case(bins_per_decade: int) -> Case:
    """Return the K-mode system of the d = inf problem with ``bins_per_decade`` bins of 6-point rules.

    The start is ``w(0) = 1e-3 w*`` plus an isotropic part of scale 0.1
    (``init_teacher_scale = 1e-3``); the rule's floor is placed for the
    horizon ``T_END``.
    """
    problem = PowerLawSpec(d=math.inf, a=SPECTRAL_EXPONENT, b=0, sigma0=0.1, init_teacher_scale=1e-3).build()
    rule = build_spectral_rule(problem, bins_per_decade, RULE_ORDER, EXACT_TOP, t_end=T_END)
    system = build_spectral_modes(problem, MODEL, rule)
    return Case(
        name=f"modes K={rule.size} (d=inf, {bins_per_decade} bins/decade)",
        family="spectral modes (d = inf)",
        K=rule.size,
        d=math.inf,
        bins_per_decade=bins_per_decade,
        system=system,
        peer_problem=LowRankProblem.spectral_modes(problem, MODEL, rule),
        rho1=problem.rho1,
    )


def exact_flow_case(d: int) -> Case:
    """Return the exact d-dimensional flow from a random start of scale 0.1 (seed 0)."""
    problem = PowerLawSpec(d=d, a=SPECTRAL_EXPONENT, b=0, sigma0=0.1, seed=0).build()
    system = build_exact_flow(problem, MODEL)
    return Case(
        name=f"exact flow d={d}",
        family="exact flow",
        K=None,
        d=d,
        bins_per_decade=None,
        system=system,
        peer_problem=LowRankProblem.exact_flow(problem, MODEL),
        rho1=problem.rho1,
    )


def check_peer_callbacks(case: Case, samples: int = 3, seed: int = 1) -> float:
    """Return the largest relative difference of the peers' initial state and NumPy callbacks from the compiled system.

    The callbacks are compared at the initial state and at random
    perturbations of it, so that the peers are timed on the equations that
    ``solve`` integrates.
    """
    system = case.system
    if system.kl or system.ku:
        raise ValueError(f"{case.name}: the peers model a diagonal core, but kl = {system.kl}, ku = {system.ku}")
    n = system.size
    rng = np.random.default_rng(seed)
    params = np.ascontiguousarray(system.params, dtype=np.float64)
    if case.peer_problem.y0.shape != system.y0.shape:
        return np.inf
    largest = float(np.max(np.abs(case.peer_problem.y0 - system.y0)) / max(np.max(np.abs(system.y0)), 1e-300))
    for sample in range(samples):
        y = np.array(system.y0, dtype=np.float64)
        if sample:
            y = y + 0.1 * rng.standard_normal(n) * (np.abs(y) + 1e-3)
        compiled_rhs = np.empty(n)
        system.rhs(0.0, y, params, system.drive, compiled_rhs)
        numpy_rhs = case.peer_problem.rhs(0.0, y)
        largest = max(largest, float(np.max(np.abs(numpy_rhs - compiled_rhs)) / max(np.max(np.abs(compiled_rhs)), 1e-300)))

        band = np.zeros((n, system.kl + system.ku + 1))
        U = np.zeros((n, system.rank))
        V = np.zeros((n, system.rank))
        system.jac(0.0, y, params, system.drive, band, U, V)
        D, peer_U, peer_V = case.peer_problem.jacobian_parts(y)
        # Compare J x for a random x rather than forming the n x n matrices.
        x = rng.standard_normal(n)
        compiled_product = band[:, system.kl] * x + U @ (V.T @ x)
        peer_product = D * x + peer_U @ (peer_V.T @ x)
        scale = max(float(np.max(np.abs(compiled_product))), 1e-300)
        largest = max(largest, float(np.max(np.abs(peer_product - compiled_product))) / scale)
    return largest
