"""Single-index models as seen by the rest of the package.

A model is reduced to its population loss ``F(q_1, m_1; rho_1)`` and its
*drive*, the compiled map from ``(q_1, m_1, rho_1)`` to the two scalars of the
gradient flow ``dw/dt = alpha Σw + beta Σw*`` and their derivatives. Both come
from code generated out of the SymPy derivation
(:mod:`hierarchy.symbolic.codegen`), never from a hand-written copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike

from hierarchy._generated import phase_retrieval as _phase_retrieval

__all__ = ["PhaseRetrieval"]


@dataclass(frozen=True)
class PhaseRetrieval:
    """Phase retrieval: student ``(w·x)^2``, teacher ``(w*·x)^2``, data ``x ~ N(0, Σ)``.

    The loss ``L(w) = 1/4 E[(ŷ - y)^2]`` depends on ``w`` only through
    ``q_1 = wᵀΣw`` and ``m_1 = wᵀΣw*``,

        F(q_1, m_1; rho_1) = 1/4 (3 q_1^2 - 2 q_1 rho_1 - 4 m_1^2 + 3 rho_1^2),

    and the gradient flow is ``dw/dt = alpha Σw + beta Σw*`` with
    ``alpha = rho_1 - 3 q_1`` and ``beta = 2 m_1``. ``rho_1 = w*ᵀΣw*`` is an
    argument of each call, so one instance serves every teacher.
    """

    name: ClassVar[str] = "phase_retrieval"

    def loss(self, q1: ArrayLike, m1: ArrayLike, rho1: ArrayLike) -> np.ndarray | float:
        """Evaluate the population loss ``F(q_1, m_1; rho_1)``, elementwise on arrays."""
        return _phase_retrieval.loss(q1, m1, rho1)

    @property
    def drive(self):
        """Compiled drive, ``(q1, m1, rho1) -> (alpha, beta, dalpha_dq1, dalpha_dm1, dbeta_dq1, dbeta_dm1)``.

        A Numba dispatcher compiled for :data:`hierarchy.kernel_types.DRIVE_SIGNATURE`,
        so it can be passed to compiled code as a first-class function of type
        :data:`hierarchy.kernel_types.DriveType`.
        """
        return _phase_retrieval.drive

    @property
    def loss_kernel(self):
        """Compiled scalar loss ``(q1, m1, rho1) -> F``, for use inside Numba code."""
        return _phase_retrieval.loss_kernel
