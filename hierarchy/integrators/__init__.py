"""Numba-compiled stiff integrators for structured (banded plus low-rank) systems."""

from .driver import METHODS, solve
from .solution import Event, IntegrationStatus, Solution
from .system import ModalForm, StructuredSystem, no_drive

__all__ = ["METHODS", "Event", "IntegrationStatus", "ModalForm", "Solution", "StructuredSystem", "no_drive", "solve"]
