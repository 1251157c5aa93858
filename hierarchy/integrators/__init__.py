"""Numba-compiled stiff integrators for structured (banded plus low-rank) systems."""

from .driver import METHODS, solve
from .solution import Event, IntegrationStatus, Solution
from .system import StructuredSystem, no_drive

__all__ = ["METHODS", "Event", "IntegrationStatus", "Solution", "StructuredSystem", "no_drive", "solve"]
