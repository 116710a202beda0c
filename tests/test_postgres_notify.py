"""Idle workers on PostgreSQL wake on LISTEN/NOTIFY: an enqueue notifies the
channel of its queue (once per statement and queue, in the producer's
transaction), and a waiting worker returns at once instead of at its next
poll. The polls here are 30 s long, so only a notification explains a
prompt wake-up; with ``?notify=0`` everything works by polling alone."""

from __future__ import annotations

import os
import threading
import time

import psycopg
import pytest
from psycopg import sql

from gatorapp import App, ConfigurationError, Worker
from gatorapp.backends import Message
from gatorapp.backends.postgres import PostgresBackend
from gatorapp.backends.postgres_listen import channel
from gatorapp.backends.postgres_sql import parse_url

pytestmark = pytest.mark.slow

LONG_POLL = "poll=30"


def with_options(url: str, *options: str) -> str:
    return url + "?" + "&".join(options)


class Waiter:
    """``backend.wait(queues, timeout)`` on a thread, timed."""

    def __init__(self, backend: PostgresBackend, queues: list[str], timeout: float) -> None:
        self.returned_at: float | None = None
        self.error: BaseException | None = None
        self.started = time.monotonic()

        def run() -> None:
            try:
                backend.wait(queues, timeout)
            except BaseException as exc:
                self.error = exc
            self.returned_at = time.monotonic()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def blocked(self, backend: PostgresBackend) -> bool:
        """Wait until the thread blocks on its LISTEN connection."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            listener = backend._listener
            if listener is not None and listener.waiting and listener.channels:
                time.sleep(0.2)  # (past its first look at the table)
                return self.returned_at is None
            time.sleep(0.01)
        return False

    def join(self, timeout: float) -> float | None:
        self.thread.join(timeout)
        assert self.error is None, self.error
        return self.returned_at


@pytest.fixture
def producer(postgres_url: str):
    backend = PostgresBackend(postgres_url)
    yield backend
    backend.close()


def test_an_idle_wait_wakes_on_an_enqueue_long_before_its_poll(postgres_url, producer) -> None:
    backend = PostgresBackend(with_options(postgres_url, LONG_POLL))
    assert backend.poll_interval == 30
    try:
        backend.wait(["q"], 0.01)  # (the tables are made, the connections open)
        waiter = Waiter(backend, ["other", "q"], 25)
        assert waiter.blocked(backend)
        sent = time.monotonic()
        producer.enqueue([Message("q", "t1", b"x")])
        returned = waiter.join(20)
        assert returned is not None and returned - sent < 3.0, "no wake-up by NOTIFY"
        assert [r.task_id for r in backend.reserve(["q"], 10, 30, "w")] == ["t1"]
    finally:
        backend.close()


def test_a_task_of_another_queue_or_not_yet_due_does_not_wake_it(postgres_url, producer) -> None:
    backend = PostgresBackend(with_options(postgres_url, LONG_POLL))
    try:
        waiter = Waiter(backend, ["q"], 3.0)
        assert waiter.blocked(backend)
        producer.enqueue([Message("elsewhere", "t1", b"x")])
        producer.enqueue([Message("q", "later", b"x", time.time() + 3600)])
        returned = waiter.join(10)
        assert returned is not None and returned - waiter.started > 2.5
    finally:
        backend.close()


def test_an_idle_worker_runs_a_task_enqueued_while_it_waits(postgres_url) -> None:
    for options in ([LONG_POLL], ["notify=0"]):
        app = App(with_options(postgres_url, *options))
        ran = threading.Event()

        @app.task(name="hello")
        def hello(ran: threading.Event = ran) -> None:
            ran.set()

        worker = Worker(app, concurrency=1)
        thread = threading.Thread(target=worker.run_forever, daemon=True)
        thread.start()
        try:
            time.sleep(0.5)  # idle by now
            hello.delay()
            assert ran.wait(10), f"the task did not run with {options}"
        finally:
            worker.stop()
            thread.join(10)
            app.close()
        assert not thread.is_alive()


def test_one_notification_per_queue_and_statement(postgres_url, producer) -> None:
    producer.enqueue([Message("a", "warm", b"x")])  # (the tables exist)
    with psycopg.connect(postgres_url, autocommit=True) as listen:
        for q in ("a", "b"):
            listen.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel(q))))
        producer.enqueue(
            [Message("a", f"a{i}", b"x") for i in range(200)]
            + [Message("b", f"b{i}", b"x") for i in range(50)]
        )
        got = [n.channel for n in listen.notifies(timeout=1.0)]
    assert sorted(got) == ["gatorapp:a", "gatorapp:b"]


def test_notify_off_sends_nothing_and_waits_by_polling(postgres_url) -> None:
    backend = PostgresBackend(with_options(postgres_url, "notify=0", "poll=0.05"))
    assert not backend.notify
    try:
        backend.enqueue([Message("a", "warm", b"x")])
        with psycopg.connect(postgres_url, autocommit=True) as listen:
            listen.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel("a"))))
            backend.enqueue([Message("a", f"a{i}", b"x") for i in range(10)])
            assert list(listen.notifies(timeout=0.5)) == []
        backend.reserve(["a"], 100, 30, "w")
        waiter = Waiter(backend, ["a"], 20)
        time.sleep(0.3)
        assert waiter.returned_at is None and backend._listener is None
        PostgresBackend(postgres_url).enqueue([Message("a", "late", b"x")])
        returned = waiter.join(10)
        assert returned is not None
    finally:
        backend.close()


def test_a_transactional_enqueue_wakes_on_commit_only(postgres_url, producer) -> None:
    backend = PostgresBackend(with_options(postgres_url, LONG_POLL))
    producer.enqueue([Message("q", "warm", b"x")])
    producer.reserve(["q"], 1, 60, "w")  # (leased: nothing ready)
    try:
        # Rolled back: nothing to wake for.
        waiter = Waiter(backend, ["q"], 3.0)
        assert waiter.blocked(backend)
        with psycopg.connect(postgres_url) as conn:
            conn.execute("SELECT 1")  # (a transaction is open from here)
            producer.enqueue_in_transaction(conn, [Message("q", "gone", b"x")])
            conn.rollback()
        returned = waiter.join(10)
        assert returned is not None and returned - waiter.started > 2.5

        # Committed: woken on the commit, not before.
        waiter = Waiter(backend, ["q"], 25)
        assert waiter.blocked(backend)
        with psycopg.connect(postgres_url) as conn:
            conn.execute("SELECT 1")  # (a transaction is open from here)
            producer.enqueue_in_transaction(conn, [Message("q", "kept", b"x")])
            time.sleep(0.5)
            assert waiter.returned_at is None, "woken before the commit"
            committed = time.monotonic()
            conn.commit()
        returned = waiter.join(20)
        assert returned is not None and returned - committed < 3.0
    finally:
        backend.close()


def test_stop_waiting_wakes_a_waiting_thread(postgres_url) -> None:
    backend = PostgresBackend(with_options(postgres_url, LONG_POLL))
    try:
        waiter = Waiter(backend, ["q"], 25)
        assert waiter.blocked(backend)
        asked = time.monotonic()
        backend.stop_waiting()
        returned = waiter.join(20)
        assert returned is not None and returned - asked < 3.0
        backend.stop_waiting()  # (nobody waits: nothing to do)
    finally:
        backend.close()


def test_close_then_wait_again_listens_anew(postgres_url, producer) -> None:
    backend = PostgresBackend(with_options(postgres_url, LONG_POLL))
    try:
        backend.wait(["q"], 0.05)
        first = backend._listener.conn
        backend.close()
        assert first.closed
        waiter = Waiter(backend, ["q"], 25)
        assert waiter.blocked(backend)
        sent = time.monotonic()
        producer.enqueue([Message("q", "t", b"x")])
        returned = waiter.join(20)
        assert returned is not None and returned - sent < 3.0
    finally:
        backend.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_listens_on_a_connection_of_its_own(postgres_url, producer) -> None:
    backend = PostgresBackend(with_options(postgres_url, LONG_POLL))
    try:
        backend.wait(["q"], 0.05)
        parent_listen = backend._listener.conn
        pid = os.fork()
        if pid == 0:  # the child: wait, woken by the parent's enqueue
            code = 1
            try:
                assert backend._listener is None
                t0 = time.monotonic()
                backend.wait(["q"], 20)
                code = 0 if time.monotonic() - t0 < 10 else 2
            finally:
                os._exit(code)
        time.sleep(1.0)
        producer.enqueue([Message("q", "t", b"x")])
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The parent's LISTEN connection is still its own, and alive.
        assert backend._listener.conn is parent_listen and not parent_listen.closed
        producer.reserve(["q"], 10, 60, "w")
        waiter = Waiter(backend, ["q"], 25)
        assert waiter.blocked(backend)
        sent = time.monotonic()
        producer.enqueue([Message("q", "t2", b"x")])
        returned = waiter.join(20)
        assert returned is not None and returned - sent < 3.0
    finally:
        backend.close()


def test_options_are_checked_and_kept_from_libpq() -> None:
    dsn, ours = parse_url("postgres://u:p@h:5/db?sslmode=disable&notify=0&poll=2")
    assert dsn == "postgresql://u:p@h:5/db?sslmode=disable"
    assert ours == {"notify": "0", "poll": "2"}
    assert PostgresBackend("postgresql://h/db?notify=off").notify is False
    assert PostgresBackend("postgresql://h/db").notify is True
    with pytest.raises(ConfigurationError, match="notify"):
        PostgresBackend("postgresql://h/db?notify=maybe")
    with pytest.raises(ConfigurationError, match="poll"):
        PostgresBackend("postgresql://h/db?poll=0")


def test_channel_names_fit() -> None:
    assert channel("default") == "gatorapp:default"
    long = channel("x" * 200)
    assert long.startswith("gatorapp:#") and len(long.encode()) <= 63
    assert len(channel("é" * 27).encode()) <= 63


def test_the_listen_connection_is_made_again_after_a_restart(tmp_path) -> None:
    from service_postgres import PostgresServer

    from gatorapp.errors import BackendError

    server = PostgresServer().start()
    try:
        backend = PostgresBackend(with_options(server.url, LONG_POLL))
        producer = PostgresBackend(server.url)
        waiter = Waiter(backend, ["q"], 25)
        assert waiter.blocked(backend)
        server.restart(down_for=0.5)
        waiter.thread.join(20)
        # (woken by the lost connection: it returned, or said the server was down)
        assert waiter.returned_at is not None
        assert waiter.error is None or isinstance(waiter.error, BackendError)
        deadline = time.monotonic() + 20
        while True:
            try:
                backend.wait(["q"], 0.01)
                producer.stats("q")
                break
            except BackendError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        waiter = Waiter(backend, ["q"], 25)
        assert waiter.blocked(backend)
        sent = time.monotonic()
        producer.enqueue([Message("q", "t", b"x")])
        returned = waiter.join(20)
        assert returned is not None and returned - sent < 3.0
        backend.close()
        producer.close()
    finally:
        server.close()
