"""Real data sets that ship inside scikit-learn, for covariance spectra that need no download.

- ``digits``: the 8 x 8 handwritten digits, 1797 samples of 64 pixel
  intensities (``sklearn.datasets.load_digits``);
- ``image_patches``: square grey patches cut at random positions from the two
  photographs bundled with scikit-learn (``load_sample_images``: a Chinese
  temple and a flower), grey level = mean of the RGB channels scaled to
  [0, 1].
"""

import numpy as np

from .data_spectra import MAX_DATA_ENTRIES

DATASETS = ("digits", "image_patches")
MAX_PATCH_SIZE = 64
MAX_PATCHES = 1_000_000


def digits_data() -> np.ndarray:
    """Return the digits data matrix, 1797 samples x 64 features."""
    from sklearn.datasets import load_digits

    return np.asarray(load_digits().data, dtype=np.float64)


def image_patches(patch_size: int = 12, n_patches: int = 20000, seed: int = 0) -> np.ndarray:
    """Return ``n_patches`` grey patches of ``patch_size`` x ``patch_size`` pixels, one per row.

    The matrix may have at most ``MAX_DATA_ENTRIES`` entries
    (``n_patches * patch_size**2``), so that its size is checked before it is
    allocated.
    """
    if not (isinstance(patch_size, int) and 2 <= patch_size <= MAX_PATCH_SIZE):
        raise ValueError(f"patch_size = {patch_size!r} is invalid: it must be an integer in [2, {MAX_PATCH_SIZE}]")
    if not (isinstance(n_patches, int) and 2 <= n_patches <= MAX_PATCHES):
        raise ValueError(f"n_patches = {n_patches!r} is invalid: it must be an integer in [2, {MAX_PATCHES}]")
    if not (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and 0 <= seed < 2**63):
        raise ValueError(f"seed = {seed!r} is invalid: the seed of the patch positions must be an integer in [0, 2^63)")
    features = patch_size * patch_size
    if n_patches * features > MAX_DATA_ENTRIES:
        raise ValueError(
            f"patch_size = {patch_size} and n_patches = {n_patches} are invalid together: the {n_patches} x {features} "
            f"data matrix would have {n_patches * features:.3g} entries ({n_patches * features * 8 / 1e9:.1f} GB as "
            f"float64), more than the limit of {MAX_DATA_ENTRIES:.0e}. Use n_patches <= "
            f"{MAX_DATA_ENTRIES // features} at this patch_size, or a smaller patch_size"
        )
    from sklearn.datasets import load_sample_images

    images = [np.asarray(image, dtype=np.float64).mean(axis=2) / 255.0 for image in load_sample_images().images]
    rng = np.random.default_rng(seed)
    which = rng.integers(0, len(images), size=n_patches)
    patches = np.empty((n_patches, patch_size * patch_size))
    for k, image_index in enumerate(which):
        image = images[image_index]
        row = rng.integers(0, image.shape[0] - patch_size + 1)
        column = rng.integers(0, image.shape[1] - patch_size + 1)
        patches[k] = image[row : row + patch_size, column : column + patch_size].ravel()
    return patches


def load_builtin(name: str, **options) -> np.ndarray:
    """Return the data matrix of the built-in data set ``name``."""
    if name == "digits":
        if options:
            raise ValueError(f"the digits data set takes no options, got {sorted(options)}")
        return digits_data()
    if name == "image_patches":
        return image_patches(**options)
    raise ValueError(f"data set {name!r} is not available; choose one of {list(DATASETS)}")
