# ---
# jupyter:
#   jupytext:
#     formats: py:percent,ipynb
# ---

# %% [markdown]
# # One-pass SGD against the ODE
#
# One-pass SGD with step `η` maps to ODE time `t = η · steps`. Its mean loss
# over seeds follows the ODE through the three phases, with a bias of order
# `η`; halving `η` about halves it.

# %%
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parent) if "__file__" in globals() else ".")
from _common import QUICK, save

from hierarchy.experiments import TrainingSettings
from hierarchy.simulation import run_simulation
from hierarchy.spectrum import PowerLawSpec

spec = PowerLawSpec(d=100, a=1.5, b=0.0, sigma0=0.1)
horizon = 200.0 if QUICK else 2000.0
seeds = tuple(range(4 if QUICK else 16))

# %%
figure = Figure(figsize=(6, 4))
axes = figure.subplots()
for eta in (0.01, 0.005):
    settings = TrainingSettings(method="sgd", eta=eta, steps=int(horizon / eta), seeds=seeds, test_size=0, record_points=60)
    result = run_simulation(spec, settings)
    difference, error = result.relative_loss_difference()
    late = np.isfinite(difference) & (result.t >= 30.0)
    print(f"eta = {eta}: mean relative loss difference to the ODE for t >= 30: {np.mean(difference[late]):+.2%}")
    axes.loglog(result.t[1:], result.training.mean("loss")[1:], label=f"SGD, eta = {eta}")
axes.loglog(result.t[1:], result.ode_mean("loss")[1:],
            color="black", linestyle="--", label="ODE")
axes.set_xlabel("time t = eta * steps")
axes.set_ylabel("loss")
axes.legend()
save(figure, "sgd_vs_ode")
