"""A-posteriori truncation error of the spectral modes, and the choice of a rule that meets a tolerance.

The spectral-mode rules converge geometrically as bins and points are added,
so the difference between a rule and the next finer one on a fixed ladder
estimates the error of the coarser rule (the finer one being about an order
of magnitude more accurate). ``select_spectral_rule`` walks the ladder until
that estimate meets the requested tolerance over the requested horizon.

The estimate is the maximum over the output times of the relative difference
of the loss, taken where the finer rule's loss exceeds
``LOSS_FLOOR_FRACTION`` times its initial value, and likewise for ``|m_1|``
and ``q_1``. Below that floor the loss, a difference of O(1) terms in
``L = F(q_1, m_1)``, carries the integration error of ``q_1, m_1``
(``rtol`` of order 1e-11 at best) amplified by ``1 / L``, so relative
differences there measure the integrator, not the rule.
"""

import logging
from dataclasses import dataclass, field

import numpy as np

from .pipeline import SolverOptions, TruncationOptions, integrate_problem
from .trajectory import Trajectory

logger = logging.getLogger(__name__)

# (bins_per_decade, rule_order) pairs, each roughly an order of magnitude
# more accurate than the previous one on power-law spectra.
RULE_LADDER = ((2, 3), (3, 4), (4, 5), (6, 6), (8, 7), (12, 8), (16, 10))
LOSS_FLOOR_FRACTION = 1e-8


@dataclass(frozen=True)
class TruncationErrorEstimate:
    """Maximum relative differences of ``L``, ``|m_1|`` and ``q_1`` between a rule and a finer one."""

    loss: float
    m1: float
    q1: float

    @property
    def worst(self) -> float:
        return max(self.loss, self.m1, self.q1)


def estimate_difference(coarse: Trajectory, fine: Trajectory) -> TruncationErrorEstimate:
    """Return the relative differences of ``coarse`` against ``fine`` over their common output times."""
    n = min(coarse.t.size, fine.t.size)
    if n == 0:
        return TruncationErrorEstimate(np.inf, np.inf, np.inf)
    if not np.allclose(coarse.t[:n], fine.t[:n], rtol=1e-14, atol=0.0):
        raise ValueError("the two trajectories were computed on different output grids")

    fine_loss = fine.loss[:n]
    floor = LOSS_FLOOR_FRACTION * abs(fine.loss[0])
    relevant = np.abs(fine_loss) > floor
    loss_error = np.max(np.abs(coarse.loss[:n][relevant] / fine_loss[relevant] - 1.0)) if np.any(relevant) else 0.0
    m1_error = np.max(np.abs(np.abs(coarse.m1[:n]) / np.abs(fine.m1[:n]) - 1.0))
    q1_error = np.max(np.abs(coarse.q1[:n] / fine.q1[:n] - 1.0))
    return TruncationErrorEstimate(float(loss_error), float(m1_error), float(q1_error))


@dataclass
class RuleSelection:
    """Outcome of ``select_spectral_rule``.

    ``truncation`` and ``trajectory`` are the cheapest rule whose estimate
    met the tolerance (or the finest rule tried when none did, with
    ``converged = False``); ``check`` is the finer rule the estimate came
    from; ``history`` lists every rule tried with its number of modes and
    estimate.
    """

    truncation: TruncationOptions
    trajectory: Trajectory
    estimate: TruncationErrorEstimate
    check: Trajectory
    converged: bool
    message: str
    history: list = field(default_factory=list)


def _rule_options(bins_per_decade, rule_order, exact_top, exact_bottom):
    return TruncationOptions(
        kind="spectral_modes",
        bins_per_decade=bins_per_decade,
        rule_order=rule_order,
        exact_top=exact_top,
        exact_bottom=exact_bottom,
    )


def select_spectral_rule(
    problem,
    model,
    solver: SolverOptions,
    tolerance: float = 1e-6,
    exact_top: int = 8,
    exact_bottom: int = 0,
    max_modes: int | None = None,
    ladder=RULE_LADDER,
) -> RuleSelection:
    """Choose the cheapest rule of ``ladder`` whose estimated loss error is at most ``tolerance``.

    Each rule is integrated on the solver's grid; the estimate of rule ``j``
    is its difference to rule ``j + 1``. The walk stops at the first rule
    that meets the tolerance, when the next rule would exceed ``max_modes``
    modes, at the end of the ladder, or when an integration fails.
    """
    if not (isinstance(tolerance, float) and 0.0 < tolerance < 1.0):
        raise ValueError(f"tolerance = {tolerance!r} is invalid: the truncation tolerance must be a number in (0, 1)")
    if len(ladder) < 2:
        raise ValueError("the ladder of rules needs at least two rules")

    history = []
    previous_options = _rule_options(*ladder[0], exact_top, exact_bottom)
    previous = integrate_problem(problem, model, previous_options, solver)
    estimate = TruncationErrorEstimate(np.inf, np.inf, np.inf)
    current = previous

    for bins_per_decade, rule_order in ladder[1:]:
        if not previous.success:
            message = f"the rule {previous_options.bins_per_decade} x {previous_options.rule_order} failed: {previous.message}"
            return RuleSelection(previous_options, previous, estimate, previous, False, message, history)

        options = _rule_options(bins_per_decade, rule_order, exact_top, exact_bottom)
        current = integrate_problem(problem, model, options, solver)
        if max_modes is not None and current.state_size // 2 > max_modes:
            message = (
                f"the next rule ({bins_per_decade} x {rule_order}, {current.state_size // 2} modes) exceeds "
                f"max_modes = {max_modes}; best estimate {estimate.loss:.2e} above the tolerance {tolerance:.2e}"
            )
            return RuleSelection(previous_options, previous, estimate, current, False, message, history)

        estimate = estimate_difference(previous, current)
        history.append(
            {
                "bins_per_decade": previous_options.bins_per_decade,
                "rule_order": previous_options.rule_order,
                "modes": previous.state_size // 2,
                "estimated_loss_error": estimate.loss,
                "estimated_m1_error": estimate.m1,
                "estimated_q1_error": estimate.q1,
            }
        )
        logger.info(
            "rule %d x %d (%d modes): estimated loss error %.2e",
            previous_options.bins_per_decade, previous_options.rule_order, previous.state_size // 2, estimate.loss,
        )
        if current.success and estimate.loss <= tolerance:
            message = (
                f"rule {previous_options.bins_per_decade} x {previous_options.rule_order} "
                f"({previous.state_size // 2} modes) meets the tolerance {tolerance:.2e}: estimated loss error "
                f"{estimate.loss:.2e} against rule {bins_per_decade} x {rule_order}"
            )
            return RuleSelection(previous_options, previous, estimate, current, True, message, history)
        previous_options, previous = options, current

    message = f"no rule of the ladder met the tolerance {tolerance:.2e}; best estimate {estimate.loss:.2e}"
    return RuleSelection(previous_options, previous, estimate, current, False, message, history)
