"""Truncations of the infinite hierarchy, each built as a ``StructuredSystem``.

- ``exact``: the d-dimensional flow (the reference);
- ``spectral_modes``: Duhamel propagators at the nodes of a ``log lam`` rule;
- ``moments``: the moment hierarchy at order K with a closure.
"""

from .exact_flow import build_exact_flow
from .moment_hierarchy import CLOSURES, build_moment_hierarchy
from .quadrature import SpectralRule, log_gauss_rule
from .spectral_modes import build_spectral_modes, build_spectral_rule, spectral_measures

__all__ = [
    "CLOSURES",
    "SpectralRule",
    "build_exact_flow",
    "build_moment_hierarchy",
    "build_spectral_modes",
    "build_spectral_rule",
    "log_gauss_rule",
    "spectral_measures",
]
