"""Result of an integration: outputs, why it ended, and what it cost."""

import enum
from dataclasses import dataclass, field

import numpy as np

from . import common


class IntegrationStatus(enum.Enum):
    """How an integration ended."""

    SUCCESS = common.STATUS_SUCCESS
    DIVERGED = common.STATUS_DIVERGED
    STEP_SIZE_COLLAPSE = common.STATUS_STEP_SIZE_COLLAPSE
    STEP_BUDGET = common.STATUS_STEP_BUDGET
    WALL_TIME = 100

    @property
    def failed(self) -> bool:
        return self is not IntegrationStatus.SUCCESS


@dataclass(frozen=True)
class Event:
    """A zero crossing to locate: ``observable - level`` (or ``|observable| - level``) changes sign.

    The integrator finds the first crossing time by bisection on the dense
    output of the step in which the sign changes, so its accuracy is that of
    the dense output, not of the output grid.
    """

    name: str
    observable: str
    level: float
    absolute: bool = False


@dataclass
class Solution:
    """Outputs of ``solve`` up to the time the integration reached.

    ``t`` and ``observables`` (and ``states`` when requested) hold only the
    output times that were reached; ``t_requested`` holds all of them, so a
    failed run still returns everything it computed. ``event_times`` maps
    each requested event's name to its first crossing time, or ``None`` when
    it did not occur before the integration ended.
    """

    t: np.ndarray
    observables: np.ndarray
    observable_names: tuple
    states: np.ndarray | None
    status: IntegrationStatus
    message: str
    t_reached: float
    t_requested: np.ndarray
    stats: dict = field(default_factory=dict)
    wall_seconds: float = 0.0
    method: str = ""
    event_times: dict = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.status is IntegrationStatus.SUCCESS

    def observable(self, name: str) -> np.ndarray:
        """Return the output column of the observable ``name``."""
        try:
            index = self.observable_names.index(name)
        except ValueError:
            raise KeyError(f"unknown observable {name!r}; available: {', '.join(self.observable_names)}") from None
        return self.observables[:, index]
