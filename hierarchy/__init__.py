"""hierarchy: derive, truncate and integrate the summary-statistic hierarchy of phase retrieval.

Data flows one way: model and spectrum (``model``, ``spectrum``) to a
truncation (``truncation``), integrated by a compiled stiff solver
(``integrators``) into a ``Trajectory``, from which ``phases``, ``plots``
and ``io`` derive predictions, figures and files.
"""

from .numba_cache import invalidate_stale_kernels

invalidate_stale_kernels()

__version__ = "0.1.0"
