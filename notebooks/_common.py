"""Settings shared by the notebooks: quick mode and the folder figures are saved to.

``HIERARCHY_NOTEBOOK_QUICK=1`` runs every notebook on smaller problems and
shorter horizons (the test suite does this); ``HIERARCHY_NOTEBOOK_OUTPUT``
sets the folder for figures (default ``notebooks/output``).
"""

import os
from pathlib import Path

QUICK = os.environ.get("HIERARCHY_NOTEBOOK_QUICK", "0") not in ("", "0")
OUTPUT = Path(os.environ.get("HIERARCHY_NOTEBOOK_OUTPUT", Path(__file__).resolve().parent / "output"))
OUTPUT.mkdir(parents=True, exist_ok=True)


def save(figure, name: str) -> Path:
    """Save a matplotlib figure as ``OUTPUT/name.png`` and return the path."""
    path = OUTPUT / f"{name}.png"
    figure.savefig(path, dpi=110, bbox_inches="tight")
    print(f"saved {path}")
    return path
