"""How far a spectral-mode run is from the truth: the same run on a finer rule, and their difference.

``hierarchy run`` integrates one truncation. For the spectral modes it then
integrates the same problem on a rule with twice the bins per decade and two
more nodes per bin, on the same output grid and with the same solver
settings. It reports the largest relative differences of the loss (where the
finer run's loss is at least ``LOSS_FLOOR_FRACTION`` times the initial loss),
of ``|m_1|`` and of ``q_1``. When the rules converge quickly, as they do for
power laws (``hierarchy compare`` shows the convergence), the difference is
an estimate of the truncation error of the coarser run. It also contains the
integrator's own error, which is of the order of ``rtol``.

The moment hierarchy and the exact flow get no estimate here: the first
needs ``hierarchy compare`` against a reference, the second has no
truncation error.
"""

from dataclasses import dataclass

from .compare import measure_errors
from .pipeline import MAX_BINS_PER_DECADE, MAX_RULE_ORDER, SolverOptions, TruncationOptions, integrate_problem
from .rule_selection import LOSS_FLOOR_FRACTION

# The finer rule: this many times the bins per decade, this many more nodes per bin.
BINS_FACTOR = 2
EXTRA_NODES = 2


@dataclass(frozen=True)
class TruncationErrorEstimate:
    """The difference between a run and the same run on a finer spectral rule."""

    reference_truncation: str
    reference_size: int
    reference_status: str
    loss: float | None
    m1: float | None
    q1: float | None
    loss_floor: float

    @property
    def available(self) -> bool:
        return self.loss is not None

    def to_dict(self) -> dict:
        return {
            "reference_truncation": self.reference_truncation,
            "reference_equations": self.reference_size,
            "reference_status": self.reference_status,
            "max_relative_difference_loss": self.loss,
            "max_relative_difference_m1": self.m1,
            "max_relative_difference_q1": self.q1,
            "loss_compared_above": self.loss_floor,
        }

    def describe(self) -> str:
        """Return the one-line report that ``hierarchy run`` prints."""
        if not self.available:
            return f"finer rule, {self.reference_truncation}: stopped with {self.reference_status}, no error estimate"
        return (
            f"finer rule, {self.reference_truncation}: differs by at most {self.loss:.2g} in L "
            f"(where L > {LOSS_FLOOR_FRACTION:g} L(0)), {self.m1:.2g} in |m_1| and {self.q1:.2g} in q_1"
        )


def finer_rule(truncation: TruncationOptions) -> TruncationOptions:
    """Return the spectral rule with ``BINS_FACTOR`` times the bins and ``EXTRA_NODES`` more nodes per bin, within the limits."""
    return TruncationOptions(
        kind="spectral_modes",
        bins_per_decade=min(MAX_BINS_PER_DECADE, BINS_FACTOR * truncation.bins_per_decade),
        rule_order=min(MAX_RULE_ORDER, truncation.rule_order + EXTRA_NODES),
        exact_top=truncation.exact_top,
        exact_bottom=truncation.exact_bottom,
    )


def estimate_truncation_error(
    problem, model, truncation: TruncationOptions, solver: SolverOptions, trajectory, initial_loss: float
) -> TruncationErrorEstimate | None:
    """Integrate ``problem`` on the finer rule and return its difference from ``trajectory``.

    Returns None unless ``truncation`` is a spectral-mode rule. The estimate
    covers the output times that ``trajectory`` reached.
    """
    if truncation.kind != "spectral_modes":
        return None
    finer = finer_rule(truncation)
    loss_floor = LOSS_FLOOR_FRACTION * initial_loss
    try:
        reference = integrate_problem(problem, model, finer, solver)
    except ValueError as error:
        label = f"{finer.bins_per_decade} bins per decade, {finer.rule_order} nodes per bin"
        return TruncationErrorEstimate(label, 0, f"NOT BUILT ({error})", None, None, None, loss_floor)
    if reference.t.size < trajectory.t.size:
        return TruncationErrorEstimate(reference.truncation, reference.state_size, reference.status, None, None, None, loss_floor)
    errors = measure_errors(trajectory, reference, loss_floor)
    return TruncationErrorEstimate(
        reference.truncation, reference.state_size, reference.status, errors.loss, errors.m1, errors.q1, loss_floor
    )
