"""``gatorapp worker -p N``: real supervisor and worker processes, on SQLite.

The supervisor replaces a child that dies, passes signals on, and its
children stop when it is gone, even after a SIGKILL of the supervisor. Lost
and duplicate counts come from the tasks' ledger, never from logs.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
from worker_proc import (
    counts,
    env_for,
    finish,
    held_bound,
    output,
    read_ledger,
    report,
    start_worker,
    stop,
    wait_for,
)

from gatorapp import App

pytestmark = pytest.mark.slow


@pytest.fixture
def setup(tmp_path):
    url = f"sqlite:///{tmp_path}/queue.db"
    ledger = tmp_path / "ledger.txt"
    app = App(url)

    # Same name as tests/apps/ledger_app.py; this process only enqueues.
    @app.task(name="ledger_app.record")
    def record(key, sleep=0.0): ...

    return app, record, env_for(url, ledger, lease=1.0), ledger


def child_pids(proc) -> list[int]:
    """Worker processes the supervisor started, from its log, in order."""
    return [int(p) for p in re.findall(r"worker process \d+ started \(pid (\d+)\)", output(proc))]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by anyone) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_two_processes_share_the_work_and_stop_gracefully(setup):
    app, record, env, ledger = setup
    record.starmap([(i, 0.01) for i in range(200)])
    proc = start_worker(env, "-p", "2", "--prefetch", "2")
    try:
        assert wait_for(lambda: len(counts(ledger)) >= 200, 60)
        assert wait_for(lambda: len(child_pids(proc)) == 2, 5)
    finally:
        code, out = stop(proc)
    assert code == 0, out
    pids = {pid for _, _, pid in read_ledger(ledger)}
    assert pids == set(child_pids(proc)) and len(pids) == 2
    assert out.count("stopped:") == 2  # each worker's last line
    assert app.backend.stats("default") == type(app.backend.stats("default"))()


def test_a_child_killed_is_replaced_and_its_tasks_come_back(setup):
    app, record, env, ledger = setup
    n = 150
    record.starmap([(i, 0.02) for i in range(n)])
    proc = start_worker(env, "-p", "2", "--prefetch", "4")
    try:
        assert wait_for(lambda: len(counts(ledger)) >= 20, 30)
        victim = child_pids(proc)[0]
        os.kill(victim, signal.SIGKILL)
        assert wait_for(lambda: len(child_pids(proc)) == 3, 10), output(proc)
        assert wait_for(lambda: len(counts(ledger)) >= n, 60)
    finally:
        code, out = stop(proc)
    done = counts(ledger)
    lost = [i for i in range(n) if str(i) not in done]
    dups = sum(c - 1 for c in done.values())
    report(
        f"Supervisor, one of 2 children SIGKILLed over {n} tasks: replaced; lost={len(lost)} "
        f"duplicate completions={dups}"
    )
    assert f"(pid {victim}) killed by SIGKILL; starting a new one" in out
    assert not lost and code == 0, out
    assert dups <= held_bound(1, 4)  # what the killed child held
    assert app.backend.stats("default").running == 0


def test_children_stop_when_the_supervisor_is_killed_and_their_tasks_come_back(setup):
    app, record, env, ledger = setup
    n = 40
    record.starmap([(i, 0.3) for i in range(n)])
    proc = start_worker(env, "-p", "2", "--prefetch", "3")
    assert wait_for(lambda: len(counts(ledger, "start")) >= 2, 30)
    kids = child_pids(proc)
    proc.kill()  # SIGKILL: no handler runs in the supervisor
    proc.wait()
    # Each child sees the supervisor's pipe close, finishes its running task,
    # hands back what it prefetched and exits.
    assert wait_for(lambda: not any(alive(pid) for pid in kids), 15), output(proc)
    assert "the supervisor is gone: stopping" in output(proc)
    stats = app.backend.stats("default")
    assert stats.running == 0  # handed back, not left to their leases
    proc = start_worker(env, "-c", "4", "--burst")
    code, out = finish(proc)
    assert code == 0, out
    done = counts(ledger)
    lost = [i for i in range(n) if str(i) not in done]
    dups = sum(c - 1 for c in done.values())
    report(
        f"Supervisor SIGKILLed with 2 children over {n} tasks: children stopped; "
        f"lost={len(lost)} duplicate completions={dups}"
    )
    assert not lost and dups == 0


def test_a_second_signal_stops_every_process_at_once(setup):
    app, record, env, ledger = setup
    record.delay("long-a", sleep=30)
    record.delay("long-b", sleep=30)
    proc = start_worker(env, "-p", "2", "--prefetch", "0")
    assert wait_for(lambda: len(counts(ledger, "start")) == 2, 30)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    t0 = time.monotonic()
    code, out = stop(proc, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, out
    assert time.monotonic() - t0 < 5
    assert out.count("second signal") >= 2  # each child said so
    stats = app.backend.stats("default")
    assert (stats.ready, stats.running) == (2, 0)  # both handed back, ready at once


def test_burst_processes_exit_when_the_queues_are_empty(setup):
    app, record, env, ledger = setup
    record.starmap([(i,) for i in range(100)])
    proc = start_worker(env, "-p", "2", "--burst")
    code, out = finish(proc, timeout=60)
    assert code == 0, out
    assert len(counts(ledger)) == 100
    assert app.backend.len("default") == 0


def test_a_configuration_error_in_the_children_stops_the_supervisor(setup):
    _app, _record, env, _ledger = setup
    proc = start_worker(env, "-p", "2", "-Q", "x" * 201)
    code, out = finish(proc, timeout=60)
    assert code == 2, out
    assert "a configuration error; stopping" in out
    assert "starting a new one" not in out
