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
class ModalForm:
    """The form ``dy_i/dt = (rates_j alpha - ridge) y_i + forcing_i beta``, ``j = rate_index[i]``, of a system.

    ``(alpha, beta) = drive(q1, m1, rho1)`` with ``m1`` and ``q1`` the first
    two observables of the system, in that order. The spectral modes and the
    exact flow have this form, which the ``exponential`` method needs:
    given ``alpha`` and ``beta`` along a step, every equation is linear and
    decoupled. Equations that share a rate share ``rate_index``, so that
    their exponentials are computed once. The method also reads the
    gradients of ``alpha`` and ``beta`` in the state from the first two
    columns of the ``V`` that the system's ``jac`` fills, so the system's
    rank must be at least 2.
    """

    rates: np.ndarray
    rate_index: np.ndarray
    forcing: np.ndarray
    ridge: float
    rho1: float

    def check(self, size: int) -> None:
        """Raise ``ValueError`` unless the arrays fit a system of ``size`` equations."""
        if self.rates.ndim != 1 or self.rates.size == 0:
            raise ValueError(f"modal rates must be a non-empty 1-D array, got shape {self.rates.shape}")
        for field_name, array in (("rate_index", self.rate_index), ("forcing", self.forcing)):
            if array.shape != (size,):
                raise ValueError(f"modal {field_name} has shape {array.shape}; expected ({size},), one entry per equation")
        if self.rate_index.min() < 0 or self.rate_index.max() >= self.rates.size:
            raise ValueError(f"modal rate_index must lie in [0, {self.rates.size - 1}], the indices of the rates")
        if not (np.all(np.isfinite(self.rates)) and np.all(np.isfinite(self.forcing))):
            raise ValueError("modal rates and forcing must be finite")
        if not (np.isfinite(self.ridge) and self.ridge >= 0.0):
            raise ValueError(f"modal ridge = {self.ridge!r} is invalid: it must be a finite number >= 0")


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
    modal: ModalForm | None = None

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
        if self.modal is not None:
            self.modal.check(n)

    @property
    def size(self) -> int:
        return self.y0.size
