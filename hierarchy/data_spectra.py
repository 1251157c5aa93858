"""Covariance spectra measured from data: reading, normalising and fitting a power law.

A spectrum comes either from a file of eigenvalues (``.npy`` with a 1-D
array, or ``.csv``/text with one value a line) or from a data matrix
(samples x features, ``.npy`` 2-D or ``.csv`` with one sample a row). A data
matrix is centred column by column and its sample covariance
``X_c^T X_c / (n - 1)`` diagonalised; the eigenvalues are sorted in
decreasing order. Eigenvalues below ``-NEGATIVE_TOLERANCE`` times the largest
one are rejected, because a covariance has none beyond rounding. Eigenvalues
at or below ``ROUNDING_FRACTION`` times the largest one (zero-variance
features, rounding values) carry no learnable direction and are dropped; the
number dropped is logged and stored in the provenance.

Files are read as plain numbers only: ``.npy`` with ``allow_pickle=False``
and text with ``numpy.loadtxt``, so a file can never run code. Every failure
to read a file raises ``ValueError`` naming the file and the reason.
"""

import io
import logging
import math
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

ROUNDING_FRACTION = 1e-12
NEGATIVE_TOLERANCE = 1e-10
NORMALISATIONS = ("none", "top", "trace")
SOURCE_KINDS = ("eigenvalues", "data")
SUFFIXES = (".npy", ".csv", ".txt", ".dat")
# Largest array read from a file or built from a data set: 1e8 float64
# entries are 800 MB.
MAX_DATA_ENTRIES = 10**8
# Largest min(samples, features) of a data matrix: 64^2, the feature count of
# the largest image_patches. The eigendecomposition costs this size cubed, and
# numpy.linalg.eigvalsh of a random 4096 x 4096 matrix took 7 to 30 s on two
# shared CPU cores.
MAX_COVARIANCE_SIZE = 4096
_ZIP_MAGIC = b"PK\x03\x04"


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


def _describe_file_type(mode: int) -> str | None:
    """Return what a non-regular file is ("a directory", ...), or ``None`` for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _open_error(error: Exception, path: Path, label: str) -> ValueError:
    """Return the ``ValueError`` for an ``OSError`` or ``ValueError`` of ``os.stat`` or ``os.open`` on ``path``."""
    if isinstance(error, FileNotFoundError):
        return ValueError(f"{label} {path} not found")
    if isinstance(error, NotADirectoryError):
        return ValueError(f"{label} {path} not found: a part of the path before the file name is not a directory")
    if isinstance(error, PermissionError):
        return ValueError(f"{label} {path} could not be opened: permission denied")
    if isinstance(error, OSError):
        return ValueError(f"{label} {path} could not be opened: {error.strerror or error}")
    # os.stat and os.open raise ValueError for a path with a NUL character.
    return ValueError(f"{label} path {str(path)!r} is invalid: it contains a NUL character")


def _check_regular_file(path: Path, label: str) -> None:
    """Raise ``ValueError`` unless ``path`` names an existing regular file, without opening it."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError) as error:
        raise _open_error(error, path, label) from None
    file_type = _describe_file_type(mode)
    if file_type is not None:
        raise ValueError(f"{label} {path} is {file_type}, expected a regular file")


def _open_regular_file(path: Path, label: str):
    """Open the regular file ``path`` for binary reading.

    The file type is checked again on the open descriptor, in case the path
    changed after ``_check_regular_file``. ``O_NONBLOCK`` keeps the open of a
    pipe put there in between from waiting for a writer.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (OSError, ValueError) as error:
        raise _open_error(error, path, label) from None
    try:
        file_type = _describe_file_type(os.fstat(descriptor).st_mode)
        if file_type is not None:
            raise ValueError(f"{label} {path} is {file_type}, expected a regular file")
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _check_dtype(dtype: np.dtype, path: Path, label: str) -> None:
    if dtype.kind == "c":
        raise ValueError(
            f"{label} {path} contains complex values ({dtype}); eigenvalues and data must be real. "
            "Save the real part (numpy.real) if the imaginary parts are rounding errors"
        )
    if dtype.kind not in "iuf":
        raise ValueError(f"{label} {path} is not a plain numeric array: it contains {dtype} values, expected real numbers")


def _read_npy(handle, path: Path, label: str) -> np.ndarray:
    """Read a ``.npy`` array after checking its header: a real dtype and a size that the file holds."""
    if handle.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC:
        raise ValueError(
            f"{label} {path} is a zip archive (a .npz file?), not a .npy array; "
            "save the one array with numpy.save"
        )
    handle.seek(0)
    try:
        version = np.lib.format.read_magic(handle)
        # Version 3.0 differs from 2.0 only in allowing UTF-8 field names,
        # which belong to structured dtypes that _check_dtype rejects anyway.
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(handle)
    except ValueError as error:
        raise ValueError(f"{label} {path} is not a valid .npy file: {error}") from None
    _check_dtype(dtype, path, label)

    count = math.prod(shape)
    if count > MAX_DATA_ENTRIES:
        raise ValueError(
            f"{label} {path} claims {count} elements in its header (shape {tuple(shape)}), more than the limit "
            f"of {MAX_DATA_ENTRIES:.0e}"
        )
    available = os.fstat(handle.fileno()).st_size - handle.tell()
    if count * dtype.itemsize > available:
        raise ValueError(
            f"{label} {path} claims {count} elements of {dtype} in its header (shape {tuple(shape)}, "
            f"{count * dtype.itemsize} bytes) but only {available} bytes follow the header; "
            "the file is truncated or its header is wrong"
        )
    handle.seek(0)
    try:
        return np.lib.format.read_array(handle, allow_pickle=False)
    except ValueError as error:
        raise ValueError(f"{label} {path} is not a plain numeric .npy array: {error}") from None


def _read_text(handle, path: Path, label: str, kind: str) -> np.ndarray:
    """Read numbers from UTF-8 text (a byte order mark is allowed), comma-separated for ``.csv``."""
    delimiter = "," if path.suffix.lower() == ".csv" else None
    text = io.TextIOWrapper(handle, encoding="utf-8-sig")
    try:
        with warnings.catch_warnings():
            # An empty file is reported below as an error of its own.
            warnings.filterwarnings("ignore", message="loadtxt: input contained no data", category=UserWarning)
            return np.loadtxt(text, delimiter=delimiter, dtype=np.float64, ndmin=1 if kind == "eigenvalues" else 2)
    except UnicodeDecodeError as error:
        raise ValueError(f"{label} {path} is not UTF-8 text ({error.reason}); save it as UTF-8 or ASCII") from None
    except ValueError as error:
        raise ValueError(f"{label} {path} could not be read as numbers (ragged rows or text?): {error}") from None
    finally:
        text.detach()


def _read_array(path: Path, kind: str) -> np.ndarray:
    """Read the array of the file at ``path`` as float64, raising ``ValueError`` for every failure."""
    label = "data file" if kind == "data" else "spectrum file"
    _check_regular_file(path, label)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{label} {path} has the unsupported suffix {suffix!r}; use {', '.join(SUFFIXES)}")

    handle = _open_regular_file(path, label)
    try:
        with handle:
            array = _read_npy(handle, path, label) if suffix == ".npy" else _read_text(handle, path, label, kind)
    except OSError as error:
        raise ValueError(f"{label} {path} could not be read: {error.strerror or error}") from None
    except MemoryError:
        raise ValueError(f"{label} {path} could not be read: not enough memory for its array") from None

    _check_dtype(array.dtype, path, label)
    if array.size == 0:
        raise ValueError(f"{label} {path} contains no numbers")
    if array.size > MAX_DATA_ENTRIES:
        raise ValueError(f"{label} {path} contains {array.size} numbers, more than the limit of {MAX_DATA_ENTRIES:.0e}")
    return np.asarray(array, dtype=np.float64)


def covariance_spectrum(data: np.ndarray) -> np.ndarray:
    """Return the eigenvalues of the sample covariance of ``data`` (samples x features), in decreasing order.

    With fewer samples than features the covariance is diagonalised through
    the smaller Gram matrix ``X_c X_c^T``, because it has the same nonzero
    eigenvalues. The remaining ``features - samples`` eigenvalues are zero.
    """
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"a data matrix must be 2-D (samples x features), got shape {data.shape}")
    n_samples, n_features = data.shape
    if n_samples < 2:
        raise ValueError(f"a data matrix needs at least 2 samples to estimate a covariance, got {n_samples}")
    if n_features < 1:
        raise ValueError("a data matrix needs at least one feature")
    if min(n_samples, n_features) > MAX_COVARIANCE_SIZE:
        raise ValueError(
            f"the data matrix has {n_samples} samples and {n_features} features; the smaller of the two must be "
            f"at most {MAX_COVARIANCE_SIZE}, because the eigendecomposition costs its cube. Use fewer samples "
            "or fewer features"
        )
    if not np.all(np.isfinite(data)):
        raise ValueError("the data matrix contains NaN or infinite values")

    centred = data - data.mean(axis=0)
    try:
        with np.errstate(over="raise", invalid="raise"):
            if n_samples < n_features:
                gram = centred @ centred.T / (n_samples - 1)
                nonzero = np.linalg.eigvalsh(gram)
                eigenvalues = np.concatenate((nonzero, np.zeros(n_features - n_samples)))
            else:
                eigenvalues = np.linalg.eigvalsh(centred.T @ centred / (n_samples - 1))
    except FloatingPointError:
        raise ValueError(
            f"the covariance of the data matrix overflows float64 (its largest entry in magnitude is "
            f"{float(np.max(np.abs(data))):g}); rescale the data"
        ) from None
    return np.sort(eigenvalues)[::-1]


def _clean_and_normalise(eigenvalues, normalisation, source: str):
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation = {normalisation!r} is not available; choose one of {list(NORMALISATIONS)}")
    eigenvalues = np.sort(np.asarray(eigenvalues, dtype=np.float64))[::-1]
    if eigenvalues.size == 0:
        raise ValueError("the spectrum is empty")
    if not np.all(np.isfinite(eigenvalues)):
        raise ValueError("the spectrum contains NaN or infinite values")
    largest = float(eigenvalues[0])
    if not largest > 0:
        raise ValueError(f"the largest eigenvalue is {largest:g}; a covariance spectrum needs a positive one")
    negative = int(np.sum(eigenvalues < -NEGATIVE_TOLERANCE * largest))
    if negative:
        raise ValueError(
            f"{negative} of the {eigenvalues.size} eigenvalues {'is' if negative == 1 else 'are'} below -{NEGATIVE_TOLERANCE:g} times the largest "
            f"one ({largest:g}), the smallest being {float(eigenvalues[-1]):g}; a covariance has no negative "
            "eigenvalues beyond rounding errors"
        )

    kept = eigenvalues[eigenvalues > ROUNDING_FRACTION * largest]
    dropped = int(eigenvalues.size - kept.size)
    if dropped:
        logger.info(
            "dropped %d of %d eigenvalues of %s at or below %g times the largest (zero variance or rounding errors)",
            dropped, eigenvalues.size, source, ROUNDING_FRACTION,
        )
    scale = 1.0
    if normalisation == "top":
        scale = 1.0 / kept[0]
    elif normalisation == "trace":
        scale = 1.0 / float(np.sum(kept))
    return kept * scale, dropped, float(scale)


def load_spectrum(path, kind: str = "eigenvalues", normalisation: str = "top") -> MeasuredSpectrum:
    """Read a spectrum from ``path``: a file of eigenvalues or a data matrix (``kind``).

    Raises ``ValueError`` when the file cannot be read or its contents are
    not a valid spectrum or data matrix.
    """
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
        eigenvalues, dropped, scale = _clean_and_normalise(array, normalisation, str(path))
        return MeasuredSpectrum(eigenvalues, str(path), None, array.size, dropped, normalisation, scale)

    if array.ndim != 2:
        raise ValueError(f"data file {path} contains an array of shape {array.shape}; a data matrix must be 2-D")
    eigenvalues, dropped, scale = _clean_and_normalise(covariance_spectrum(array), normalisation, str(path))
    return MeasuredSpectrum(eigenvalues, str(path), array.shape[0], array.shape[1], dropped, normalisation, scale)


def spectrum_from_data(data, source: str, normalisation: str = "top") -> MeasuredSpectrum:
    """Return the normalised covariance spectrum of an in-memory data matrix."""
    data = np.asarray(data, dtype=np.float64)
    eigenvalues, dropped, scale = _clean_and_normalise(covariance_spectrum(data), normalisation, source)
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
