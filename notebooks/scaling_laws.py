# ---
# jupyter:
#   jupytext:
#     formats: py:percent,ipynb
# ---

# %% [markdown]
# # Scaling laws: tail exponent against a, escape time against ln d
#
# At `d = inf` the phase-3 loss decays as `t^(−(a+b−1)/a)`; the fitted
# exponent over the detected power-law window is compared with that law.
# The escape time grows like `ln d` for a random start; measured escape
# times are compared with the leading-order and corrected predictions.

# %%
import math
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parent) if "__file__" in globals() else ".")
from _common import QUICK, save

from hierarchy.model import PhaseRetrieval
from hierarchy.phases import detect_phases
from hierarchy.pipeline import SolverOptions, TruncationOptions, integrate_problem
from hierarchy.predictions import predict_escape
from hierarchy.spectrum import PowerLawSpec

model = PhaseRetrieval()

# %% [markdown]
# Tail exponent at `d = inf`, `b = 0`.

# %%
exponents = [1.5, 2.0, 3.0] if QUICK else [1.25, 1.5, 2.0, 2.5, 3.0, 4.0]
t_end = 1e8 if QUICK else 1e10
solver = SolverOptions(t_first=1e-2, t_end=t_end, n_out=160, rtol=1e-10, atol=1e-16)
fitted, errors = [], []
for a in exponents:
    problem = PowerLawSpec(d=math.inf, a=a, b=0.0, sigma0=0.1, init_teacher_scale=1e-3).build()
    trajectory = integrate_problem(problem, model, TruncationOptions(bins_per_decade=6, rule_order=6, exact_top=16), solver)
    detection = detect_phases(trajectory)
    fit = detection.power_law
    fitted.append(math.nan if fit is None else fit.exponent)
    errors.append(math.nan if fit is None else fit.standard_error)
    print(f"a = {a}: fitted exponent {fitted[-1]:.4f}, predicted {(a - 1) / a:.4f}")

# %% [markdown]
# Escape time against `ln d` at `a = 1.5`, one random start per `d`.

# %%
dimensions = [100, 1000, 10000] if QUICK else [100, 1000, 10000, 100000, 1000000]
measured, leading, corrected = [], [], []
for d in dimensions:
    problem = PowerLawSpec(d=d, a=1.5, b=0.0, sigma0=0.1, seed=0).build()
    trajectory = integrate_problem(
        problem, model, TruncationOptions(bins_per_decade=8, rule_order=6, exact_top=16),
        SolverOptions(t_first=1e-2, t_end=1e3, n_out=120, rtol=1e-10, atol=1e-14),
    )
    prediction = predict_escape(problem)
    measured.append(trajectory.event_times["escape"])
    leading.append(prediction.leading)
    corrected.append(prediction.corrected)
    print(f"d = {d}: escape {measured[-1]:.3f}, leading {leading[-1]:.3f}, corrected {corrected[-1]:.3f}")

# %%
figure = Figure(figsize=(10, 4))
exponent_axes, escape_axes = figure.subplots(1, 2)
grid = np.linspace(min(exponents), max(exponents), 100)
exponent_axes.plot(grid, (grid - 1) / grid, label="(a + b - 1) / a")
exponent_axes.errorbar(exponents, fitted, yerr=errors, marker="o", linestyle="none", label="fitted, d = inf")
exponent_axes.set_xlabel("a")
exponent_axes.set_ylabel("tail exponent")
exponent_axes.legend()
escape_axes.plot(np.log(dimensions), measured, marker="o", label="measured")
escape_axes.plot(np.log(dimensions), leading, linestyle="--", label="leading order")
escape_axes.plot(np.log(dimensions), corrected, linestyle=":", label="corrected")
escape_axes.set_xlabel("ln d")
escape_axes.set_ylabel("escape time")
escape_axes.legend()
save(figure, "scaling_laws")
