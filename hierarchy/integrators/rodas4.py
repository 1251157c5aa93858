"""RODAS4: a six-stage, L-stable, stiffly accurate Rosenbrock method of order 4(3).

Properties: order 4, embedded order 3 (the error estimate is the last stage
``u_6``), L-stable, stiffly accurate (``y_new`` is the argument of a stage
plus its correction), dense output of order 3 from the stages. The last two
stages evaluate ``f`` at the embedded and at the final solution, which makes
the method robust on the very stiff systems of this project, whose
stiffness ratio is ``lam_max / lam_min = d^a``.

Reference: E. Hairer and G. Wanner, *Solving Ordinary Differential Equations
II: Stiff and Differential-Algebraic Problems*, 2nd ed. (Springer, 1996),
section IV.7; the coefficients are those of their Fortran code RODAS
(subroutine ``RODAS4``), in the transformed form of that section.
"""

import numpy as np

from .rosenbrock_tableau import RosenbrockTableau

GAMMA = 0.25

# a_ij: stage arguments y + sum_j a_ij u_j. Row 6 reuses row 5 plus u_5,
# which is what makes the method stiffly accurate.
_A = np.zeros((6, 6))
_A[1, 0] = 1.544
_A[2, :2] = [0.9466785280815826, 0.2557011698983284]
_A[3, :3] = [3.314825187068521, 2.896124015972201, 0.9986419139977817]
_A[4, :4] = [1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950]
_A[5, :5] = [*_A[4, :4], 1.0]

# c_ij: coupling of earlier stages in the right-hand side of stage i.
_C = np.zeros((6, 6))
_C[1, 0] = -5.6688
_C[2, :2] = [-2.430093356833875, -0.2063599157091915]
_C[3, :3] = [-0.1073529058151375, -9.594562251023355, -20.47028614809616]
_C[4, :4] = [7.496443313967647, -10.24680431464352, -33.99990352819905, 11.70890893206160]
_C[5, :5] = [8.083246795921522, -7.981132988064893, -31.52159432874371, 16.31930543123136, -6.058818238834054]

# b_j: the solution is the argument of stage 6 plus u_6.
_B = np.array([*_A[4, :4], 1.0, 1.0])

# e_j: the embedded order-3 solution is the argument of stage 6, so the error is u_6.
_ERROR = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 1.0])

# Dense-output coefficients h1_j (first row) and h2_j (second row).
_DENSE = np.zeros((2, 6))
_DENSE[0, :5] = [10.12623508344586, -7.487995877610167, -34.80091861555747, -7.992771707568823, 1.025137723295662]
_DENSE[1, :5] = [-0.6762803392801253, 6.087714651680015, 16.43084320892478, 24.76722511418386, -6.594389125716872]

RODAS4 = RosenbrockTableau(
    name="rodas4",
    order=4,
    embedded_order=3,
    gamma=GAMMA,
    a=_A,
    c=_C,
    b=_B,
    error=_ERROR,
    dense=_DENSE,
)
