"""``.delay()`` is typed from the task function's signature, and the package
type-checks under ``mypy --strict`` (both checked here, so CI runs them)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE = Path(__file__).parent / "typing" / "sample.py"


def test_delay_is_typed_from_the_signature():
    if shutil.which("mypy") is None:
        pytest.skip("mypy is not installed (it comes with the dev extra)")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--hide-error-context",
            "--no-error-summary",
            "--show-error-codes",
            str(SAMPLE),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    got = {
        (int(m[1]), m[2])
        for m in re.finditer(r"sample\.py:(\d+): error: .*\[([\w-]+)\]", proc.stdout)
    }
    expected = {
        (n, m[1])
        for n, line in enumerate(SAMPLE.read_text().splitlines(), 1)
        if (m := re.search(r"# E: ([\w-]+)", line))
    }
    assert got == expected, proc.stdout


def test_the_package_is_clean_under_mypy_strict():
    if shutil.which("mypy") is None:
        pytest.skip("mypy is not installed (it comes with the dev extra)")
    root = Path(__file__).parent.parent
    # (strict and the package's files come from [tool.mypy] in pyproject.toml)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "gatorapp"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
