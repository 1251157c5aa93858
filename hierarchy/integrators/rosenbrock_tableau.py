"""Coefficients of a Rosenbrock method in the transformed form used by the generic stepper.

A step of size ``h`` from ``y`` solves, for the stages ``i = 1..s``,

    (I / (h gamma) - J) u_i = f(y + sum_{j<i} a_ij u_j) + sum_{j<i} (c_ij / h) u_j,

with ``J`` the Jacobian at ``y``, and forms

    y_new = y + sum_j b_j u_j,        error estimate = sum_j e_j u_j.

The dense output on ``theta in [0, 1]`` is

    y(t + theta h) = (1 - theta) y + theta (y_new + (1 - theta) (k_1 + theta k_2)),
    k_1 = sum_j h1_j u_j,   k_2 = sum_j h2_j u_j.

This is the formulation of E. Hairer and G. Wanner, *Solving Ordinary
Differential Equations II*, 2nd ed. (Springer, 1996), section IV.7. The stepper treats the system as autonomous (no ``df/dt`` term),
which holds for every system of this project.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RosenbrockTableau:
    """Rosenbrock coefficients, stored as arrays so that one stepper runs every method."""

    name: str
    order: int
    embedded_order: int
    gamma: float
    a: np.ndarray
    c: np.ndarray
    b: np.ndarray
    error: np.ndarray
    dense: np.ndarray

    @property
    def stages(self) -> int:
        return self.b.size

    @property
    def error_exponent(self) -> float:
        """Exponent ``1 / (q + 1)`` of the step-size controller, with ``q`` the lower of the two orders."""
        return 1.0 / (min(self.order, self.embedded_order) + 1)
