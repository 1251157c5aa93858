"""Spectra from data files and built-in data sets, power-law fits, and the hierarchy on real spectra."""

import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the package supports Python 3.10 through tomli
    import tomli as tomllib

from hierarchy import data_spectra
from hierarchy.builtin_datasets import digits_data, image_patches, load_builtin
from hierarchy.config import ConfigError, parse_config
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


def _write_npy_header(path, shape, descr="<f8", payload=b""):
    """Write a version 1.0 ``.npy`` header for ``shape`` followed by ``payload`` bytes."""
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": descr, "fortran_order": False, "shape": shape})
        handle.write(payload)


def _special_paths(tmp_path):
    """Return {name: (path, expected message)} for paths that cannot be read as arrays."""
    archive = tmp_path / "archive.npz"
    np.savez(archive, values=np.ones(3))
    renamed = tmp_path / "archive.npy"
    archive.rename(renamed)
    directory = tmp_path / "directory.npy"
    directory.mkdir()
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    memory = tmp_path / "memory.npy"
    memory.symlink_to("/proc/self/mem")
    return {
        "npz renamed to npy": (renamed, "zip archive"),
        "directory": (directory, "is a directory"),
        "fifo": (fifo, r"is a named pipe \(FIFO\)"),
        "device": (Path("/dev/null"), "is a device"),
        "name too long": (tmp_path / ("a" * 300 + ".npy"), "could not be opened: File name too long"),
        "nul character": (tmp_path / "pl\0.npy", "contains a NUL character"),
        "parent is a file": (renamed / "values.npy", "not a directory"),
        "read error": (memory, "could not be read: Input/output error"),
    }


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux: named pipes, /dev/null, /proc/self/mem")
@pytest.mark.parametrize(
    "case",
    ["npz renamed to npy", "directory", "fifo", "device", "name too long", "nul character", "parent is a file",
     "read error"],
)
def test_unreadable_file_raises_value_error(tmp_path, case):
    path, message = _special_paths(tmp_path)[case]
    with pytest.raises(ValueError, match=message):
        load_spectrum(path)


def _assert_rejected_without_warning(path, message):
    """Check that ``load_spectrum(path)`` raises ``ValueError`` matching ``message`` and warns of nothing."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=message):
            load_spectrum(path)


def test_complex_eigenvalues_rejected(tmp_path):
    path = tmp_path / "complex.npy"
    np.save(path, np.array([1.0 + 1.0j, 0.5, 0.2]))
    _assert_rejected_without_warning(path, "complex values")


def test_large_negative_eigenvalue_rejected(tmp_path):
    path = tmp_path / "negative.npy"
    np.save(path, np.array([1.0, 0.5, -0.3]))
    with pytest.raises(ValueError, match=r"1 of the 3 eigenvalues is below -1e-10 times the largest one \(1\)"):
        load_spectrum(path)


def test_rounding_negatives_dropped_and_logged(tmp_path, caplog):
    path = tmp_path / "rounding.npy"
    np.save(path, np.array([1.0, 0.5, 0.0, -5e-11]))
    with caplog.at_level(logging.INFO, logger="hierarchy.data_spectra"):
        spectrum = load_spectrum(path)
    assert spectrum.dropped == 2
    assert np.array_equal(spectrum.eigenvalues, [1.0, 0.5])
    assert "dropped 2 of 4 eigenvalues" in caplog.text


def test_plain_numbers_in_messages(tmp_path):
    path = tmp_path / "negative.npy"
    np.save(path, np.array([-0.5, -1.0]))
    with pytest.raises(ValueError, match="the largest eigenvalue is -0.5;"):
        load_spectrum(path)


def test_wide_data_uses_gram_matrix(monkeypatch):
    rng = np.random.default_rng(1)
    data = rng.standard_normal((6, 40))
    expected = np.sort(np.linalg.eigvalsh(np.cov(data, rowvar=False)))[::-1]
    shapes = []
    eigvalsh = np.linalg.eigvalsh

    def recording_eigvalsh(matrix):
        shapes.append(matrix.shape)
        return eigvalsh(matrix)

    monkeypatch.setattr(np.linalg, "eigvalsh", recording_eigvalsh)
    eigenvalues = covariance_spectrum(data)
    assert shapes == [(6, 6)]
    assert eigenvalues.shape == (40,)
    assert np.allclose(eigenvalues, expected, rtol=1e-10, atol=1e-12 * expected[0])


def test_data_matrix_size_limit(monkeypatch):
    monkeypatch.setattr(data_spectra, "MAX_COVARIANCE_SIZE", 10)
    data = np.random.default_rng(2).standard_normal((11, 12))
    with pytest.raises(ValueError, match="11 samples and 12 features; the smaller of the two must be at most 10"):
        covariance_spectrum(data)
    # Fewer samples than the limit: the Gram matrix stays small, whatever the feature count.
    assert covariance_spectrum(data[:10]).shape == (12,)


def test_data_overflow_reported():
    data = np.array([[1e200, 0.0], [-1e200, 1.0], [0.0, 2.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="overflows float64"):
            covariance_spectrum(data)


def test_patch_memory_checked_first():
    with pytest.raises(ValueError, match=r"patch_size = 64 and n_patches = 1000000 .* n_patches <= 24414"):
        image_patches(patch_size=64, n_patches=1_000_000)


def test_npy_header_size_checked(tmp_path):
    claims_too_many = tmp_path / "huge_header.npy"
    _write_npy_header(claims_too_many, (10**10,))
    with pytest.raises(ValueError, match="claims 10000000000 elements"):
        load_spectrum(claims_too_many)

    claims_more_than_stored = tmp_path / "short.npy"
    _write_npy_header(claims_more_than_stored, (1000,), payload=np.ones(3).tobytes())
    with pytest.raises(ValueError, match="claims 1000 elements .* only 24 bytes follow"):
        load_spectrum(claims_more_than_stored)


def test_csv_with_byte_order_mark(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf1.0\n0.5\n0.2\n")
    assert np.allclose(load_spectrum(path).eigenvalues, [1.0, 0.5, 0.2])


def test_empty_text_file_no_warning(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("")
    _assert_rejected_without_warning(path, "contains no numbers")


def test_suffix_message_lists_dat(tmp_path):
    path = tmp_path / "values.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"use \.npy, \.csv, \.txt, \.dat$"):
        load_spectrum(path)
    dat = tmp_path / "values.dat"
    dat.write_text("2\n1\n")
    assert np.allclose(load_spectrum(dat).eigenvalues, [1.0, 0.5])


def test_fit_range_message_shows_default_last():
    with pytest.raises(ValueError) as raised:
        EmpiricalSpec((1.0, 0.5, 0.2, 0.1), "test", fit_first=0)
    assert "fit_last = 4 (the default" in str(raised.value)
    assert "None" not in str(raised.value)


def _problem_error(tmp_path, problem: str) -> str:
    with pytest.raises(ConfigError) as raised:
        parse_config(tomllib.loads("[problem]\n" + problem), source=str(tmp_path / "run.toml"))
    return str(raised.value)


@pytest.mark.parametrize(
    "problem, expected",
    [
        ('spectrum = "dataset"\ndataset = "image_patches"\ndataset_seed = -1\n',
         "problem.dataset_seed = -1 is invalid: the seed of the patch positions must be an integer in [0, 2^63)"),
        ('spectrum = "dataset"\ndataset = "image_patches"\npatch_size = 64\nn_patches = 1000000\n',
         "problem.patch_size = 64 and n_patches = 1000000 are invalid together"),
        ('spectrum = "file"\nspectrum_file = ""\n', 'problem.spectrum_file = "" is invalid: the path is empty'),
        ('spectrum = "file"\nspectrum_file = "."\n', "is a directory, expected a regular file"),
    ],
)
def test_config_names_spectrum_key(tmp_path, problem, expected):
    assert expected in _problem_error(tmp_path, problem)


def test_config_reports_unreadable_file(tmp_path):
    archive = tmp_path / "values.npy"
    np.savez(tmp_path / "values.npz", values=np.ones(3))
    (tmp_path / "values.npz").rename(archive)
    message = _problem_error(tmp_path, 'spectrum = "file"\nspectrum_file = "values.npy"\n')
    assert message.startswith(f"{tmp_path / 'run.toml'}: problem.spectrum_file = '{archive}' is invalid: ")
    assert "zip archive" in message
