"""Backends after ``fork()``: a child makes its own connections and never
touches the parent's (a web server that forks after importing the app, or
``multiprocessing``), and the parent's keep working."""

from __future__ import annotations

import gc
import os
import threading

import pytest

from gatorapp.backends import Message, load_backend


@pytest.fixture(params=["sqlite", "redis", "sqs", "postgres"])
def fork_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/queue.db"
    return str(request.getfixturevalue(f"{request.param}_url"))


def test_a_forked_child_uses_connections_of_its_own(fork_url: str) -> None:
    b = load_backend(fork_url)
    q = f"fork-{os.getpid()}"
    b.enqueue([Message(q, "parent-1", b"p1")])
    assert b.stats(q).ready == 1  # the parent has connected
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: enqueue and read through the same backend object
        code = 1
        try:
            b.enqueue([Message(q, "child", b"c")])
            code = 0 if b.stats(q).ready >= 2 else 3
            if fork_url.startswith("redis"):
                os.write(write, str(b.link.call("CLIENT", "ID")).encode())
        finally:
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    said = os.read(read, 100)
    os.close(read)
    if fork_url.startswith("redis"):  # the child spoke over a connection of its own
        assert said and int(said) != b.link.call("CLIENT", "ID")
    # The parent's connections were left alone: they still work.
    b.enqueue([Message(q, "parent-2", b"p2")])
    got = []
    for _ in range(10):
        got += b.reserve([q], 10, 30, "w")
        if len(got) == 3:
            break
    assert sorted(r.task_id for r in got) == ["child", "parent-1", "parent-2"]
    assert all(b.ack(got))
    b.close()


def test_a_forked_child_leaves_the_parents_temporary_sqlite_database() -> None:
    # sqlite:// with no path keeps its database in a temporary folder, deleted
    # when the backend goes: by the process that made it, not by a child.
    b = load_backend("sqlite://")
    b.enqueue([Message("q", "a", b"x")])
    pid = os.fork()
    if pid == 0:
        try:
            del b  # the child's copy goes: its finalizer runs here
            gc.collect()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(b.reserve(["q"], 10, 30, "w")))
    reader.start()  # a new thread opens a connection of its own: the file must be there
    reader.join(10)
    assert [r.task_id for r in got] == ["a"]
    b.close()
