"""A real ``gatorapp worker`` process, sent real signals, on SQLite."""

from __future__ import annotations

import signal
import time

import pytest
from worker_proc import counts, env_for, read_ledger, start_worker, stop, wait_for

from gatorapp import App

pytestmark = pytest.mark.slow


@pytest.fixture
def setup(tmp_path):
    url = f"sqlite:///{tmp_path}/queue.db"
    ledger = tmp_path / "ledger.txt"
    app = App(url)

    # Same names as tests/apps/ledger_app.py; this process only enqueues.
    @app.task(name="ledger_app.record")
    def record(key, sleep=0.0): ...

    return app, record, env_for(url, ledger, lease=1.0), ledger


def started(ledger, key):
    return lambda: any(ev == "start" and k == key for ev, k, _ in read_ledger(ledger))


def test_sigterm_finishes_running_task_and_hands_back_the_rest(setup):
    app, record, env, ledger = setup
    record.delay("slow", sleep=1.5)
    for i in range(5):
        record.delay(f"quick{i}")
    proc = start_worker(env, "-c", "1", "--prefetch", "2")
    assert wait_for(started(ledger, "slow"), 15)
    t0 = time.monotonic()
    code, out = stop(proc, signal.SIGTERM)
    assert code == 0, out
    assert time.monotonic() - t0 < 5
    assert counts(ledger)["slow"] == 1  # finished, not cut short
    assert not any(k.startswith("quick") for _, k, _ in read_ledger(ledger))
    stats = app.backend.stats("default")
    assert (stats.ready, stats.running) == (5, 0)  # prefetched ones were handed back
    assert "stopped: 1 tasks done" in out.splitlines()[-1]


def test_second_signal_stops_at_once_and_hands_back_running_task(setup):
    app, record, env, ledger = setup
    record.delay("long", sleep=30)
    proc = start_worker(env, "-c", "1")
    assert wait_for(started(ledger, "long"), 15)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    t0 = time.monotonic()
    code, out = stop(proc, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, out
    assert time.monotonic() - t0 < 3
    assert "second signal" in out
    stats = app.backend.stats("default")
    assert (stats.ready, stats.running) == (1, 0)  # handed back, ready at once


def test_sigkill_mid_task_the_task_comes_back(setup):
    app, record, env, ledger = setup
    record.delay("victim", sleep=1.0)
    proc = start_worker(env, "-c", "1")
    assert wait_for(started(ledger, "victim"), 15)
    proc.kill()
    proc.wait()
    assert counts(ledger)["victim"] == 0
    assert app.backend.stats("default").running == 1  # still leased to the dead worker
    # A new worker gets it once the lease (1 s) expires, and finishes it.
    proc = start_worker(env, "-c", "1")
    try:
        assert wait_for(lambda: counts(ledger)["victim"] == 1, 20)
    finally:
        code, out = stop(proc)
    assert code == 0, out
    starts = [k for ev, k, _ in read_ledger(ledger) if ev == "start"]
    assert starts.count("victim") == 2
    assert app.backend.stats("default") == type(app.backend.stats("default"))()


def test_sigint_is_graceful_too(setup):
    _app, record, env, ledger = setup
    record.delay("slow", sleep=0.8)
    proc = start_worker(env)
    assert wait_for(started(ledger, "slow"), 15)
    code, out = stop(proc, signal.SIGINT)
    assert code == 0, out
    assert counts(ledger)["slow"] == 1
