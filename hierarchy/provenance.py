"""Provenance of a result: the package version and the git revision of its source."""

import importlib
import importlib.metadata
import subprocess
from pathlib import Path


def package_version() -> str:
    """Return the installed version of ``hierarchy``, or ``hierarchy.__version__`` when it runs from a source tree."""
    try:
        return importlib.metadata.version("hierarchy")
    except importlib.metadata.PackageNotFoundError:
        package = importlib.import_module("hierarchy")
        return str(getattr(package, "__version__", "unknown"))


def git_revision(package_root: Path | None = None) -> str:
    """Return ``git rev-parse HEAD`` of the repository that contains this package, or ``"unknown"``.

    The revision is reported only when the package sits at the top level of
    the repository, so an installed copy inside some other repository (a
    virtual environment in a project folder) does not report that project.
    """
    if package_root is None:
        package_root = Path(__file__).resolve().parent
    command = ["git", "-C", str(package_root), "rev-parse", "--show-toplevel", "HEAD"]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = completed.stdout.split()
    if completed.returncode != 0 or len(lines) != 2:
        return "unknown"
    top_level, revision = lines
    if Path(top_level).resolve() / package_root.name != package_root.resolve():
        return "unknown"
    return revision
