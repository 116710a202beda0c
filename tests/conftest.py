"""Shared fixtures.

``backend_url`` runs a test once per backend. Backends that need a server
(Redis, SQS) get it from fixtures that start a real one on a free loopback
port; when its binary is missing the test fails under CI (``CI`` set) and is
skipped elsewhere.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest
from service_postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)
from service_redis import redis_server, redis_url  # noqa: F401 (fixtures)
from service_sqs import sqs_env, sqs_prefix, sqs_server, sqs_url  # noqa: F401 (fixtures)
from worker_proc import FAULT_REPORTS, env_for

from gatorapp import App

# Backends every contract test runs against; a new backend adds its name here
# and a branch in backend_url below.
BACKENDS = ["memory", "sqlite", "redis", "sqs", "postgres"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_binary(name: str, hint: str) -> str:
    """Path of a server binary; a failure in CI, a skip elsewhere, when missing."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed ({hint})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path) -> str:
    """The embedded backends, for App-level tests: the App contract does not
    depend on the backend, and the server backends run the shared contract
    suite (test_contract.py) instead."""
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/queue.db"


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """The backends that keep results and ticks of their own."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/q.db"
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def shared_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """The backends several processes share (a file, a server): for tests of
    real worker processes and the commands that look at them."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/queue.db"
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def served(shared_url: str, tmp_path: Path):
    """An app on ``shared_url`` with tests/apps/ledger_app.py's ``record``
    task, and the environment for real workers (``-A ledger_app``) to run it in."""
    app = App(shared_url)

    # Same name as tests/apps/ledger_app.py; this process only enqueues.
    @app.task(name="ledger_app.record")
    def record(key, sleep=0.0): ...

    return app, record, env_for(shared_url, tmp_path / "ledger.txt")


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path) -> str:
    kind = request.param
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/queue.db"
    if kind == "redis":
        return str(request.getfixturevalue("redis_url"))
    if kind == "sqs":
        return str(request.getfixturevalue("sqs_url"))
    if kind == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    raise AssertionError(f"no URL for backend {kind}")


def pytest_terminal_summary(terminalreporter) -> None:
    """Print the fault tests' lost/duplicate counts, passed or failed."""
    if FAULT_REPORTS:
        terminalreporter.section("fault tests: counts from execution ledgers")
        for line in FAULT_REPORTS:
            terminalreporter.write_line(line)
