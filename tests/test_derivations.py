"""Every derivation script runs and its own checks pass."""

import subprocess
import sys
from pathlib import Path

import pytest

DERIVATIONS = Path(__file__).resolve().parents[1] / "derivations"


@pytest.mark.parametrize("script", ["closures.py"])
def test_derivation_script_passes(script):
    completed = subprocess.run(
        [sys.executable, str(DERIVATIONS / script)], capture_output=True, text=True, timeout=600, check=False
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "All checks passed." in completed.stdout
