# ---
# jupyter:
#   jupytext:
#     formats: py:percent,ipynb
# ---

# %% [markdown]
# # Real data spectra: handwritten digits and photograph patches
#
# The covariance spectra of two data sets shipped with scikit-learn, a
# power law fitted to each, and the hierarchy integrated on the measured
# spectrum next to the fitted pure power law.

# %%
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parent) if "__file__" in globals() else ".")
from _common import QUICK, save

from hierarchy.builtin_datasets import load_builtin
from hierarchy.data_spectra import fit_power_law, spectrum_from_data
from hierarchy.model import PhaseRetrieval
from hierarchy.phases import find_escape_time
from hierarchy.pipeline import SolverOptions, TruncationOptions, integrate_problem
from hierarchy.spectrum import EmpiricalSpec

model = PhaseRetrieval()
solver = SolverOptions(t_first=1e-2, t_end=1e5 if QUICK else 1e8, n_out=150, rtol=1e-10, atol=1e-14)
sources = {
    "digits": load_builtin("digits"),
    "image_patches": load_builtin("image_patches", patch_size=12, n_patches=5000 if QUICK else 20000),
}

# %%
figure = Figure(figsize=(10, 4))
spectrum_axes, loss_axes = figure.subplots(1, 2)
for name, data in sources.items():
    spectrum = spectrum_from_data(data, name)
    d = spectrum.eigenvalues.size
    fit = fit_power_law(spectrum.eigenvalues, first=2, last=max(3, d // 2))
    print(f"{name}: d = {d}, dropped {spectrum.dropped}, a = {fit.a:.3f} ± {fit.a_error:.3f} over i in [{fit.first}, {fit.last}]")
    index = np.arange(1, d + 1)
    spectrum_axes.loglog(index, spectrum.eigenvalues, marker=".", linestyle="none", label=name)
    spectrum_axes.loglog(index, fit.predict(index), linestyle="--", label=f"fit a = {fit.a:.2f}")

    # The fitted law keeps the scale of the data, so both problems see the same bulk.
    fitted_eigenvalues = fit.predict(index)
    measured = EmpiricalSpec(tuple(spectrum.eigenvalues), name).build()
    fitted = EmpiricalSpec(tuple(fitted_eigenvalues), f"{name} fit").build()
    for problem, style in ((measured, "-"), (fitted, "--")):
        trajectory = integrate_problem(problem, model, TruncationOptions(kind="exact"), solver)
        escape = find_escape_time(trajectory.t, trajectory.m1, trajectory.rho1)
        print(f"  {problem.spec.source}: escape time {escape:.3f}, final loss {trajectory.loss[-1]:.3e}")
        loss_axes.loglog(trajectory.t, trajectory.loss, linestyle=style, label=problem.spec.source)

spectrum_axes.set_xlabel("index i")
spectrum_axes.set_ylabel("eigenvalue")
spectrum_axes.legend(fontsize=7)
loss_axes.set_xlabel("time t")
loss_axes.set_ylabel("loss L")
loss_axes.set_ylim(1e-10, 2)
loss_axes.legend(fontsize=7)
save(figure, "real_spectra")
