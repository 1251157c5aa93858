"""Keep Numba's on-disk kernel cache consistent with the package sources.

Numba (0.59 to at least 0.68) keys a cached function on the timestamp and
size of the file that defines it, not on the files of the functions it
calls. After an upgrade or an edit that changes, say,
``integrators/structured_linalg.py`` but not ``integrators/rosenbrock.py``,
the Rosenbrock kernel would be loaded from the cache with the old linear
algebra compiled in. On import, this module hashes every source file of the
package and, when the hash differs from the one stored beside the cache,
removes the package's cached kernels so that they are compiled afresh.

Only caches inside the package's ``__pycache__`` folders are handled; a
cache redirected with ``NUMBA_CACHE_DIR`` must be cleared by hand after an
upgrade.
"""

import hashlib
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parent
STAMP_NAME = "hierarchy-sources.sha256"


def source_fingerprint(root: Path = PACKAGE_ROOT) -> str:
    """Return the SHA-256 of the paths and contents of every ``.py`` file under ``root``."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def invalidate_stale_kernels(root: Path = PACKAGE_ROOT) -> int:
    """Delete cached kernels under ``root`` when its sources changed; return how many files were removed."""
    stamp_path = root / "__pycache__" / STAMP_NAME
    fingerprint = source_fingerprint(root)
    try:
        if stamp_path.read_text().strip() == fingerprint:
            return 0
    except OSError:
        pass

    removed = 0
    for pattern in ("*.nbi", "*.nbc"):
        for cached in root.rglob(f"__pycache__/{pattern}"):
            try:
                cached.unlink()
                removed += 1
            except OSError as error:
                logger.warning("could not remove stale Numba cache file %s: %s", cached, error)
    try:
        stamp_path.parent.mkdir(exist_ok=True)
        stamp_path.write_text(fingerprint + "\n")
    except OSError as error:
        # A read-only installation cannot cache in place; Numba then uses its own cache folder.
        logger.info("could not record the kernel source fingerprint at %s: %s", stamp_path, error)
    if removed:
        logger.info("removed %d Numba cache files compiled from older sources", removed)
    return removed


def compiled_kernels_present(root: Path = PACKAGE_ROOT) -> bool:
    """Return whether the integrators' compiled kernels are cached, so that importing them will not compile."""
    return any(root.glob("integrators/__pycache__/rosenbrock.integrate_rosenbrock-*.nbi"))
