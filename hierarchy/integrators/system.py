"""The contract between a truncation (or any test problem) and the integrators."""

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numba
import numpy as np
from numba.core.dispatcher import Dispatcher
from numba.core.types import CompileResultWAP

from ..kernel_types import DRIVE_SIGNATURE, JAC_SIGNATURE, OBSERVE_SIGNATURE, RHS_SIGNATURE


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
    their exponentials are computed once.

    The overlaps are declared as forms in the state: the linear form
    ``m1 = sum_i m1_weights[i] y_i`` and the quadratic form
    ``q1 = sum_p q1_values[p] y[q1_rows[p]] y[q1_cols[p]]``, whose pairs
    couple only equations of one rate. The ``exponential`` method evaluates
    them on its node states without forming the states. Before a run it
    checks the whole form against the system's ``observe`` and ``rhs``.
    """

    rates: np.ndarray
    rate_index: np.ndarray
    forcing: np.ndarray
    ridge: float
    rho1: float
    m1_weights: np.ndarray
    q1_rows: np.ndarray
    q1_cols: np.ndarray
    q1_values: np.ndarray

    def check(self, size: int) -> None:
        """Raise ``ValueError`` unless the arrays fit a system of ``size`` equations."""
        array_fields = ("rates", "rate_index", "forcing", "m1_weights", "q1_rows", "q1_cols", "q1_values")
        for field_name in array_fields:
            value = getattr(self, field_name)
            if not isinstance(value, np.ndarray):
                raise ValueError(f"modal {field_name} must be a numpy array, got {type(value).__name__}")
        for field_name in ("rate_index", "q1_rows", "q1_cols"):
            dtype = getattr(self, field_name).dtype
            if not np.issubdtype(dtype, np.integer):
                raise ValueError(f"modal {field_name} must be an array of integer indices, got dtype {dtype}")
        if self.rates.ndim != 1 or self.rates.size == 0:
            raise ValueError(f"modal rates must be a non-empty 1-D array, got shape {self.rates.shape}")
        for field_name, array in (("rate_index", self.rate_index), ("forcing", self.forcing), ("m1_weights", self.m1_weights)):
            if array.shape != (size,):
                raise ValueError(f"modal {field_name} has shape {array.shape}; expected ({size},), one entry per equation")
        if self.rate_index.min() < 0 or self.rate_index.max() >= self.rates.size:
            raise ValueError(f"modal rate_index must lie in [0, {self.rates.size - 1}], the indices of the rates")
        finite_fields = (("rates", self.rates), ("forcing", self.forcing), ("m1_weights", self.m1_weights),
                         ("q1_values", self.q1_values))
        for field_name, array in finite_fields:
            if not np.all(np.isfinite(array)):
                raise ValueError(f"modal {field_name} must be finite")
        if not (np.isfinite(self.ridge) and self.ridge >= 0.0):
            raise ValueError(f"modal ridge = {self.ridge!r} is invalid: it must be a finite number >= 0")
        pairs = self.q1_values.shape
        if self.q1_values.ndim != 1 or self.q1_rows.shape != pairs or self.q1_cols.shape != pairs:
            raise ValueError(
                f"modal q1_rows, q1_cols and q1_values must be 1-D arrays of one length, got shapes "
                f"{self.q1_rows.shape}, {self.q1_cols.shape} and {pairs}"
            )
        for field_name, array in (("q1_rows", self.q1_rows), ("q1_cols", self.q1_cols)):
            if array.size and (array.min() < 0 or array.max() >= size):
                raise ValueError(f"modal {field_name} must lie in [0, {size - 1}], the indices of the equations")
        if np.any(self.rate_index[self.q1_rows] != self.rate_index[self.q1_cols]):
            raise ValueError("modal q1 pairs must couple equations of one rate (equal rate_index)")


class _ResolvedFunction(CompileResultWAP):
    """A compiled function with its address and its Numba type computed once (see ``StructuredSystem.kernels``)."""

    def __init__(self, compile_result):
        super().__init__(compile_result)
        # Numba's typeof reads this attribute before building a new FunctionType on every call.
        self._numba_type_ = numba.types.FunctionType(compile_result.signature)


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

    @cached_property
    def kernels(self) -> tuple:
        """``(rhs, jac, observe, drive)`` as first-class functions whose addresses are looked up once.

        Numba looks up the compiled address and the type of a jitted function
        passed to a compiled stepper on every call: about 0.3 ms per stepper
        call for the four on the benchmark machine, as much as a dozen steps of
        the ``exponential`` method on the K = 517 system. These wrappers
        (``numba.core.types.CompileResultWAP``) carry both.
        """
        signatures = (RHS_SIGNATURE, JAC_SIGNATURE, OBSERVE_SIGNATURE, DRIVE_SIGNATURE)
        return tuple(
            _ResolvedFunction(function.get_compile_result(signature)) if isinstance(function, Dispatcher) else function
            for function, signature in zip((self.rhs, self.jac, self.observe, self.drive), signatures)
        )
