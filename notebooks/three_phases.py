# ---
# jupyter:
#   jupytext:
#     formats: py:percent,ipynb
# ---

# %% [markdown]
# # The three phases of phase retrieval on a power-law spectrum
#
# Gradient flow on `L = ¼ E[(ŷ − y)²]` with `λ_i = i^(-a)`, `a = 1.5`, a flat
# teacher and a small random start. The loss first stays near `L(0)` while
# the overlap `m_1` escapes from its tiny initial value (phase 1), then the
# summary statistics `(m_1, q_1)` converge to `(ρ_1, ρ_1)` (phase 2), and
# finally the low-variance directions are learned one by one, each at rate
# `2ρ_1 λ_i`, which gives the power-law tail of the loss (phase 3).

# %%
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parent) if "__file__" in globals() else ".")
from _common import QUICK, save

from hierarchy.model import PhaseRetrieval
from hierarchy.phases import analyze_phases, predict_tail_loss
from hierarchy.pipeline import SolverOptions, TruncationOptions, integrate_problem
from hierarchy.spectrum import PowerLawSpec

d = 500 if QUICK else 2000
t_end = 1e5 if QUICK else 1e7
model = PhaseRetrieval()
problem = PowerLawSpec(d=d, a=1.5, b=0.0, sigma0=0.1, seed=0).build()
solver = SolverOptions(t_first=1e-2, t_end=t_end, n_out=200, rtol=1e-10, atol=1e-14)

# %% [markdown]
# Integrate the spectral-mode truncation and, as the reference, the exact
# d-dimensional flow; the difference shows how close the truncation is.

# %%
modes = integrate_problem(problem, model, TruncationOptions(kind="spectral_modes"), solver)
exact = integrate_problem(problem, model, TruncationOptions(kind="exact"), solver)
relevant = exact.loss > 1e-8 * exact.loss[0]
print(f"{modes.truncation}: {modes.message}, {modes.state_size} equations")
print(f"max relative loss error against the exact flow: {np.max(np.abs(modes.loss[relevant] / exact.loss[relevant] - 1)):.2e}")

# %% [markdown]
# Phase boundaries and the phase-3 prediction `ρ_1 Σ_i λ_i w*_i² exp(−4ρ_1 λ_i t)`.

# %%
tail = predict_tail_loss(problem, modes.t)
report = analyze_phases(modes, problem, initial_loss=float(modes.loss[0]), tail_prediction=tail)
print(f"escape time: {report.escape_time:.3f} (event located on the dense output: {modes.event_times['escape']:.3f})")
print(f"convergence time: {report.convergence_time:.4g}")

figure = Figure(figsize=(7, 7))
axes = figure.subplots(2, 1, sharex=True)
axes[0].loglog(modes.t, modes.loss, color="black", label="L(t), spectral modes")
axes[0].loglog(modes.t, tail, linestyle=":", label="phase-3 prediction")
axes[1].semilogx(modes.t, np.abs(modes.m1), label="|m_1|")
axes[1].semilogx(modes.t, modes.q1, label="q_1")
for ax in axes:
    ax.axvline(report.escape_time, color="tab:red", linestyle="--", linewidth=0.8)
    ax.axvline(report.convergence_time, color="tab:green", linestyle="--", linewidth=0.8)
    ax.legend()
axes[0].set_ylim(max(1e-14, modes.loss[relevant].min() / 10), 2)
axes[1].set_xlabel("time t")
save(figure, "three_phases")
