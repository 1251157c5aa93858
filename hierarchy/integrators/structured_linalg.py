"""Solve ``(c I - J) x = r`` for a Jacobian ``J = B + U V^T`` with ``B`` banded.

The shift ``c`` and the work arrays may be complex (Radau IIA solves its
complex pair of stages as one complex system); ``B, U, V`` are real.

Every system of the project has a Jacobian of this form: ``B`` is diagonal
(exact flow, spectral modes) or narrowly banded (moment hierarchy) and the
low-rank part ``U V^T`` carries the dependence on the two summary statistics
that the drive reads. With ``C = c I - B`` the Sherman-Morrison-Woodbury
identity gives

    (C - U V^T)^{-1} r = C^{-1} r + Z S^{-1} V^T C^{-1} r,
    Z = C^{-1} U,   S = I_r - V^T Z,

so a factorisation costs ``O(n (kl + ku) kl + n r (kl + ku) + r^3)`` and each
solve ``O(n (kl + ku) + n r)``. A dense system is the special case
``kl = ku = n - 1, r = 0``, where the banded LU is an ordinary LU.

Reference: G. H. Golub and C. F. Van Loan, *Matrix Computations*, 4th ed.
(2013), sections 2.1.4 (Sherman-Morrison-Woodbury) and 4.3.5 (band Gaussian
elimination with partial pivoting).

While ``alpha > 0`` (the escape phase) a diagonal entry ``c - lam_i alpha``
of the core can vanish although ``c I - J`` is regular. The factorisation
therefore reports the smallest pivot relative to the size of the matrix, and
the caller checks the residual of the first solve; both let the step
controller reject the step and retry with another step size, which moves the
core away from the singular value.
"""

import numba
import numpy as np

# Storage of the factorised core: row i of ``lu`` holds columns
# i - kl .. i + kl + ku of U (the extra kl columns receive fill-in from row
# interchanges), so lu[i, j - i + kl] is entry (i, j). A diagonal core
# (kl = ku = 0) is the exception: lu[i, 0] contains 1 / C_ii.


@numba.njit(cache=True)
def factor_shifted_band(shift, band, kl, ku, lu, multipliers, pivots):
    """Factorise ``C = shift I - B`` by band Gaussian elimination with partial pivoting.

    Parameters
    ----------
    shift : float
        The scalar ``c`` (``1 / (h gamma)`` in a Rosenbrock step).
    band : (n, kl + ku + 1) array
        ``B`` stored as ``band[i, j - i + kl] = B[i, j]``.
    kl, ku : int
        Lower and upper bandwidths of ``B``.
    lu : (n, 2 kl + ku + 1) array, output
        Upper factor, row ``i`` holding columns ``i - kl .. i + kl + ku``.
    multipliers : (n, max(kl, 1)) array, output
        ``multipliers[j, p]`` is the elimination factor of row ``j + 1 + p``
        by pivot row ``j``.
    pivots : (n,) int array, output
        Row interchanged with row ``j`` at step ``j``.

    Returns
    -------
    float
        Smallest ``|pivot|`` divided by the largest ``|C_ij|``; zero for a
        singular matrix.
    """
    n = band.shape[0]
    width = 2 * kl + ku + 1

    if kl == 0 and ku == 0:
        # Diagonal core (exact flow, spectral modes): no elimination and no
        # pivoting. lu contains the reciprocals of the diagonal, so that every
        # solve multiplies instead of dividing.
        scale = 0.0
        smallest_pivot = np.inf
        for i in range(n):
            value = shift - band[i, 0]
            pivots[i] = i
            size = abs(value)
            scale = max(scale, size)
            smallest_pivot = min(smallest_pivot, size)
        if scale == 0.0 or smallest_pivot == 0.0:
            return 0.0
        for i in range(n):
            lu[i, 0] = 1.0 / (shift - band[i, 0])
        return smallest_pivot / scale

    scale = 0.0
    for i in range(n):
        for col in range(width):
            lu[i, col] = 0.0
        for j in range(max(0, i - kl), min(n, i + ku + 1)):
            value = -band[i, j - i + kl]
            if i == j:
                value += shift
            lu[i, j - i + kl] = value
            if abs(value) > scale:
                scale = abs(value)
    if scale == 0.0:
        return 0.0

    smallest_pivot = np.inf
    for j in range(n):
        last_row = min(n - 1, j + kl)
        last_col = min(n - 1, j + kl + ku)

        pivot_row = j
        pivot_size = abs(lu[j, kl])
        for i in range(j + 1, last_row + 1):
            size = abs(lu[i, j - i + kl])
            if size > pivot_size:
                pivot_size = size
                pivot_row = i
        pivots[j] = pivot_row
        if pivot_size < smallest_pivot:
            smallest_pivot = pivot_size
        if pivot_size == 0.0:
            return 0.0

        if pivot_row != j:
            for col in range(j, last_col + 1):
                upper = lu[j, col - j + kl]
                lu[j, col - j + kl] = lu[pivot_row, col - pivot_row + kl]
                lu[pivot_row, col - pivot_row + kl] = upper

        pivot = lu[j, kl]
        for i in range(j + 1, last_row + 1):
            factor = lu[i, j - i + kl] / pivot
            multipliers[j, i - j - 1] = factor
            lu[i, j - i + kl] = 0.0
            if factor != 0.0:
                for col in range(j + 1, last_col + 1):
                    lu[i, col - i + kl] -= factor * lu[j, col - j + kl]

    return smallest_pivot / scale


@numba.njit(cache=True)
def solve_shifted_band(lu, multipliers, pivots, kl, ku, x):
    """Overwrite ``x`` with ``C^{-1} x`` from the factors of ``factor_shifted_band``."""
    n = x.shape[0]

    if kl == 0 and ku == 0:
        # lu contains the reciprocals of the diagonal core.
        for i in range(n):
            x[i] *= lu[i, 0]
        return

    for j in range(n):
        pivot_row = pivots[j]
        if pivot_row != j:
            swap = x[j]
            x[j] = x[pivot_row]
            x[pivot_row] = swap
        for i in range(j + 1, min(n - 1, j + kl) + 1):
            x[i] -= multipliers[j, i - j - 1] * x[j]

    for i in range(n - 1, -1, -1):
        total = x[i]
        for col in range(i + 1, min(n - 1, i + kl + ku) + 1):
            total -= lu[i, col - i + kl] * x[col]
        x[i] = total / lu[i, kl]


@numba.njit(cache=True)
def factor_small_dense(a, pivots):
    """LU factorisation with partial pivoting of a small dense matrix, in place.

    Returns the smallest ``|pivot|`` divided by the largest ``|a_ij|`` (zero
    when singular). Used for the ``r x r`` capacitance matrix.
    """
    r = a.shape[0]
    scale = 0.0
    for i in range(r):
        for j in range(r):
            scale = max(scale, abs(a[i, j]))
    if r == 0:
        return 1.0
    if scale == 0.0:
        return 0.0

    smallest_pivot = np.inf
    for j in range(r):
        pivot_row = j
        for i in range(j + 1, r):
            if abs(a[i, j]) > abs(a[pivot_row, j]):
                pivot_row = i
        pivots[j] = pivot_row
        if pivot_row != j:
            for col in range(r):
                swap = a[j, col]
                a[j, col] = a[pivot_row, col]
                a[pivot_row, col] = swap
        pivot = a[j, j]
        smallest_pivot = min(smallest_pivot, abs(pivot))
        if pivot == 0.0:
            return 0.0
        for i in range(j + 1, r):
            a[i, j] /= pivot
            for col in range(j + 1, r):
                a[i, col] -= a[i, j] * a[j, col]
    return smallest_pivot / scale


@numba.njit(cache=True)
def solve_small_dense(lu, pivots, x):
    """Overwrite ``x`` with the solution from the factors of ``factor_small_dense``."""
    r = x.shape[0]
    for j in range(r):
        pivot_row = pivots[j]
        if pivot_row != j:
            swap = x[j]
            x[j] = x[pivot_row]
            x[pivot_row] = swap
    for i in range(r):
        for j in range(i):
            x[i] -= lu[i, j] * x[j]
    for i in range(r - 1, -1, -1):
        for j in range(i + 1, r):
            x[i] -= lu[i, j] * x[j]
        x[i] /= lu[i, i]


@numba.njit(cache=True)
def factor_structured(shift, band, kl, ku, U, V, lu, multipliers, pivots, Z, capacitance, capacitance_pivots):
    """Factorise ``shift I - (B + U V^T)`` for repeated solves.

    Fills ``lu, multipliers, pivots`` with the band factors of
    ``C = shift I - B``, ``Z = C^{-1} U`` and the LU factors of the
    capacitance matrix ``S = I - V^T Z``.

    Returns
    -------
    float
        The smaller of the relative smallest pivots of ``C`` and of ``S``;
        values near zero mean the splitting is unusable at this ``shift``.
    """
    n = band.shape[0]
    r = U.shape[1]

    core_pivot = factor_shifted_band(shift, band, kl, ku, lu, multipliers, pivots)
    if core_pivot == 0.0 or not np.isfinite(core_pivot):
        return 0.0

    column = np.zeros_like(lu[:, 0])
    for k in range(r):
        for i in range(n):
            column[i] = U[i, k]
        solve_shifted_band(lu, multipliers, pivots, kl, ku, column)
        for i in range(n):
            Z[i, k] = column[i]

    for a in range(r):
        for b in range(r):
            total = 0.0
            for i in range(n):
                total += V[i, a] * Z[i, b]
            capacitance[a, b] = (1.0 if a == b else 0.0) - total
    capacitance_pivot = factor_small_dense(capacitance, capacitance_pivots)

    return min(core_pivot, capacitance_pivot)


@numba.njit(cache=True)
def solve_structured(lu, multipliers, pivots, kl, ku, V, Z, capacitance, capacitance_pivots, x):
    """Overwrite ``x`` with ``(shift I - B - U V^T)^{-1} x`` (Sherman-Morrison-Woodbury)."""
    n = x.shape[0]
    r = Z.shape[1]

    solve_shifted_band(lu, multipliers, pivots, kl, ku, x)
    if r == 0:
        return

    projection = np.zeros_like(capacitance[0])
    for a in range(r):
        total = 0.0
        for i in range(n):
            total += V[i, a] * x[i]
        projection[a] = total
    solve_small_dense(capacitance, capacitance_pivots, projection)
    for i in range(n):
        total = 0.0
        for a in range(r):
            total += Z[i, a] * projection[a]
        x[i] += total


@numba.njit(cache=True)
def structured_residual(shift, band, kl, ku, U, V, x, rhs):
    """Return the normwise backward error of ``x`` as a solution of ``(shift I - B - U V^T) x = rhs``.

    The value is ``max_i |r_i| / max_i (|A| |x| + |rhs|)_i`` with
    ``r = rhs - A x``, using ``|U| |V|^T`` in place of ``|U V^T|`` (an upper
    bound). A backward-stable solve gives a few machine epsilons.
    """
    n = x.shape[0]
    r = U.shape[1]
    # The projections V^T x and |V|^T |x| first, so that one pass over the
    # rows then forms each residual and its magnitude without work arrays.
    projection = np.zeros(r, dtype=x.dtype)
    projection_size = np.zeros(r)
    for a in range(r):
        total = projection[a]
        size = 0.0
        for i in range(n):
            total += V[i, a] * x[i]
            size += abs(V[i, a] * x[i])
        projection[a] = total
        projection_size[a] = size

    largest_residual = 0.0
    largest_magnitude = 0.0
    for i in range(n):
        total = shift * x[i]
        size = abs(shift * x[i])
        for j in range(max(0, i - kl), min(n, i + ku + 1)):
            product = band[i, j - i + kl] * x[j]
            total -= product
            size += abs(product)
        for a in range(r):
            total -= U[i, a] * projection[a]
            size += abs(U[i, a]) * projection_size[a]
        largest_residual = max(largest_residual, abs(rhs[i] - total))
        largest_magnitude = max(largest_magnitude, size + abs(rhs[i]))
    if largest_magnitude == 0.0:
        return 0.0
    return largest_residual / largest_magnitude
