"""Run HEASARC fitsverify on files we wrote, when the tool is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def assert_fitsverify_clean(path: Path) -> None:
    """fitsverify must report 0 errors and 0 warnings (skips if not installed)."""
    tool = shutil.which("fitsverify")
    if tool is None:
        pytest.skip("fitsverify not installed (make tools)")
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert "Verification found 0 warning(s) and 0 error(s)" in report, report
