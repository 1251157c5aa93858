"""Covariance spectra measured from data: reading, normalising and fitting a power law.

A spectrum comes either from a file of eigenvalues (``.npy`` with a 1-D
array, or ``.csv``/text with one value a line) or from a data matrix
(samples x features, ``.npy`` 2-D or ``.csv`` with one sample a row). A data
matrix is centred column by column and its sample covariance
``X_c^T X_c / (n - 1)`` diagonalised; the eigenvalues are sorted in
decreasing order. Eigenvalues at or below ``ROUNDING_FRACTION`` times the
largest one (zero-variance features, negative rounding values) carry no
learnable direction and are dropped; the number dropped is reported.

Files are read as plain numbers only: ``.npy`` with ``allow_pickle=False``
and text with ``numpy.loadtxt``, so a file can never run code.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROUNDING_FRACTION = 1e-12
NORMALISATIONS = ("none", "top", "trace")
SOURCE_KINDS = ("eigenvalues", "data")


@dataclass(frozen=True)
class MeasuredSpectrum:
    """Eigenvalues in decreasing order, with how they were obtained."""

    eigenvalues: np.ndarray
    source: str
    n_samples: int | None
    n_features: int
    dropped: int
    normalisation: str
    scale: float

    def describe(self) -> dict:
        """Return the provenance as plain numbers and strings."""
        return {
            "source": self.source,
            "n_samples": self.n_samples,
            "n_features": self.n_features,
            "eigenvalues_kept": int(self.eigenvalues.size),
            "eigenvalues_dropped": self.dropped,
            "normalisation": self.normalisation,
            "normalisation_scale": self.scale,
        }


def _read_array(path: Path, kind: str) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"spectrum file {path} not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise ValueError(f"spectrum file {path} is not a plain numeric .npy array: {error}") from None
    elif suffix in (".csv", ".txt", ".dat"):
        delimiter = "," if suffix == ".csv" else None
        try:
            array = np.loadtxt(path, delimiter=delimiter, dtype=np.float64, ndmin=1 if kind == "eigenvalues" else 2)
        except ValueError as error:
            raise ValueError(f"spectrum file {path} could not be read as numbers (ragged rows or text?): {error}") from None
    else:
        raise ValueError(f"spectrum file {path} has the unsupported suffix {suffix!r}; use .npy, .csv or .txt")
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"spectrum file {path} contains {array.dtype} values, not numbers")
    return np.asarray(array, dtype=np.float64)


def covariance_spectrum(data: np.ndarray) -> np.ndarray:
    """Return the eigenvalues of the sample covariance of ``data`` (samples x features), in decreasing order."""
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"a data matrix must be 2-D (samples x features), got shape {data.shape}")
    n_samples, n_features = data.shape
    if n_samples < 2:
        raise ValueError(f"a data matrix needs at least 2 samples to estimate a covariance, got {n_samples}")
    if n_features < 1:
        raise ValueError("a data matrix needs at least one feature")
    if not np.all(np.isfinite(data)):
        raise ValueError("the data matrix contains NaN or infinite values")
    centred = data - data.mean(axis=0)
    covariance = centred.T @ centred / (n_samples - 1)
    return np.sort(np.linalg.eigvalsh(covariance))[::-1]


def _clean_and_normalise(eigenvalues, normalisation):
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation = {normalisation!r} is not available; choose one of {list(NORMALISATIONS)}")
    eigenvalues = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    if eigenvalues.size == 0:
        raise ValueError("the spectrum is empty")
    if not np.all(np.isfinite(eigenvalues)):
        raise ValueError("the spectrum contains NaN or infinite values")
    if not eigenvalues[0] > 0:
        raise ValueError(f"the largest eigenvalue is {eigenvalues[0]!r}; a covariance spectrum needs a positive one")

    kept = eigenvalues[eigenvalues > ROUNDING_FRACTION * eigenvalues[0]]
    dropped = eigenvalues.size - kept.size
    scale = 1.0
    if normalisation == "top":
        scale = 1.0 / kept[0]
    elif normalisation == "trace":
        scale = 1.0 / float(np.sum(kept))
    return kept * scale, dropped, scale


def load_spectrum(path, kind: str = "eigenvalues", normalisation: str = "top") -> MeasuredSpectrum:
    """Read a spectrum from ``path``: a file of eigenvalues or a data matrix (``kind``)."""
    if kind not in SOURCE_KINDS:
        raise ValueError(f"kind = {kind!r} is not available; choose one of {list(SOURCE_KINDS)}")
    path = Path(path)
    array = _read_array(path, kind)
    if kind == "eigenvalues":
        if array.ndim != 1:
            raise ValueError(
                f"spectrum file {path} contains an array of shape {array.shape}; a file of eigenvalues must be 1-D "
                "(use kind = \"data\" for a samples x features matrix)"
            )
        eigenvalues, dropped, scale = _clean_and_normalise(array, normalisation)
        return MeasuredSpectrum(eigenvalues, str(path), None, array.size, dropped, normalisation, scale)

    if array.ndim != 2:
        raise ValueError(f"data file {path} contains an array of shape {array.shape}; a data matrix must be 2-D")
    eigenvalues, dropped, scale = _clean_and_normalise(covariance_spectrum(array), normalisation)
    return MeasuredSpectrum(eigenvalues, str(path), array.shape[0], array.shape[1], dropped, normalisation, scale)


def spectrum_from_data(data, source: str, normalisation: str = "top") -> MeasuredSpectrum:
    """Return the normalised covariance spectrum of an in-memory data matrix."""
    data = np.asarray(data, dtype=np.float64)
    eigenvalues, dropped, scale = _clean_and_normalise(covariance_spectrum(data), normalisation)
    return MeasuredSpectrum(eigenvalues, source, data.shape[0], data.shape[1], dropped, normalisation, scale)


@dataclass(frozen=True)
class PowerLawFit:
    """``lam_i ≈ C i^(-a)`` fitted by least squares in log-log over ``first <= i <= last``.

    ``a_error`` is the standard error of the slope from the residuals,
    assuming independent residuals; neighbouring eigenvalues of a sample
    covariance are correlated, so it understates the uncertainty of a
    measured spectrum and is best read as a lower bound there.
    """

    a: float
    a_error: float
    prefactor: float
    first: int
    last: int
    residual_rms: float

    def predict(self, index) -> np.ndarray:
        return self.prefactor * np.asarray(index, dtype=np.float64) ** (-self.a)


def fit_power_law(eigenvalues, first: int = 1, last: int | None = None) -> PowerLawFit:
    """Fit ``log lam_i = log C - a log i`` over the 1-based index range ``[first, last]``."""
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    last = eigenvalues.size if last is None else int(last)
    if not (1 <= first < last <= eigenvalues.size):
        raise ValueError(f"the fit range [{first}, {last}] must satisfy 1 <= first < last <= {eigenvalues.size}")
    if last - first + 1 < 3:
        raise ValueError("a power-law fit with an uncertainty needs at least 3 eigenvalues")
    index = np.arange(first, last + 1, dtype=np.float64)
    values = eigenvalues[first - 1 : last]
    if not np.all(values > 0):
        raise ValueError("a power-law fit needs positive eigenvalues in the fit range")

    x = np.log(index)
    y = np.log(values)
    design = np.vstack((np.ones_like(x), -x)).T
    coefficients, _, _, _ = np.linalg.lstsq(design, y, rcond=None)
    residuals = y - design @ coefficients
    dof = x.size - 2
    sigma2 = float(residuals @ residuals) / dof
    covariance = sigma2 * np.linalg.inv(design.T @ design)
    return PowerLawFit(
        a=float(coefficients[1]),
        a_error=float(math.sqrt(covariance[1, 1])),
        prefactor=float(math.exp(coefficients[0])),
        first=int(first),
        last=int(last),
        residual_rms=float(math.sqrt(sigma2)),
    )
