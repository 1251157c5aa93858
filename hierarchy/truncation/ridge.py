"""The ridge penalty of a model, as the truncations read it."""

import math


def ridge_of(model) -> float:
    """Return the ridge penalty ``mu`` of ``model`` (0 for a model without one), checked to be finite and >= 0.

    A penalty ``(mu / 2) |w|^2`` adds ``-mu w`` to the flow: ``-mu`` on the
    diagonal of every truncation's Jacobian, ``-mu m_k`` and ``-2 mu q_k``
    in the moment hierarchy.
    """
    mu = float(getattr(model, "ridge", 0.0) or 0.0)
    if not (math.isfinite(mu) and mu >= 0.0):
        raise ValueError(f"ridge = {mu!r} is invalid: the ridge penalty must be a finite number >= 0")
    return mu
