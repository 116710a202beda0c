"""The package's shape: data flows one way, and the testing helpers work.

envelope -> registry -> execution -> producer / worker -> App -> CLI and
testing: a module imports only modules before it in that order (backends sit
below the producer and the worker), with no import circles, and no module
reaches into another's private names.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gatorapp import App, testing

PACKAGE = Path(__file__).resolve().parents[1] / "gatorapp"

# What each module may import from gatorapp (besides errors, options, signing, encryption,
# schedules, tally, tracing and the backends' own modules, which any layer may use).
LAYERS = {
    "gatorapp.envelope": set(),
    "gatorapp.registry": {"gatorapp.envelope"},
    "gatorapp.results": {"gatorapp.envelope"},
    "gatorapp.execution": {"gatorapp.envelope", "gatorapp.registry", "gatorapp.results"},
    "gatorapp.execution_async": {"gatorapp.envelope", "gatorapp.registry", "gatorapp.execution"},
    "gatorapp.producer": {
        "gatorapp.envelope",
        "gatorapp.registry",
        "gatorapp.results",
        "gatorapp.execution",
        "gatorapp.execution_async",
    },
    "gatorapp.admin": {
        "gatorapp.envelope",
        "gatorapp.results",
        "gatorapp.execution",
        "gatorapp.producer",
    },
    "gatorapp.tasks": {"gatorapp.registry", "gatorapp.producer"},
    # observability: the list of workers, and metrics made from counts and it
    "gatorapp.workers": {"gatorapp.envelope"},
    "gatorapp.metrics": {"gatorapp.envelope", "gatorapp.workers"},
}
BASE = {
    "gatorapp.errors",
    "gatorapp.options",
    "gatorapp.signing",
    "gatorapp.encryption",
    "gatorapp.schedules",
    "gatorapp.tally",
    "gatorapp.tracing",
}


def _imports() -> dict[str, set[str]]:
    modules = {
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for p in PACKAGE.rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        module = name.removesuffix(".__init__")
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                target = ".".join(parts + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("gatorapp"):
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                found.add(full if full in modules else target)
        graph[module] = {m for m in found if m in modules and m != module}
    return graph


def test_no_import_circles() -> None:
    graph = _imports()
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in graph[module]:
            assert state.get(dep) != 1, " -> ".join([*path, module, dep])
            if dep not in state:
                visit(dep, [*path, module])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [])


def test_data_flows_one_way() -> None:
    graph = _imports()
    for module, allowed in LAYERS.items():
        extra = {
            m
            for m in graph[module]
            if m not in allowed | BASE and not m.startswith("gatorapp.backends")
        }
        assert not extra, f"{module} imports {sorted(extra)}"
    # The worker knows no App, producer, CLI or testing; the App no CLI.
    for module in (m for m in graph if m.startswith("gatorapp.worker")):
        above = {"gatorapp.app", "gatorapp.producer", "gatorapp.tasks"}
        assert not graph[module] & above, (module, graph[module])
        assert not any(m.startswith(("gatorapp.cli", "gatorapp.testing")) for m in graph[module])
    assert not any(
        m.startswith(("gatorapp.cli", "gatorapp.testing")) for m in graph["gatorapp.app"]
    )
    for module in (m for m in graph if m.startswith("gatorapp.backends")):
        assert all(m.startswith("gatorapp.backends") or m in BASE for m in graph[module])


def test_no_module_uses_another_s_private_names() -> None:
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    proc = subprocess.run(
        [ruff, "check", "--select", "SLF001", "--output-format", "concise", str(PACKAGE)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout


def test_testing_helpers() -> None:
    app = App("memory://")
    seen: list[int] = []

    @app.task
    def add(a: int, b: int) -> int:
        seen.append(a + b)
        return a + b

    add.delay(1, 2)
    assert testing.drain(app) == 1 and seen == [3]
    with testing.worker(app, concurrency=2):
        for i in range(10):
            add.delay(i, i)
        testing.join(app)
    assert sorted(seen) == sorted([3, *range(0, 20, 2)])


def test_the_package_imports_without_boto3_or_the_worker_s_extras() -> None:
    # pytest too: only gatorapp.testing.contract, the backend contract suite, needs it.
    code = (
        "import sys, gatorapp, gatorapp.testing\n"
        "print(sorted({'boto3', 'pytest', '_pytest'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_missing_driver_names_the_extra_that_installs_it() -> None:
    code = (
        "import sys\n"
        "sys.modules['boto3'] = None  # as if it were not installed\n"
        "from gatorapp import App, MissingDependencyError\n"
        "try:\n"
        "    App('sqs://us-east-1/').backend\n"
        "except MissingDependencyError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == (
        "the sqs:// backend needs the 'boto3' package: pip install \"gatorapp[sqs]\""
    ), out.stderr
