"""The contract between a truncation (or any test problem) and the integrators."""

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from ..kernel_types import DRIVE_SIGNATURE


@numba.njit(DRIVE_SIGNATURE, cache=True)
def no_drive(q1, m1, rho1):
    """Drive of a system that does not depend on a learning model (standard test problems)."""
    return 0.0, 0.0, 0.0, 0.0, 0.0, 0.0


@dataclass(frozen=True)
class StructuredSystem:
    """An autonomous ODE ``dy/dt = f(y)`` whose Jacobian is ``B + U V^T``.

    ``B`` is banded with ``kl`` sub- and ``ku`` super-diagonals and ``U, V``
    have ``rank`` columns. A dense Jacobian is ``kl = ku = n - 1`` with
    ``rank = 0``. ``rhs``, ``jac`` and ``observe`` are Numba functions with
    the signatures of ``hierarchy.kernel_types``; ``params`` is the flat
    array they read, in a layout private to the system that built it.
    """

    name: str
    y0: np.ndarray
    params: np.ndarray
    rhs: Any
    jac: Any
    observe: Any
    observable_names: tuple
    kl: int
    ku: int
    rank: int
    drive: Any = no_drive

    def __post_init__(self):
        n = self.y0.size
        if self.y0.ndim != 1 or n == 0:
            raise ValueError(f"y0 must be a non-empty 1-D array, got shape {self.y0.shape}")
        for field_name, value in (("kl", self.kl), ("ku", self.ku)):
            if not 0 <= value <= n - 1:
                raise ValueError(f"{field_name} = {value} is outside the allowed range [0, {n - 1}] for a system of size {n}")
        # A rank above n is allowed: the Woodbury capacitance matrix stays
        # regular exactly when the full matrix is (matrix determinant lemma).
        if self.rank < 0:
            raise ValueError(f"rank = {self.rank} is invalid: the rank of the low-rank part must be >= 0")

    @property
    def size(self) -> int:
        return self.y0.size
