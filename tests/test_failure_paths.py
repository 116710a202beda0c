"""Failure paths: stopping during an outage, second signals with outcomes
pending, SQLite transactions, connections per thread, five-method clients
failing part-way, and CLI edges."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from worker_proc import APPS

from gatorapp import App, BackendError, Worker, cli
from gatorapp.backends import Reservation, Settled
from gatorapp.backends.client import ClientBackend
from gatorapp.backends.memory import MemoryBackend
from gatorapp.execution import Settlement
from gatorapp.worker.executors import Runner
from gatorapp.worker.fetch import Fetcher, hand_back
from gatorapp.worker.held import Held
from gatorapp.worker.outbox import Outbox


class AckFails(MemoryBackend):
    def ack(self, reservations):
        raise BackendError("backend is down")


def test_a_stop_request_ends_the_worker_while_acks_keep_failing(monkeypatch):
    import gatorapp.worker as worker_mod

    app = App("x://", backend_class=AckFails)

    @app.task
    def job(): ...

    job.delay()
    worker = Worker(app)
    monkeypatch.setattr(worker_mod, "SHUTDOWN_FLUSH_DEADLINE", 1.0)
    thread = threading.Thread(target=worker.run_forever)
    thread.start()
    deadline = time.monotonic() + 10
    while worker.tasks_complete < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    worker.stop()
    thread.join(15)
    assert not thread.is_alive()


def parts(app, *queues):
    """A worker's fetcher, outbox and held set, built as a worker builds them."""
    held = Held()
    outbox = Outbox(held)
    fetcher = Fetcher(
        app.backend,
        list(queues) or ["default"],
        "w",
        concurrency=1,
        prefetch=None,
        lease=30,
        refill_early=False,
    )
    return fetcher, outbox, held


def test_a_second_signal_does_not_hand_back_a_finished_task():
    app = App("memory://")

    @app.task
    def job(): ...

    job.delay()
    job.delay()
    fetcher, outbox, held = parts(app)
    done, _running = fetcher.exchange(outbox, held, 2)
    outbox.add(done, Settlement("success", attempt=1))  # finished; its ack not sent yet
    assert hand_back(fetcher, outbox, held) == 1  # only the one still running
    stats = app.backend.stats("default")
    assert (stats.ready, stats.running) == (1, 0)  # one acked, one handed back


def test_a_failed_commit_leaves_no_open_transaction(tmp_path):
    app = App(f"sqlite:///{tmp_path}/q.db")
    backend = app.backend
    backend.stats("default")
    conn = backend.conn
    with pytest.raises(sqlite3.Error):
        with backend.tx() as c:
            insert = "INSERT INTO gatorapp_tasks (queue, task_id, data, run_at) VALUES (?, ?, ?, ?)"
            c.execute(insert, ("q", "t", b"\0", 0))
            c.execute(insert, ("q", "t", b"\0", 0))  # (queue, task_id) is unique
    assert not conn.in_transaction
    backend.dead_add("q", "t2", b"x", "r", "e")  # the connection still works


def test_threads_do_not_leak_sqlite_connections(tmp_path):
    import gc
    import os

    app = App(f"sqlite:///{tmp_path}/q.db")

    @app.task
    def job(): ...

    before = len(os.listdir("/proc/self/fd"))
    for _ in range(100):
        t = threading.Thread(target=job.delay)
        t.start()
        t.join()
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) - before < 10
    assert app.backend.len("default") == 100


class FailingPushClient:
    """A five-method client whose push fails once, on the second call."""

    def __init__(self, conn_string):
        self.pushed: list[tuple[str, str]] = []
        self.calls = 0

    def push(self, queue_name, task_id, data, delay_until=None):
        self.calls += 1
        if self.calls == 2:
            raise OSError("store unavailable")
        self.pushed.append((queue_name, task_id))
        return task_id

    def pop(self, queue_name):
        return b"d"

    def get(self, queue_name, task_id):
        return None

    def len(self, queue_name):
        return 0

    def drop_all(self, queue_name): ...


def test_a_five_method_client_failing_part_way_never_pushes_twice():
    backend = ClientBackend(FailingPushClient("x://"), "x://")
    popped = backend.reserve(["q"], 3, 30.0, "w")  # (as the worker gets them)
    items = [(r._replace(task_id=f"t{i}"), b"d", 0.0) for i, r in enumerate(popped)]
    with pytest.raises(OSError):
        backend.retry(items)
    backend.retry(items)  # the worker sends the batch again
    assert backend.client.pushed == [("q", "t0"), ("q", "t1"), ("q", "t2")]


class RecordsClient(FailingPushClient):
    def __init__(self, conn_string):
        super().__init__(conn_string)
        self.store: dict[str, list[tuple[str, bytes]]] = {}

    def push(self, queue_name, task_id, data, delay_until=None):
        self.store.setdefault(queue_name, []).append((task_id, data))
        return task_id

    def pop(self, queue_name):
        items = self.store.get(queue_name)
        return items.pop(0)[1] if items else None

    def len(self, queue_name):
        return len(self.store.get(queue_name, []))


def test_an_unreadable_dead_letter_record_loses_no_others():
    backend = ClientBackend(RecordsClient("x://"), "x://")
    backend.dead_add("q", "good", b"payload", "reason", "error")
    backend.client.push("q.dead", "junk", b"\xc1 not msgpack")
    letters = backend.dead_list("q")
    assert [(d.task_id, d.reason) for d in letters] == [("good", "reason"), ("", "unreadable")]
    assert backend.client.len("q.dead") == 2  # both records are back


def test_enqueue_many_keeps_options_bound_to_the_task():
    app = App("memory://")

    @app.task
    def add(a, b):
        return a + b

    app.enqueue_many(add.options(queue="urgent"), [(1, 2), (3, 4)])
    assert app.backend.len("urgent") == 2


def test_dead_purge_all_and_show_all_are_refused(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("GATORAPP_TEST_URL", f"sqlite:///{tmp_path}/q.db")
    monkeypatch.syspath_prepend(str(APPS))
    sys.modules.pop("cli_app", None)
    try:
        assert cli.main(["dead", "-A", "cli_app", "purge", "--all"]) == 2
        assert "takes a task id or nothing" in capsys.readouterr().err
        assert cli.main(["dead", "-A", "cli_app", "show", "--all"]) == 2
        assert cli.main(["dead", "-A", "cli_app", "ls", "some-id"]) == 2
    finally:
        sys.modules.pop("cli_app", None)
    assert "takes no task id" in capsys.readouterr().err


def test_ctrl_c_interrupts_status():
    import os

    env = {**os.environ, "PYTHONPATH": str(APPS)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gatorapp", "status", "-A", "slow_status_app"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 130, err
    assert "Traceback" not in err


def test_dead_requeue_refuses_an_id_with_all(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("GATORAPP_TEST_URL", f"sqlite:///{tmp_path}/q.db")
    monkeypatch.syspath_prepend(str(APPS))
    sys.modules.pop("cli_app", None)
    try:
        assert cli.main(["dead", "-A", "cli_app", "requeue", "some-id", "--all"]) == 2
    finally:
        sys.modules.pop("cli_app", None)
    assert "not both" in capsys.readouterr().err


def test_five_method_clients_refuse_dead_letter_queue_names_and_say_what_they_cannot_find(
    caplog,
):
    from gatorapp import ConfigurationError

    app = App("x://", backend_class=RecordsClient)

    @app.task
    def job(): ...

    with pytest.raises(ConfigurationError, match="dead letters"):
        job.options(queue="emails.dead").delay()
    with caplog.at_level("WARNING", logger="gatorapp"):
        assert app.cancel("nope") is None
    assert "pass queue=" in caplog.text


def test_status_shows_unknown_counts_as_dashes(capsys):
    from gatorapp.cli import cmd_status

    app = App("x://", backend_class=RecordsClient)

    class Args:
        queues = ["default"]
        json = watch = False

    cmd_status(app, Args())
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["default", "0", "-", "-", "0", "-"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 10**30, -1])
def test_delay_by_out_of_range(bad):
    from gatorapp import ConfigurationError

    app = App("memory://")

    @app.task
    def job(): ...

    with pytest.raises(ConfigurationError, match="finite number of seconds"):
        job.options(delay_by=bad).delay()


def test_a_resent_ack_that_is_refused_is_not_called_a_takeover(caplog):
    app = App("memory://")
    _fetcher, outbox, _held = parts(app)
    r = Reservation("default", "t1", b"", "tok")
    with caplog.at_level("INFO", logger="gatorapp.worker"):
        outbox.add(r, Settlement("success", attempt=1))
        outbox.sent(outbox.take(), Settled([False], [], []))
        outbox.add(r, Settlement("success", attempt=1))
        outbox.unsent(outbox.take())  # the call failed: sent again next time
        outbox.sent(outbox.take(), Settled([False], [], []))
    first, second = caplog.records
    assert first.levelname == "WARNING" and "taken over by another worker" in first.getMessage()
    assert second.levelname == "INFO" and "not confirmed" in second.getMessage()


def test_a_prefetched_task_whose_lease_was_taken_over_is_not_run():
    app = App("memory://")
    ran = []

    @app.task
    def job(i):
        ran.append(i)

    job.delay(1)
    job.delay(2)
    fetcher, outbox, held = parts(app)
    first, second = fetcher.exchange(outbox, held, 2)
    assert held.mark_lost(second)  # as the heartbeat marks it
    run = Runner(
        app.registry, held, outbox, max_deliveries=5, max_payload=None, on_shorter_lease=int
    )
    assert [run(first), run(second)] == [True, False]
    assert ran == [1]
    assert not held.is_held(second)


def test_a_stopping_worker_asks_the_backend_to_hand_back_what_it_waited_for():
    calls = []

    class Recording(MemoryBackend):
        def stop_waiting(self):
            calls.append("stop_waiting")

    app = App("x://", backend_class=Recording)
    Worker(app, burst=True).run_forever()
    assert calls == ["stop_waiting"]
