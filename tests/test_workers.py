"""Workers that report themselves (gatorapp.workers): real worker processes on
SQLite and Redis, listed with ``gatorapp workers`` and ``list_workers``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from worker_proc import output, start_worker, stop, wait_for

from gatorapp import App
from gatorapp.backends import load_backend
from gatorapp.errors import ConfigurationError
from gatorapp.workers import NotAvailable, RunningTask, WorkerInfo, decode_all, list_workers

pytestmark = pytest.mark.slow


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gatorapp", "workers", "-A", "ledger_app", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def listed(app: App) -> dict[int, WorkerInfo]:
    return {w.pid: w for w in list_workers(app)}


def test_workers_list_themselves_with_what_they_run_and_leave_when_stopped(served) -> None:
    app, record, env = served
    # A lease well past the tasks' 3 s: a heartbeat late on a loaded machine
    # must not let a task run twice (the test counts three done).
    env = {**env, "GATORAPP_TEST_LEASE": "10"}
    # (No prefetch: each takes only what it runs, so the three run at once.)
    a = start_worker(env, "-Q", "default", "-c", "2", "--prefetch", "0", "--beat", "0.3")
    b = start_worker(env, "-Q", "default,other", "--prefetch", "0", "--beat", "0.3")
    try:
        assert wait_for(lambda: {a.pid, b.pid} <= set(listed(app)), 30)
        w = listed(app)
        assert w[a.pid].queues == ["default"] and w[a.pid].concurrency == 2
        assert w[b.pid].queues == ["default", "other"] and w[b.pid].concurrency == 1
        assert w[a.pid].version and w[a.pid].started <= time.time()
        assert not w[a.pid].running and w[a.pid].done == 0

        handles = [record.delay(f"slow-{i}", sleep=3.0) for i in range(3)]
        ids = {h.id for h in handles}

        def running() -> list[RunningTask]:
            return [t for w in list_workers(app) for t in w.running]

        assert wait_for(lambda: len(running()) == 3, 30), (list_workers(app), output(a))
        now = time.time()
        for t in running():
            assert t.task_id in ids and t.name == "ledger_app.record" and t.queue == "default"
            assert now - 5 < t.started <= now

        text = cli(env)
        assert text.returncode == 0, text.stderr
        assert str(a.pid) in text.stdout and str(b.pid) in text.stdout
        assert "ledger_app.record" in text.stdout
        data = json.loads(cli(env, "--json").stdout)
        assert {d["pid"] for d in data} >= {a.pid, b.pid}
        assert sum(len(d["running"]) for d in data) == 3
        # (A record taken as a task ends may show it done and still running:
        # the next beat's does not.)
        assert wait_for(lambda: sum(w.done for w in list_workers(app)) == 3 and not running(), 30)
        # A stopped worker deletes its record: it is gone at once.
        code, _ = stop(b)
        assert code == 0
        assert set(listed(app)) == {a.pid}
    finally:
        stop(a)
        stop(b)
    assert a.pid not in listed(app)


def test_a_killed_worker_leaves_the_list_when_its_record_expires(served) -> None:
    app, _, env = served
    a = start_worker(env, "--beat", "0.3")
    b = start_worker(env, "--beat", "0.3")
    try:
        assert wait_for(lambda: {a.pid, b.pid} <= set(listed(app)), 30)
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        t0 = time.monotonic()
        assert wait_for(lambda: a.pid not in listed(app), 10)
        # Three beats of 0.3 s: gone in about a second, and not much sooner
        # (b, beating, stays listed throughout).
        assert time.monotonic() - t0 < 5
        assert b.pid in listed(app)
    finally:
        stop(b)


def test_no_list_without_a_store_that_keeps_one(sqs_url, redis_url) -> None:
    app = App(sqs_url)
    with pytest.raises(NotAvailable, match="keeps no list of workers") as caught:
        list_workers(app)
    assert isinstance(caught.value, ConfigurationError)
    # With a result store that keeps one, an SQS app's workers report there.
    app = App(sqs_url, results=redis_url)
    store = load_backend(redis_url)
    info = WorkerInfo("h:1:x", "h", 1, ["default"], 1, "0", time.time(), time.time(), 60.0)
    store.put_worker(info.worker_id, info.encode(), 60.0)
    assert [w.worker_id for w in list_workers(app)] == ["h:1:x"]


def test_records_round_trip_and_damaged_ones_are_skipped() -> None:
    now = time.time()
    info = WorkerInfo(
        "host:7:abc",
        "host",
        7,
        ["a", "b"],
        4,
        "1.2",
        now - 10,
        now,
        15.0,
        done=5,
        failed=2,
        running=[RunningTask("t1", "mod.fn", "a", now - 1)],
        async_concurrency=100,
    )
    assert WorkerInfo.decode(info.encode()) == info
    assert info.succeeded == 3
    assert info.to_dict()["running"] == [
        {"id": "t1", "name": "mod.fn", "queue": "a", "started": now - 1}
    ]
    assert decode_all([b"\x93junk", b"\xc1", info.encode()]) == [info]


def test_a_worker_stopped_at_once_leaves_the_list_at_once(served) -> None:
    app, record, env = served
    a = start_worker(env, "--beat", "30")  # (its record would live 90 s)
    try:
        assert wait_for(lambda: a.pid in listed(app), 30)
        record.delay("long", sleep=30.0)
        ledger = Path(env["GATORAPP_TEST_LEDGER"])
        assert wait_for(lambda: ledger.exists() and "start long" in ledger.read_text(), 30)
    finally:
        a.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        code, _ = stop(a, signal.SIGTERM)  # a second signal: at once, the task handed back
    assert code == 128 + signal.SIGTERM
    assert a.pid not in listed(app)


def test_an_sqs_worker_reports_to_its_result_store(sqs_url, redis_url) -> None:
    import threading

    from gatorapp import Worker

    app = App(sqs_url, results=redis_url)
    worker = Worker(app, beat=0.3)
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: [w.worker_id for w in list_workers(app)] == [worker.worker_id], 30)
    finally:
        worker.stop()
        thread.join(30)
    assert list_workers(app) == []
