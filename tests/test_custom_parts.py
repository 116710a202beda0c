"""The seed's extension points, in process: a five-method backend client passed
as ``backend_class``, Worker subclasses, and a worker's queues and max_tasks."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import tenacity

from gatorapp import App, Task, Worker
from gatorapp.backends import Reservation
from gatorapp.backends.client import ClientBackend
from gatorapp.backends.memory import MemoryBackend

RAN: list[Any] = []


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    RAN.clear()
    yield
    RAN.clear()


# -- the seed's custom SQLite client, with its bugs fixed ---------------------------------------


class SQLiteClient:
    """The "Custom Backend Clients" example of the seed document, fixed: it imports
    time, runs every query (the seed ran only those without arguments), commits,
    creates its tables on first use, returns None from an empty pop or an unknown
    get, and pops in due order. Like the seed's, it holds one plain sqlite3
    connection, so it must only be called from the thread that made it."""

    def __init__(self, conn_string: str) -> None:
        self.conn_string = conn_string
        # Kill the 'sqlite://' portion: 'sqlite:///tmp/q.db' is the file /tmp/q.db.
        path = self.conn_string.split("://", 1)[1]
        self.conn = sqlite3.connect(path)
        self._tables: set[str] = set()

    def _table(self, queue_name: str) -> str:
        table = "`queue_{}`".format(queue_name.replace("`", "``"))
        if table not in self._tables:
            self._run_query(
                f"CREATE TABLE IF NOT EXISTS {table} (task_id TEXT, data BLOB, delay_until REAL)",
                [],
            )
            self._tables.add(table)
        return table

    def _run_query(self, query: str, args: list[Any]) -> sqlite3.Cursor:
        cur = self.conn.cursor()
        cur.execute(query, args)
        self.conn.commit()
        return cur

    def len(self, queue_name: str) -> int:
        cur = self._run_query(f"SELECT COUNT(task_id) FROM {self._table(queue_name)}", [])
        return int(cur.fetchone()[0])

    def drop_all(self, queue_name: str) -> None:
        self._run_query(f"DELETE FROM {self._table(queue_name)}", [])

    def push(
        self, queue_name: str, task_id: str, data: bytes, delay_until: float | None = None
    ) -> str:
        if delay_until is None:
            delay_until = time.time()
        self._run_query(
            f"INSERT INTO {self._table(queue_name)} (task_id, data, delay_until) VALUES (?, ?, ?)",
            [task_id, data, delay_until],
        )
        return task_id

    def pop(self, queue_name: str) -> bytes | None:
        table = self._table(queue_name)
        cur = self._run_query(
            f"SELECT rowid, data FROM {table} WHERE delay_until <= ? "
            "ORDER BY delay_until, rowid LIMIT 1",
            [time.time()],
        )
        res = cur.fetchone()
        if res is None:
            return None
        self._run_query(f"DELETE FROM {table} WHERE rowid = ?", [res[0]])
        return bytes(res[1])

    def get(self, queue_name: str, task_id: str) -> bytes | None:
        table = self._table(queue_name)
        cur = self._run_query(
            f"SELECT rowid, data FROM {table} WHERE task_id = ? LIMIT 1", [task_id]
        )
        res = cur.fetchone()
        if res is None:
            return None
        self._run_query(f"DELETE FROM {table} WHERE rowid = ?", [res[0]])
        return bytes(res[1])


def log_error(task: Task, err: BaseException) -> None:
    RAN.append(("on_error", task.attempt))


def test_seed_client_end_to_end(tmp_path: Path) -> None:
    # The seed's URL form: everything after 'sqlite://' is the file path.
    db = tmp_path / "myapp_queue.db"
    app = App(f"sqlite://{db}", backend_class=SQLiteClient)
    try:
        assert isinstance(app.backend, ClientBackend)
        assert isinstance(app.backend.client, SQLiteClient)
        assert app.backend.client.conn_string == f"sqlite://{db}"  # handed over unchanged
        assert db.exists()

        @app.task(on_error=log_error)
        def add(a: int, b: int) -> int:
            RAN.append(("add", a + b))
            return a + b

        @app.task(retries=1, backoff=tenacity.wait_fixed(0), on_error=log_error)
        def fail() -> None:
            raise ValueError("always")

        add.delay(1, 2)
        h_fail = fail.delay()
        # (due in 1.5 s: time enough for the steps below on a loaded machine)
        due = time.time() + 1.5
        later = add.options(delay_by=1.5).delay(10, 20)
        cancel_me = add.delay(100, 100)
        get_me = add.delay(5, 5)
        assert app.backend.len("default") == 5

        # get and cancel through the client's get()
        got = app.get(get_me.id)
        assert got is not None and got.result == 10
        canceled = app.cancel(cancel_me.id)
        assert canceled is not None and canceled.func_args == [100, 100]
        assert app.get("unknown") is None and app.cancel("unknown") is None

        assert app.drain() == 3  # add, fail twice; the delayed one is not due
        assert time.time() < due, "the steps above took longer than the delay"
        assert ("add", 3) in RAN and ("add", 200) not in RAN
        assert RAN.count(("on_error", 1)) == 1 and RAN.count(("on_error", 2)) == 1
        letters = app.backend.dead_list("default")
        assert [(d.task_id, d.reason) for d in letters] == [(h_fail.id, "retries_exhausted")]
        assert "ValueError: always" in letters[0].error
        dead = app.backend.dead_get("default", h_fail.id)
        assert dead is not None and dead.reason == "retries_exhausted"
        assert app.backend.stats("default").dead == 1

        time.sleep(max(0.0, due - time.time()) + 0.05)
        assert app.drain() == 1
        assert ("add", 30) in RAN
        assert app.backend.len("default") == 0

        # requeue restores the budget: two more attempts
        assert app.requeue_dead("default", h_fail.id) is True
        assert app.backend.stats("default").dead == 0
        assert app.drain() == 2
        assert app.backend.dead_purge("default") == 1
        assert later.id
    finally:
        app.close()


def test_seed_client_unknown_and_undecodable_payloads(tmp_path: Path) -> None:
    app = App(f"sqlite://{tmp_path}/q.db", backend_class=SQLiteClient)
    try:

        @app.task
        def ok() -> None:
            RAN.append("ok")

        app.backend.push("default", "junk", b"\xc1junk")
        stranger = Task("os.system", ["echo"])
        app.backend.push("default", stranger.task_id, stranger.serialize())
        ok.delay()
        app.drain()
        assert RAN == ["ok"]
        reasons = sorted(d.reason for d in app.backend.dead_list("default"))
        assert reasons == ["decode_error", "unknown_task"]
    finally:
        app.close()


def test_seed_client_is_called_only_from_its_own_thread(tmp_path: Path) -> None:
    # sqlite3 raises ProgrammingError when a connection is used from another
    # thread; a worker with concurrency runs tasks on threads but calls the
    # client only from the thread that made it.
    app = App(f"sqlite://{tmp_path}/q.db", backend_class=SQLiteClient)
    try:

        @app.task
        def slow(n: int) -> None:
            time.sleep(0.02)
            RAN.append(n)

        slow.map(range(8))
        w = Worker(app, concurrency=4, burst=True)
        assert w.run_forever() == 0
        assert sorted(RAN) == list(range(8))
        assert app.backend.len("default") == 0
        assert app.backend.dead_list("default") == []
    finally:
        app.close()


# -- workers ---------------------------------------------------------------------------------------


class RecordingWorker(Worker):
    """The seed's LoggingWorker idea: override ident/starting/stopping/result."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[Any] = []

    def ident(self) -> str:
        return "recording-worker"

    def starting(self) -> None:
        self.events.append(("starting", self.ident(), self.to_consume, self.max_tasks))

    def stopping(self) -> None:
        self.events.append(("stopping", self.tasks_complete))

    def result(self, result: Any) -> None:
        self.events.append(("result", result))


def test_worker_subclass(url: str) -> None:
    app = App(url)
    try:

        @app.task
        def add(a: int, b: int) -> int:
            return a + b

        @app.task(queue="other")
        def fail() -> None:
            raise ValueError("no")

        add.delay(1, 2)
        fail.delay()
        add.delay(3, 4)
        w = RecordingWorker(app, queues=["default", "other"], burst=True)
        assert w.run_forever() == 0
        assert w.events == [
            ("starting", "recording-worker", "default,other", None),
            ("result", 3),
            ("result", 7),  # result() only for successes
            ("stopping", 3),
        ]
    finally:
        app.close()


def test_default_worker_logs_instead_of_printing(
    url: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    app = App(url)
    try:

        @app.task
        def add(a: int, b: int) -> int:
            return a + b

        add.delay(1, 2)
        with caplog.at_level(logging.INFO, logger="gatorapp"):
            Worker(app, burst=True).run_forever()
        assert capsys.readouterr().out == ""
        messages = " ".join(r.getMessage() for r in caplog.records)
        assert "starting" in messages and "1 tasks done" in messages
    finally:
        app.close()


def test_max_tasks_counts_failed_attempts(url: str) -> None:
    app = App(url)
    try:

        @app.task
        def ok(n: int) -> None:
            RAN.append(n)

        @app.task
        def fail(n: int) -> None:
            RAN.append(n)
            raise ValueError(n)

        fail.delay(0)
        ok.delay(1)
        fail.delay(2)
        ok.delay(3)
        ok.delay(4)
        w = Worker(app, max_tasks=3)  # not burst: it must return by itself
        started = time.monotonic()
        assert w.run_forever() == 0
        assert time.monotonic() - started < 5
        assert w.tasks_complete == 3
        assert RAN == [0, 1, 2]
        s = app.backend.stats("default")
        assert (s.ready, s.running, s.dead) == (2, 0, 2)
        # A second worker picks up the rest.
        assert Worker(app, max_tasks=2).run_forever() == 0
        assert RAN == [0, 1, 2, 3, 4]
    finally:
        app.close()


def test_max_tasks_with_concurrency_and_retries(url: str) -> None:
    app = App(url)
    try:

        @app.task(retries=5, backoff=tenacity.wait_fixed(0))
        def fail() -> None:
            RAN.append("fail")
            raise ValueError("x")

        fail.delay()
        w = Worker(app, max_tasks=4, concurrency=3)
        assert w.run_forever() == 0
        assert RAN == ["fail"] * 4  # each retry is an attempt
        assert w.tasks_complete == 4
    finally:
        app.close()


def test_worker_consumes_only_its_queues_in_priority_order(url: str) -> None:
    app = App(url)
    try:

        @app.task(queue="images")
        def thumb(n: int) -> None:
            RAN.append(("thumb", n))

        @app.task(queue="emails")
        def send(n: int) -> None:
            RAN.append(("send", n))

        @app.task
        def other() -> None:
            RAN.append(("other",))

        for n in range(3):
            thumb.delay(n)
        for n in range(2):
            send.delay(n)
        other.delay()
        Worker(app, queues="emails,images", burst=True).run_forever()
        assert RAN == [("send", 0), ("send", 1), ("thumb", 0), ("thumb", 1), ("thumb", 2)]
        assert app.backend.len("default") == 1
        w = Worker(app, burst=True)
        assert w.queues == ["default", "images", "emails"]  # every queue the app knows
        w.run_forever()
        assert RAN[-1] == ("other",)
    finally:
        app.close()


def test_worker_in_a_thread_and_memory_join() -> None:
    import threading

    app = App("memory://")

    @app.task
    def add(a: int, b: int) -> None:
        RAN.append(a + b)

    w = Worker(app, concurrency=2)
    th = threading.Thread(target=w.run_forever, daemon=True)
    th.start()
    try:
        add.starmap([(i, i) for i in range(20)])
        app.backend.join(timeout=10)  # type: ignore[attr-defined]
        assert sorted(RAN) == [2 * i for i in range(20)]
    finally:
        w.stop()
        th.join(10)
    assert not th.is_alive()


class SlowExtendBackend(MemoryBackend):
    """Renews leases slowly, so tasks finish while a heartbeat is under way."""

    def _extend(self, reservations: Sequence[Reservation]) -> list[bool]:
        time.sleep(0.03)
        return super()._extend(reservations)


def test_no_lease_lost_warnings_for_acknowledged_tasks(caplog: pytest.LogCaptureFixture) -> None:
    # A task acknowledged between the heartbeat's snapshot and its extend() call
    # is refused by extend(), but it has not lost its lease to anyone.
    app = App("memory://", backend_class=SlowExtendBackend, lease=0.3)
    try:

        @app.task
        def f(n: int) -> None:
            time.sleep(0.001)
            RAN.append(n)

        f.map(range(400))
        with caplog.at_level(logging.WARNING, logger="gatorapp"):
            Worker(app, concurrency=2, burst=True).run_forever()
        assert sorted(RAN) == list(range(400))
        assert [r.getMessage() for r in caplog.records if "lost" in r.getMessage()] == []
    finally:
        app.close()


def test_five_method_client_worker_holds_nothing_ahead(tmp_path):
    # pop() is final for such a client, so a worker never prefetches from it.
    from gatorapp import App, Worker
    from gatorapp.backends.memory import MemoryBackend

    class Client:
        def __init__(self, conn_string):
            self.store = MemoryBackend()

        def len(self, queue_name):
            return self.store.len(queue_name)

        def drop_all(self, queue_name):
            self.store.drop_all(queue_name)

        def push(self, queue_name, task_id, data, delay_until=None):
            return self.store.push(queue_name, task_id, data, delay_until)

        def pop(self, queue_name):
            return self.store.pop(queue_name)

        def get(self, queue_name, task_id):
            return self.store.get(queue_name, task_id)

    app = App("custom://", backend_class=Client)
    seen = []

    @app.task
    def probe(i):
        seen.append((i, app.backend.len("default")))

    for i in range(3):
        probe.delay(i)
    worker = Worker(app, burst=True, concurrency=1)
    worker.run_forever()
    assert worker.prefetch == 0
    assert seen == [(0, 2), (1, 1), (2, 0)]
