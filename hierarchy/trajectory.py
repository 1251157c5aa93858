"""A trajectory of the summary statistics: what every truncation hands to phases, plots and files."""

from dataclasses import dataclass, field

import numpy as np

from .integrators.solution import Solution


@dataclass
class Trajectory:
    """``m_1(t), q_1(t)`` and the loss on an output grid, with how the run ended.

    Attributes
    ----------
    t, m1, q1, loss : arrays
        Output times reached and the statistics there; ``loss`` is the
        model's ``F(q_1, m_1; rho_1)``, with negative values within its
        rounding bound set to 0 (see ``hierarchy.model.evaluate_loss``).
    rho1, rho2 : float
        Teacher statistics ``rho_k = w*^T Sigma^k w*`` of the problem.
    truncation : str
        Description of the system that was integrated.
    state_size : int
        Number of ODEs integrated.
    status, message : str
        Integration status name (``SUCCESS``, ``DIVERGED``, ...) and its explanation.
    t_requested_end : float
        Last requested output time (``t[-1]`` is smaller after a failure).
    stats : dict
        Step statistics of the integrator.
    wall_seconds : float
        Run time of the integration.
    event_times : dict
        First crossing times located on the dense output, by event name
        (``None`` when not reached); see ``pipeline.phase_events``.
    """

    t: np.ndarray
    m1: np.ndarray
    q1: np.ndarray
    loss: np.ndarray
    rho1: float
    rho2: float
    truncation: str
    state_size: int
    status: str
    message: str
    t_requested_end: float
    stats: dict = field(default_factory=dict)
    wall_seconds: float = 0.0
    event_times: dict = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.status == "SUCCESS"

    @classmethod
    def from_solution(cls, solution: Solution, model, rho1: float, rho2: float, truncation: str, state_size: int):
        """Build the trajectory of an integration whose observables are ``(m1, q1)``."""
        m1 = solution.observable("m1").copy()
        q1 = solution.observable("q1").copy()
        # The exact flow sums d = state_size products of three factors into q_1 and m_1, the spectral
        # modes state_size / 2 sums of products of up to four factors, and a moment truncation
        # integrates them directly, so state_size + 5 rounded operations bound each path.
        loss = model.loss(q1, m1, rho1, statistics_operations=state_size + 5, description=f"the loss of {truncation}")
        return cls(
            t=solution.t.copy(),
            m1=m1,
            q1=q1,
            # A loss that does not depend on the statistics (a constant model) comes back as a scalar.
            loss=np.broadcast_to(np.asarray(loss, dtype=np.float64), q1.shape).copy(),
            rho1=float(rho1),
            rho2=float(rho2),
            truncation=truncation,
            state_size=int(state_size),
            status=solution.status.name,
            message=solution.message,
            t_requested_end=float(solution.t_requested[-1]),
            stats=dict(solution.stats),
            wall_seconds=float(solution.wall_seconds),
            event_times=dict(solution.event_times),
        )
