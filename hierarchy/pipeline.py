"""One run of the data flow: problem and model, truncation, integrator, trajectory."""

from dataclasses import dataclass

import numpy as np

from .integrators import Event, solve
from .spectrum import MAX_DIMENSION
from .trajectory import Trajectory
from .truncation import build_exact_flow, build_moment_hierarchy, build_spectral_modes, build_spectral_rule

TRUNCATION_KINDS = ("exact", "spectral_modes", "moments")
# Gauss-Legendre rules beyond 32 points gain nothing in double precision, and
# 1000 bins per decade already give millions of modes over a few decades.
MAX_RULE_ORDER = 32
MAX_BINS_PER_DECADE = 1000


def phase_events(rho1: float) -> tuple:
    """Return the events located during every integration.

    ``escape``: ``|m_1|`` reaches ``rho_1 / 2``; ``saddle``: ``q_1`` crosses
    ``rho_1 / 3``, where ``alpha = rho_1 - 3 q_1`` of phase retrieval vanishes.
    """
    return (
        Event("escape", "m1", 0.5 * rho1, absolute=True),
        Event("saddle", "q1", rho1 / 3.0),
    )


@dataclass(frozen=True)
class TruncationOptions:
    """Which truncation to integrate, with its parameters.

    ``kind`` is one of ``exact``, ``spectral_modes``, ``moments``. The
    spectral-mode rule uses ``bins_per_decade``, ``rule_order``,
    ``exact_top`` and ``exact_bottom``; the moment hierarchy uses ``order``
    and ``closure``.
    """

    kind: str = "spectral_modes"
    bins_per_decade: int = 8
    rule_order: int = 6
    exact_top: int = 8
    exact_bottom: int = 0
    order: int = 4
    closure: str = "zero"

    def __post_init__(self):
        if self.kind not in TRUNCATION_KINDS:
            raise ValueError(f"truncation kind = {self.kind!r} is not available; choose one of {list(TRUNCATION_KINDS)}")
        bounds = (
            ("bins_per_decade", 1, MAX_BINS_PER_DECADE),
            ("rule_order", 1, MAX_RULE_ORDER),
            ("exact_top", 0, MAX_DIMENSION),
            ("exact_bottom", 0, MAX_DIMENSION),
            ("order", 1, 10_000),
        )
        for name, lower, upper in bounds:
            value = getattr(self, name)
            if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and lower <= value <= upper):
                raise ValueError(f"truncation {name} = {value!r} is invalid: it must be an integer in [{lower}, {upper}]")


@dataclass(frozen=True)
class SolverOptions:
    """Output grid and integrator settings.

    The output grid is ``n_out`` log-spaced times from ``t_first`` to
    ``t_end``. ``max_steps`` and ``max_wall_seconds`` bound the run.
    """

    t_first: float = 1e-2
    t_end: float = 1e7
    n_out: int = 200
    method: str = "rodas4"
    rtol: float = 1e-8
    atol: float = 1e-12
    max_steps: int = 2_000_000
    max_wall_seconds: float | None = None

    def __post_init__(self):
        if not (isinstance(self.t_first, (int, float)) and 0.0 < self.t_first < float("inf")):
            raise ValueError(f"solver t_first = {self.t_first!r} is invalid: it must be a positive finite time")
        if not (isinstance(self.t_end, (int, float)) and self.t_first < self.t_end < float("inf")):
            raise ValueError(f"solver t_end = {self.t_end!r} is invalid: it must be finite and larger than t_first = {self.t_first!r}")
        if not (isinstance(self.n_out, int) and not isinstance(self.n_out, bool) and 2 <= self.n_out <= 10**6):
            raise ValueError(f"solver n_out = {self.n_out!r} is invalid: it must be an integer in [2, 1000000]")

    def output_times(self) -> np.ndarray:
        """Return the log-spaced output grid."""
        return np.geomspace(self.t_first, self.t_end, self.n_out)


def build_system(problem, model, truncation: TruncationOptions, solver: "SolverOptions"):
    """Return the ``StructuredSystem`` of ``problem`` (finite or ``d = inf``) for the requested truncation."""
    if truncation.kind == "exact":
        return build_exact_flow(problem, model)
    if truncation.kind == "spectral_modes":
        rule = build_spectral_rule(
            problem,
            truncation.bins_per_decade,
            truncation.rule_order,
            truncation.exact_top,
            truncation.exact_bottom,
            t_end=solver.t_end,
        )
        return build_spectral_modes(problem, model, rule)
    return build_moment_hierarchy(problem, model, truncation.order, truncation.closure)


def integrate_problem(problem, model, truncation: TruncationOptions, solver: SolverOptions) -> Trajectory:
    """Build the truncation, integrate it on the solver's output grid and return the trajectory."""
    system = build_system(problem, model, truncation, solver)
    solution = solve(
        system,
        solver.output_times(),
        method=solver.method,
        rtol=solver.rtol,
        atol=solver.atol,
        max_steps=solver.max_steps,
        max_wall_seconds=solver.max_wall_seconds,
        events=phase_events(problem.rho1),
    )
    return Trajectory.from_solution(solution, model, problem.rho(1), problem.rho(2), system.name, system.size)
