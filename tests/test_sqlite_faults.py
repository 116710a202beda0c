"""Fault tests on SQLite: real worker processes, killed with SIGKILL.

Every execution is written to a ledger file; lost and duplicate counts come
from the ledger, never from logs, and are printed with the test output.
"""

from __future__ import annotations

import random
import time

import pytest
from worker_proc import (
    counts,
    env_for,
    finish,
    kill_repeatedly,
    read_ledger,
    report,
    start_worker,
    stop,
    wait_for,
)

from gatorapp import App

pytestmark = pytest.mark.slow


def _producer(url: str):
    app = App(url)

    @app.task(name="ledger_app.record")
    def record(key, sleep=0.0): ...

    return app, record


def test_sigkill_three_times_while_draining_2000_tasks_loses_nothing(tmp_path):
    url = f"sqlite:///{tmp_path}/queue.db"
    ledger = tmp_path / "ledger.txt"
    app, record = _producer(url)
    n = 2000
    record.starmap([(i, 0.005) for i in range(n)])
    env = env_for(url, ledger, lease=1.0)
    rng = random.Random()
    # Three kills, each at a random moment once that worker is making progress
    # (a completion past where the ledger stood when it started).
    kills = kill_repeatedly(
        env,
        ("-c", "4", "--prefetch", "4"),
        [1] * 3,
        lambda: len(counts(ledger)),
        relative=True,
        then=lambda: time.sleep(rng.uniform(0.05, 0.5)),
        timeout=20,
    )
    proc = start_worker(env, "-c", "4")
    try:
        finished = wait_for(lambda: len(counts(ledger)) >= n, 90, interval=0.1)
    finally:
        code, out = stop(proc)
    done = counts(ledger)
    lost = [i for i in range(n) if str(i) not in done]
    dups = {k: c for k, c in done.items() if c > 1}
    starts = counts(ledger, "start")
    report(
        f"SQLite SIGKILL x3 over {n} tasks: finished after kills at {kills}; "
        f"lost={len(lost)} duplicate completions={len(dups)} "
        f"re-run starts={sum(c - 1 for c in starts.values() if c > 1)}"
    )
    assert kills[-1] < n, "the drain finished before the last kill"
    assert finished and not lost, f"lost {len(lost)} tasks, e.g. {lost[:10]}"
    assert code == 0, out
    # Only what a killed worker held can run twice: -c 4 plus prefetch 4 each time.
    assert sum(c - 1 for c in done.values()) <= 3 * 8
    stats = app.backend.stats("default")
    assert (stats.ready, stats.delayed, stats.running, stats.dead) == (0, 0, 0, 0)


def test_two_workers_on_one_file_never_run_a_task_twice(tmp_path):
    url = f"sqlite:///{tmp_path}/queue.db"
    ledger = tmp_path / "ledger.txt"
    _app, record = _producer(url)
    n = 600
    record.starmap([(i, 0.0) for i in range(n)])
    env = env_for(url, ledger, lease=30.0)
    procs = [start_worker(env, "-c", "2", "--burst") for _ in range(2)]
    for proc in procs:
        code, out = finish(proc)
        assert code == 0, out
    done = counts(ledger)
    pids = {pid for _, _, pid in read_ledger(ledger)}
    report(
        f"SQLite two workers, {n} tasks: pids={len(pids)} duplicates="
        f"{sum(c - 1 for c in done.values())}"
    )
    assert len(done) == n
    assert all(c == 1 for c in done.values())


def test_long_task_keeps_its_lease_while_every_slot_is_busy(tmp_path):
    # Lease 0.5 s, tasks of 2 s (4x the lease) on a -c 2 worker with both slots
    # busy, and a second worker polling the same file the whole time.
    url = f"sqlite:///{tmp_path}/queue.db"
    ledger = tmp_path / "ledger.txt"
    _app, record = _producer(url)
    record.delay("long-a", sleep=2.0)
    record.delay("long-b", sleep=2.0)
    env = env_for(url, ledger, lease=0.5)
    busy = start_worker(env, "-c", "2", "--prefetch", "0")
    assert wait_for(lambda: len(counts(ledger, "start")) == 2, 15)
    idle = start_worker(env, "-c", "1")
    try:
        assert wait_for(lambda: len(counts(ledger)) == 2, 15)
        time.sleep(0.6)  # past another lease length: nothing may come back
    finally:
        stop(busy)
        stop(idle)
    starts = counts(ledger, "start")
    report(f"SQLite heartbeat, 2 tasks of 4x the lease: starts={dict(starts)}")
    assert starts == {"long-a": 1, "long-b": 1}


def test_paused_worker_cannot_ack_a_task_taken_over(tmp_path):
    import signal

    url = f"sqlite:///{tmp_path}/queue.db"
    ledger = tmp_path / "ledger.txt"
    app, record = _producer(url)
    record.delay("paused", sleep=1.0)
    env = env_for(url, ledger, lease=0.5)
    first = start_worker(env, "-c", "1")
    assert wait_for(lambda: counts(ledger, "start")["paused"] == 1, 15)
    first.send_signal(signal.SIGSTOP)  # its heartbeat stops too
    second = start_worker(env, "-c", "1")
    try:
        assert wait_for(lambda: counts(ledger)["paused"] == 1, 15)  # second finished it
        assert wait_for(lambda: app.backend.stats("default").running == 0, 5)
        first.send_signal(signal.SIGCONT)
        assert wait_for(lambda: counts(ledger)["paused"] == 2, 15)  # first finishes its run...
        time.sleep(0.3)
    finally:
        code1, out1 = stop(first)
        stop(second)
    # ...but its acknowledgement is refused: the lease was taken over.
    assert "ack of task" in out1 and "refused" in out1, out1
    assert code1 == 0
    stats = app.backend.stats("default")
    assert (stats.ready, stats.running, stats.dead) == (0, 0, 0)
    report(
        f"SQLite SIGSTOP past the lease: completions={counts(ledger)['paused']}, late ack refused"
    )
