"""Quadrature rules in ``log lam`` for the spectral measures of a finite spectrum.

The summary statistics are integrals of the Duhamel propagators against
three discrete measures (see ``spectral_modes``). Because every level-one
statistic carries one factor ``lam``, the rule is built for the weighted
measures ``lam dmu``; the propagators ``Phi(lam, t)``, ``Psi(lam, t)`` are
smooth in ``s = log lam`` and are interpolated there.

Rule: equal eigenvalues are merged into one atom first. The ``exact_top``
largest and ``exact_bottom`` smallest distinct eigenvalues are nodes of their own. The rest of the spectrum is cut into bins of
``1 / bins_per_decade`` decades, aligned on multiples of that width. A bin
with at most ``rule_order`` eigenvalues keeps them all as exact nodes;
otherwise it gets the ``rule_order`` Gauss-Legendre points of the interval
``[min s, max s]`` of its eigenvalues, and the weight of node ``k`` for a
measure ``sum_i c_i delta_{lam_i}`` is ``sum_i c_i l_k(s_i)`` with ``l_k``
the Lagrange basis polynomial of the bin. The rule is thus exact, bin by
bin, for integrands that are polynomials of degree ``rule_order - 1`` in
``log lam``, constants included, so the initial summary statistics are
reproduced exactly.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SpectralRule:
    """Nodes ``lam_j`` and one weight vector per measure (rows of ``weights``)."""

    nodes: np.ndarray
    weights: np.ndarray
    exact_nodes: int

    @property
    def size(self) -> int:
        return self.nodes.size


def _lagrange_basis(points, nodes):
    """Return ``L[i, k] = l_k(points[i])`` for the Lagrange basis on ``nodes``."""
    basis = np.ones((points.size, nodes.size))
    for k in range(nodes.size):
        for j in range(nodes.size):
            if j != k:
                basis[:, k] *= (points - nodes[j]) / (nodes[k] - nodes[j])
    return basis


def log_gauss_rule(lam, measures, bins_per_decade, rule_order, exact_top=0, exact_bottom=0) -> SpectralRule:
    """Build the composite rule in ``log lam`` described in the module docstring.

    Parameters
    ----------
    lam : (d,) array
        Eigenvalues in decreasing order.
    measures : (n_measures, d) array
        Atom weights ``c_i`` of each measure at ``lam_i``.
    bins_per_decade : int
        Number of bins per decade of ``lam``, at least 1.
    rule_order : int
        Gauss-Legendre points per bin, at least 1.
    exact_top, exact_bottom : int
        Numbers of largest and smallest eigenvalues kept as exact nodes.

    Returns
    -------
    SpectralRule
        Nodes in decreasing order and their weights.
    """
    lam = np.asarray(lam, dtype=np.float64)
    measures = np.atleast_2d(np.asarray(measures, dtype=np.float64))
    d = lam.size
    if measures.shape[1] != d:
        raise ValueError(f"measures must have {d} columns, one per eigenvalue, got shape {measures.shape}")
    if int(bins_per_decade) < 1:
        raise ValueError(f"bins_per_decade = {bins_per_decade!r} must be an integer >= 1")
    if int(rule_order) < 1:
        raise ValueError(f"rule_order = {rule_order!r} must be an integer >= 1")
    if exact_top < 0 or exact_bottom < 0:
        raise ValueError("exact_top and exact_bottom must be >= 0")

    # Repeated eigenvalues (an isotropic block, a = 0) are one atom with the
    # summed weight: the propagators depend on the eigenvalue only, and the
    # Lagrange basis needs distinct points.
    lam, first_index, group = np.unique(-lam, return_index=True, return_inverse=True)
    lam = -lam
    if lam.size < d:
        merged = np.zeros((measures.shape[0], lam.size))
        np.add.at(merged, (slice(None), group), measures)
        measures = merged
        d = lam.size

    exact_top = min(int(exact_top), d)
    exact_bottom = min(int(exact_bottom), d - exact_top)
    interior = np.arange(exact_top, d - exact_bottom)

    nodes = [lam[:exact_top], lam[d - exact_bottom :]]
    weights = [measures[:, :exact_top], measures[:, d - exact_bottom :]]
    exact_nodes = exact_top + exact_bottom

    if interior.size:
        width = 1.0 / bins_per_decade
        log10_lam = np.log10(lam[interior])
        bin_index = np.floor(log10_lam / width).astype(np.int64)
        gauss_points, _ = np.polynomial.legendre.leggauss(int(rule_order))
        for bin_value in np.unique(bin_index):
            members = interior[bin_index == bin_value]
            if members.size <= rule_order:
                nodes.append(lam[members])
                weights.append(measures[:, members])
                exact_nodes += members.size
                continue
            s = np.log(lam[members])
            s_low, s_high = s.min(), s.max()
            bin_nodes = 0.5 * (s_low + s_high) + 0.5 * (s_high - s_low) * gauss_points
            basis = _lagrange_basis(s, bin_nodes)
            nodes.append(np.exp(bin_nodes))
            weights.append(measures[:, members] @ basis)

    all_nodes = np.concatenate(nodes)
    all_weights = np.concatenate(weights, axis=1)
    order = np.argsort(-all_nodes, kind="stable")
    return SpectralRule(nodes=all_nodes[order], weights=all_weights[:, order], exact_nodes=exact_nodes)
