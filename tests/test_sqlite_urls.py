"""SQLite URLs: the SQLAlchemy forms, and the private database of ``sqlite://``."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from gatorapp import App, ConfigurationError, Worker
from gatorapp.backends import Message, load_backend


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_private_database_is_safe_from_several_threads(url: str) -> None:
    # Each thread has its own connection; none may fail with "table is locked".
    b = load_backend(url)
    b.enqueue([Message("q", f"t{i}", b"x") for i in range(1500)])
    seen: list[str] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            while got := b.reserve(["q"], 5, 30.0, "w"):
                assert all(b.ack(got))
                seen.extend(r.task_id for r in got)
        except BaseException as exc:
            errors.append(exc)

    def produce() -> None:
        try:
            for i in range(1500, 2000):
                b.enqueue([Message("q", f"t{i}", b"x")])
                b.stats("q")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=consume) for _ in range(3)]
    threads.append(threading.Thread(target=produce))
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert errors == []
    while got := b.reserve(["q"], 100, 30.0, "w"):
        b.ack(got)
        seen.extend(r.task_id for r in got)
    assert sorted(seen) == sorted(f"t{i}" for i in range(2000))
    b.close()


def test_private_databases_are_separate() -> None:
    a, b = load_backend("sqlite://"), load_backend("sqlite://")
    a.push("q", "t1", b"x")
    assert a.len("q") == 1 and b.len("q") == 0
    a.close()
    b.close()


def test_worker_with_heartbeat_on_a_private_database() -> None:
    app = App("sqlite://", lease=0.2)
    done: list[int] = []

    @app.task
    def f(n: int) -> None:
        done.append(n)

    f.map(range(300))
    Worker(app, concurrency=3, burst=True).run_forever()
    assert sorted(done) == list(range(300))
    app.close()


def test_relative_path_is_pinned_at_app_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = App("sqlite:///queue.db?timeout=5")
    assert app.url == f"sqlite:///{tmp_path}/queue.db?timeout=5"
    (tmp_path / "elsewhere").mkdir()
    os.chdir(tmp_path / "elsewhere")
    app.backend.push("q", "t1", b"x")
    assert (tmp_path / "queue.db").exists()
    app.close()


def test_absolute_path(tmp_path: Path) -> None:
    app = App(f"sqlite:///{tmp_path}/abs.db")
    app.backend.push("q", "t1", b"x")
    assert (tmp_path / "abs.db").exists()
    app.close()


@pytest.mark.parametrize(
    "url", ["sqlite://host/x.db", "sqlite:////no/such/folder/x.db", "sqlite:///x.db?timeout=soon"]
)
def test_bad_sqlite_urls(url: str) -> None:
    with pytest.raises(ConfigurationError):
        App(url).backend.len("q")


def test_close_while_other_threads_use_the_backend(tmp_path) -> None:
    # close() closes the caller's connection only: closing one another thread
    # is running a statement on could crash the interpreter inside sqlite3.
    b = load_backend(f"sqlite:///{tmp_path}/q.db")
    b.enqueue([Message("q", "a", b"x")])
    stop = threading.Event()
    errors: list[BaseException] = []

    def use() -> None:
        while not stop.is_set():
            try:
                assert b.stats("q").ready == 1
            except BaseException as exc:  # (reported below, not lost in the thread)
                errors.append(exc)
                return

    threads = [threading.Thread(target=use) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(200):
            b.close()
            assert b.stats("q").ready == 1  # (and this thread reconnects)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors, errors
    b.close()
