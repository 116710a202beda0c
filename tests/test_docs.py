"""The documentation builds, and its code is the code that runs.

* ``mkdocs build --strict`` passes (broken links, anchors and nav entries fail it);
* a code block whose first line is ``# examples/<path>`` shows that file exactly,
  and tests/test_examples.py runs those files;
* every other Python block at least compiles;
* every public name of ``gatorapp`` is in the API reference.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import gatorapp

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text())


def test_mkdocs_build_strict(tmp_path):
    site = tmp_path / "site"
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", "mkdocs.yml"]
    proc = subprocess.run(
        [*cmd, "-d", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / "extending" / "index.html").is_file()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_blocks_compile(page):
    for block in python_blocks(page):
        compile(block, f"{page.name} block", "exec")


def test_example_files_shown_in_the_docs_are_verbatim():
    shown = 0
    for page in PAGES:
        for block in python_blocks(page):
            first, _, body = block.partition("\n")
            match = re.fullmatch(r"# (examples/\S+)", first)
            if match:
                assert body == (ROOT / match.group(1)).read_text(), (
                    f"{page.name} shows {match.group(1)} but differs from the file"
                )
                shown += 1
    assert shown >= 9


def test_example_paths_named_in_the_docs_exist():
    for page in [*PAGES, ROOT / "README.md", ROOT / "examples" / "README.md"]:
        for path in re.findall(r"`(examples/[\w./-]*)`", page.read_text()):
            assert (ROOT / path).exists(), f"{page.name} names {path}, which does not exist"


def test_reference_covers_every_public_name():
    reference = (DOCS / "reference.md").read_text()
    for name in gatorapp.__all__:
        assert f"`{name}" in reference or f"## {name}" in reference, name
