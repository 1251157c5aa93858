# ---
# jupyter:
#   jupytext:
#     formats: py:percent,ipynb
# ---

# %% [markdown]
# # Truncation levels compared
#
# Every closure of the moment hierarchy against the spectral modes and the
# exact flow: the zero closure diverges, the copy and ratio closures stall at
# spurious fixed points, the quadrature closure converges slowly, and the
# spectral modes converge geometrically in the number of nodes per decade.

# %%
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parent) if "__file__" in globals() else ".")
from _common import QUICK, save

from hierarchy.compare import format_comparison, run_comparison
from hierarchy.config import parse_compare_config

document = {
    "problem": {"d": 300 if QUICK else 1000, "a": 1.5, "b": 0.0, "sigma0": 0.1, "seed": 0},
    "solver": {"t_first": 0.1, "t_end": 1e4 if QUICK else 1e6, "n_out": 100, "rtol": 1e-10, "atol": 1e-14},
    "compare": {
        "spectral_rules": [[2, 3], [3, 4], [4, 5], [6, 6]],
        "moment_orders": [1, 2, 4] if QUICK else [1, 2, 4, 8],
        "closures": ["zero", "copy", "ratio", "quadrature"],
        "max_steps": 20000 if QUICK else 200000,
    },
}
comparison = run_comparison(parse_compare_config(document, source="notebook"))
print(format_comparison(comparison))

# %% [markdown]
# Loss error against the size of the truncated system.

# %%
figure = Figure(figsize=(6, 4))
axes = figure.subplots()
for label in ("spectral_modes", "zero", "copy", "ratio", "quadrature"):
    rows = [row for row in comparison.rows if (row.kind == label or row.closure == label) and not row.skipped]
    if rows:
        axes.loglog([row.state_size for row in rows], [max(row.loss_error, 1e-16) for row in rows], marker="o", label=label)
axes.set_xlabel("number of ODEs")
axes.set_ylabel("max relative error of L")
axes.legend()
save(figure, "truncation_levels")
