"""Spectra from data files and built-in data sets, power-law fits, and the hierarchy on real spectra."""

import numpy as np
import pytest

from hierarchy.builtin_datasets import digits_data, image_patches, load_builtin
from hierarchy.data_spectra import covariance_spectrum, fit_power_law, load_spectrum, spectrum_from_data
from hierarchy.model import PhaseRetrieval
from hierarchy.pipeline import SolverOptions, TruncationOptions, integrate_problem
from hierarchy.spectrum import EmpiricalSpec

MODEL = PhaseRetrieval()


def test_covariance_spectrum_matches_numpy(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((500, 20)) @ rng.standard_normal((20, 20)) + 3.0
    expected = np.sort(np.linalg.eigvals(np.cov(data, rowvar=False)).real)[::-1]
    assert np.allclose(covariance_spectrum(data), expected, rtol=1e-10, atol=0.0)

    path = tmp_path / "data.npy"
    np.save(path, data)
    spectrum = load_spectrum(path, kind="data", normalisation="none")
    assert np.allclose(spectrum.eigenvalues, expected, rtol=1e-10, atol=0.0)
    assert spectrum.n_samples == 500

    csv_path = tmp_path / "data.csv"
    np.savetxt(csv_path, data, delimiter=",")
    assert np.allclose(load_spectrum(csv_path, kind="data", normalisation="none").eigenvalues, expected, rtol=1e-10)


def test_eigenvalue_file_and_normalisations(tmp_path):
    path = tmp_path / "eigenvalues.txt"
    np.savetxt(path, [0.5, 2.0, 1.0, 0.0, -1e-18])
    top = load_spectrum(path, normalisation="top")
    assert np.allclose(top.eigenvalues, [1.0, 0.5, 0.25])
    assert top.dropped == 2
    trace = load_spectrum(path, normalisation="trace")
    assert trace.eigenvalues.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "content, kind, message",
    [
        ("1,2\n3\n", "data", "ragged|could not be read"),
        ("1,2\nnan,4\n5,6\n", "data", "NaN"),
        ("1,2,3\n", "data", "at least 2 samples"),
        ("1\n2\nnan\n", "eigenvalues", "NaN"),
        ("-1\n-2\n", "eigenvalues", "positive"),
    ],
)
def test_bad_files_rejected(tmp_path, content, kind, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_spectrum(path, kind=kind)


def test_bad_arrays_rejected(tmp_path):
    cube = tmp_path / "cube.npy"
    np.save(cube, np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="2-D"):
        load_spectrum(cube, kind="data")
    with pytest.raises(ValueError, match="1-D"):
        load_spectrum(cube, kind="eigenvalues")

    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="plain numeric"):
        load_spectrum(pickled)

    with pytest.raises(ValueError, match="not found"):
        load_spectrum(tmp_path / "missing.npy")
    other = tmp_path / "data.json"
    other.write_text("[1, 2]")
    with pytest.raises(ValueError, match="unsupported suffix"):
        load_spectrum(other)


def test_power_law_fit_recovers_exponent():
    rng = np.random.default_rng(3)
    index = np.arange(1, 401)
    for a in (0.8, 1.5, 2.5):
        eigenvalues = 2.0 * index ** (-a) * np.exp(0.05 * rng.standard_normal(index.size))
        fit = fit_power_law(eigenvalues, first=5, last=400)
        assert abs(fit.a - a) <= 3 * fit.a_error
        assert fit.a_error < 0.01
        assert fit.prefactor == pytest.approx(2.0, rel=0.05)


def test_power_law_fit_validates_range():
    with pytest.raises(ValueError, match="fit range"):
        fit_power_law(np.ones(10), first=0, last=5)
    with pytest.raises(ValueError, match="at least 3"):
        fit_power_law(np.ones(10), first=1, last=2)


def test_builtin_data_sets():
    digits = digits_data()
    assert digits.shape == (1797, 64)
    spectrum = spectrum_from_data(digits, "digits")
    # Some border pixels of the digits never change: their variance is zero.
    assert spectrum.dropped >= 1
    assert spectrum.eigenvalues[0] == pytest.approx(1.0)

    patches = image_patches(patch_size=6, n_patches=500, seed=1)
    assert patches.shape == (500, 36)
    assert np.array_equal(patches, image_patches(patch_size=6, n_patches=500, seed=1))
    with pytest.raises(ValueError, match="not available"):
        load_builtin("mnist")
    with pytest.raises(ValueError, match="patch_size"):
        image_patches(patch_size=1)


@pytest.mark.parametrize("name, options", [("digits", {}), ("image_patches", {"patch_size": 12, "n_patches": 20000})])
def test_spectral_modes_match_exact_flow_on_real_spectra(name, options):
    spectrum = spectrum_from_data(load_builtin(name, **options), name)
    problem = EmpiricalSpec(tuple(spectrum.eigenvalues), name, b=0.0, sigma0=0.1, seed=0).build()
    solver = SolverOptions(t_first=0.1, t_end=1e7, n_out=120, rtol=1e-11, atol=1e-16)
    exact = integrate_problem(problem, MODEL, TruncationOptions(kind="exact"), solver)
    modes = integrate_problem(problem, MODEL, TruncationOptions(kind="spectral_modes", bins_per_decade=8, rule_order=6), solver)
    assert exact.success
    assert modes.success
    relevant = exact.loss > 1e-8
    assert np.max(np.abs(modes.loss[relevant] / exact.loss[relevant] - 1)) <= 1e-4
    assert abs(exact.m1[-1]) == pytest.approx(1.0, abs=1e-3)
