"""Every notebook runs top to bottom in quick mode and saves its figure."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOK_FILES = sorted(path.name for path in NOTEBOOKS.glob("*.py") if not path.name.startswith("_"))


@pytest.mark.parametrize("notebook", NOTEBOOK_FILES)
def test_notebook_runs_in_quick_mode(notebook, tmp_path):
    environment = dict(os.environ, HIERARCHY_NOTEBOOK_QUICK="1", HIERARCHY_NOTEBOOK_OUTPUT=str(tmp_path), MPLBACKEND="Agg")
    completed = subprocess.run(
        [sys.executable, str(NOTEBOOKS / notebook)], cwd=tmp_path, env=environment,
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert list(tmp_path.glob("*.png")), f"{notebook} saved no figure"
