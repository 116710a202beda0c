"""Odd or hostile input that reached the store anyway (written by hand, by an
older version, by a client of the five methods): each such task ends as a
dead letter, and the good tasks next to it run."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from worker_proc import wait_for

from gatorapp import App, Worker
from gatorapp.backends import Message
from gatorapp.errors import ConfigurationError, TaskRunning


def test_a_sqlite_row_with_a_text_payload_is_a_dead_letter_and_holds_nothing_up(
    tmp_path,
) -> None:
    url = f"sqlite:///{tmp_path}/queue.db"
    app = App(url)
    ran: list[int] = []

    @app.task(queue="q")
    def job(i: int) -> None:
        ran.append(i)

    job.map(list(range(40)))
    conn = sqlite3.connect(tmp_path / "queue.db")
    with conn:  # between the good tasks, as a hand-written row would land
        conn.execute(
            "INSERT INTO gatorapp_tasks (queue, task_id, data, run_at) VALUES (?, ?, ?, ?)",
            ("q", "bad-text", "a str", 0),
        )
        conn.execute(
            "INSERT INTO gatorapp_tasks (queue, task_id, data, run_at) VALUES (?, ?, ?, ?)",
            ("q", "bad-real", 1.5, 0),
        )
    conn.close()
    Worker(app, ["q"], burst=True, concurrency=8).run_forever()
    assert sorted(ran) == list(range(40))
    dead = {d.task_id: d for d in app.backend.dead_list("q")}
    assert sorted(dead) == ["bad-real", "bad-text"]
    assert {d.reason for d in dead.values()} == {"decode_error"}
    assert dead["bad-text"].data == b"a str"  # what was stored, kept for a look
    s = app.backend.stats("q")
    assert (s.ready, s.running, s.dead) == (0, 0, 2)
    app.close()


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/queue.db"
    return str(request.getfixturevalue(f"{request.param}_url"))


def test_a_task_stored_with_an_empty_id_is_a_dead_letter_not_a_loop(url: str) -> None:
    app = App(url, lease=1.0)
    ran: list[int] = []

    @app.task(name="job", queue="q")
    def job(x: int) -> None:
        ran.append(x)

    job.options(task_id="model").delay(1)
    data = app.backend.take("q", "model")
    assert data is not None
    # Every way in refuses an empty id; the primitive under them does not check.
    app.backend._enqueue([Message("q", "", data)])  # written by hand
    t0 = time.monotonic()
    Worker(app, ["q"], burst=True).run_forever()
    assert time.monotonic() - t0 < 5  # no lease expiries, no redeliveries
    assert ran == []
    ((task_id, reason),) = [(d.task_id, d.reason) for d in app.backend.dead_list("q")]
    assert (task_id, reason) == ("", "decode_error")
    assert app.backend.stats("q").running == 0
    app.close()


def test_an_empty_task_id_option_is_refused() -> None:
    app = App("memory://")

    @app.task
    def job() -> None: ...

    with pytest.raises(ValueError, match="task_id must be a non-empty string"):
        job.options(task_id="").delay()


@pytest.mark.parametrize(
    "opts, says",
    [
        ({"delay_by": 10**400}, "delay_by must be a finite number of seconds"),
        ({"delay_by": -(10**400)}, "delay_by must be a finite number of seconds"),
        ({"delay_until": 10**400}, "delay_until must be a finite epoch timestamp"),
        ({"delay_until": 1e18}, r"delay_until must be at most \d+ seconds \(100 years\)"),
        ({"queue": "q\ud800"}, "queue name must be valid Unicode text"),
        ({"task_id": "a\udc00"}, "task_id must be valid Unicode text"),
    ],
)
def test_out_of_range_options_name_the_field_and_the_limit(opts: dict, says: str) -> None:
    app = App("memory://")

    @app.task
    def job() -> None: ...

    with pytest.raises(ConfigurationError, match=says):
        job.options(**opts).delay()
    with pytest.raises(ConfigurationError, match=says):
        app.enqueue_many(job, [()], **opts)
    assert app.backend.stats("default").ready == 0


@pytest.mark.parametrize("how", ["replaced", "deleted"])
def test_a_sqlite_file_replaced_or_deleted_under_a_worker_is_reopened_loudly(
    tmp_path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    path = tmp_path / "queue.db"
    url = f"sqlite:///{path}"
    ran: list[str] = []

    def make() -> tuple[App, object]:
        app = App(url)
        return app, app.task(name="job", queue="q")(ran.append)

    worker_app, _ = make()
    worker = Worker(worker_app, ["q"])
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    first, job = make()
    job.delay("before")
    assert wait_for(lambda: ran == ["before"], 10)
    first.close()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"queue.db{suffix}").unlink(missing_ok=True)
    if how == "replaced":
        second, job = make()
        job.delay("after")  # into a new file at the same path
    else:
        time.sleep(1.5)  # the worker notices and makes the file again
        second, job = make()
        job.delay("after")
    try:
        assert wait_for(lambda: ran == ["before", "after"], 10)
        assert any(f"was {how} while in use" in r.getMessage() for r in caplog.records)
    finally:
        worker.stop()
        thread.join(10)
        second.close()
        worker_app.close()


def test_delay_with_the_id_of_a_running_task_raises_task_running(url: str) -> None:
    app = App(url)
    started, release = threading.Event(), threading.Event()
    seen: list[int] = []

    @app.task(name="job", queue="q")
    def job(x: int) -> None:
        seen.append(x)
        started.set()
        release.wait(10)

    job.options(task_id="X").delay(1)
    worker = Worker(app, ["q"], burst=True)
    thread = threading.Thread(target=worker.run_forever)
    thread.start()
    try:
        assert started.wait(10)
        job.options(task_id="X").delay(1)  # the same task again: nothing changes
        with pytest.raises(TaskRunning, match="'X' on queue 'q' is running now"):
            job.options(task_id="X").delay(2)
        with pytest.raises(TaskRunning):
            app.enqueue_many(job, [(3,)], task_id="X")
    finally:
        release.set()
        thread.join(10)
    job.options(task_id="X").delay(4)  # finished: the id is free again
    app.drain()
    assert seen == [1, 4]
    app.close()


def test_a_task_id_that_dies_twice_keeps_both_letters(url: str) -> None:
    app = App(url)

    @app.task(name="boom", queue="q")
    def boom(n: int) -> None:
        raise ValueError(f"failure {n}")

    boom.options(task_id="X").delay(1)
    app.drain()
    time.sleep(0.01)
    boom.options(task_id="X").delay(2)  # the id is free again: a new task
    app.drain()
    letters = [d for d in app.backend.dead_list("q") if d.task_id == "X"]
    assert [d.error.strip().splitlines()[-1] for d in letters] == [
        "ValueError: failure 1",
        "ValueError: failure 2",
    ]
    app.close()


def test_dead_letters_of_an_earlier_sqlite_schema_are_kept(tmp_path) -> None:
    # Earlier versions kept one letter per (queue, task id): the table is
    # moved to the new layout the first time a new version opens the file.
    path = tmp_path / "queue.db"
    conn = sqlite3.connect(path)
    with conn:
        conn.executescript(
            "CREATE TABLE gatorapp_dead (queue TEXT NOT NULL, task_id TEXT NOT NULL, "
            "data BLOB NOT NULL, reason TEXT NOT NULL, error TEXT NOT NULL, "
            "failed_at REAL NOT NULL, PRIMARY KEY (queue, task_id));"
        )
        conn.execute(
            "INSERT INTO gatorapp_dead VALUES (?, ?, ?, ?, ?, ?)",
            ("q", "old", b"payload", "retries_exhausted", "it failed", 1.0),
        )
    conn.close()
    app = App(f"sqlite:///{path}")
    (letter,) = app.backend.dead_list("q")
    assert (letter.task_id, letter.data, letter.error) == ("old", b"payload", "it failed")
    app.backend.dead_add("q", "old", b"again", "decode_error", "second")
    assert [d.data for d in app.backend.dead_list("q")] == [b"payload", b"again"]
    app.close()
