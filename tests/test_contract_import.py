"""The contract suite runs for a backend outside this repository.

A test module in a folder of its own, as a backend's author would write it,
subclasses :class:`gatorapp.testing.contract.BackendContract` (with the memory
backend, whose timing tests can take short steps); pytest runs it in a
subprocess, with nothing of this repository's configuration or fixtures.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import gatorapp
from gatorapp.testing.contract import BackendContract

# The gatorapp these tests import, for the subprocess too (not another install).
SOURCE = str(Path(gatorapp.__file__).resolve().parents[1])

OUT_OF_TREE = """
import pytest

from gatorapp.backends import load_backend
from gatorapp.testing.contract import BackendContract


class TestMemory(BackendContract):
    TICK = 0.2  # shorter steps than the default: the store is in memory
    MARGIN = 0.1

    @pytest.fixture
    def backend(self):
        b = load_backend("memory://")
        yield b
        b.close()
"""

FORGETFUL = """
import pytest

from gatorapp.backends.memory import MemoryBackend
from gatorapp.testing.contract import BackendContract


class Forgetful(MemoryBackend):
    def ack(self, reservations):
        super().ack(reservations)
        return [False for _ in reservations]


class TestForgetful(BackendContract):
    @pytest.fixture
    def backend(self):
        b = Forgetful("memory://")
        yield b
        b.close()
"""

NO_BACKEND = """
from gatorapp.testing.contract import BackendContract


class TestForgotten(BackendContract):
    pass
"""


def contract_size() -> int:
    """How many tests one subclass of BackendContract runs."""
    count = 0
    for name in dir(BackendContract):
        if name.startswith("test"):
            marks = getattr(getattr(BackendContract, name), "pytestmark", [])
            count += math.prod(len(m.args[1]) for m in marks if m.name == "parametrize")
    return count


def run_pytest(folder: Path, code: str, *args: str) -> tuple[dict[str, int], str]:
    """Run pytest on ``code`` as folder/test_mine.py; its counts and output."""
    (folder / "pytest.ini").write_text("[pytest]\n")  # no configuration from folders above
    (folder / "test_mine.py").write_text(textwrap.dedent(code))
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [SOURCE, env.get("PYTHONPATH")]))
    report = folder / "report.xml"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    proc = subprocess.run(
        [*command, "--junitxml", str(report), *args, str(folder / "test_mine.py")],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = proc.stdout + proc.stderr
    assert report.exists(), output
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None, output
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    return counts, output


def test_a_backend_outside_the_repository_runs_the_contract(tmp_path: Path) -> None:
    size = contract_size()
    assert size > 50  # the whole suite, not a stray handful
    # Every test is collected; the enqueue and ack ones run (the whole suite
    # runs out of tree in tests/test_examples.py::test_leasing_backend).
    counts, output = run_pytest(tmp_path, OUT_OF_TREE, "-k", "enqueue or ack")
    assert counts["failures"] == counts["errors"] == counts["skipped"] == 0, output
    assert 10 <= counts["tests"] < size, output
    _, output = run_pytest(tmp_path, OUT_OF_TREE, "--collect-only")
    assert f"{size} tests collected" in output, output


def test_a_subclass_without_a_backend_is_told_to_provide_one(tmp_path: Path) -> None:
    counts, output = run_pytest(tmp_path, NO_BACKEND, "-k", "test_enqueue_then_reserve")
    assert counts == {"tests": 1, "failures": 0, "errors": 1, "skipped": 0}, output
    assert "TestForgotten must provide the backend under test" in output, output
    assert "override the 'backend' fixture" in output, output


def test_a_failing_contract_test_says_what_differed(tmp_path: Path) -> None:
    # pytest rewrites the suite's asserts, as it does a test module's own.
    counts, output = run_pytest(tmp_path, FORGETFUL, "-k", "test_ack_deletes")
    assert counts == {"tests": 1, "failures": 1, "errors": 0, "skipped": 0}, output
    assert "assert [False, False, False] == [True, True, True]" in output, output
