"""PostgreSQL taken away under real worker processes: killed and restarted
mid-drain, and a worker's connection ended from the server's side. Lost and
duplicate counts come from the tasks' own ledger (tests/apps/redis_ledger.py,
which runs on any backend the URL names)."""

from __future__ import annotations

import random
import re
import signal
import time

import psycopg
import pytest
from service_postgres import PostgresServer
from test_redis_faults import _count, _outcome, _producer, _settled
from worker_proc import env_for, held_bound, kill_repeatedly, report, start_worker, stop, wait_for

from gatorapp.errors import BackendError

pytestmark = pytest.mark.slow

APP = "redis_ledger"
QUIET = ("-l", "WARNING")


def settled(app) -> bool:
    """No task waits or runs (False while this process's own connection is
    made again after the restart)."""
    try:
        return _settled(app)
    except BackendError:
        return False


@pytest.fixture
def server():
    s = PostgresServer().start()
    yield s
    s.close()


def test_postgres_restart_mid_drain_the_worker_goes_on_and_loses_nothing(server, tmp_path):
    url = server.url
    ledger = tmp_path / "ledger.txt"
    app, record = _producer(url)
    n = 2000
    ids = [h.id for h in record.starmap([(0.002,)] * n)]
    proc = start_worker(env_for(url, ledger, lease=2.0), "-c", "4", *QUIET, app=APP)
    try:
        assert wait_for(lambda: len(_count(ledger)) >= n * 3 // 10, 60, interval=0.01)
        server.kill()  # a crash: what was committed is in the WAL
        at_kill = len(_count(ledger))
        time.sleep(1.5)
        server.start()
        finished = wait_for(lambda: len(_count(ledger)) >= n and settled(app), 90, interval=0.1)
        alive = proc.poll() is None
    finally:
        code, out = stop(proc)
    lost, dup_done, dup_starts = _outcome(ids, ledger)
    back = re.search(r"reachable again after ([0-9.]+) s", out)
    report(
        f"PostgreSQL restart mid-drain ({n} tasks, -c 4, killed at {at_kill} done, down 1.5 s): "
        f"worker back after {back.group(1) if back else '?'} s; lost={len(lost)} "
        f"duplicate completions={dup_done} re-run starts={dup_starts}"
    )
    assert alive, out[-3000:]
    assert finished and not lost, f"lost {len(lost)} tasks, e.g. {lost[:10]}"
    assert code == 0, out[-3000:]


def test_a_connection_ended_by_the_server_is_made_again(server, tmp_path):
    url = server.url
    ledger = tmp_path / "ledger.txt"
    app, record = _producer(url)
    n = 600
    ids = [h.id for h in record.starmap([(0.002,)] * n)]
    proc = start_worker(env_for(url, ledger, lease=2.0), *QUIET, app=APP)
    try:
        assert wait_for(lambda: len(_count(ledger)) >= n // 4, 60, interval=0.01)
        with psycopg.connect(url, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'gatorapp' AND pid <> pg_backend_pid()"
            ).fetchone()
        finished = wait_for(lambda: len(_count(ledger)) >= n and settled(app), 60, interval=0.1)
    finally:
        code, out = stop(proc)
    lost, dup_done, _ = _outcome(ids, ledger)
    report(
        f"PostgreSQL pg_terminate_backend mid-drain ({n} tasks): ended {ended[0]} "
        f"connection(s); lost={len(lost)} duplicate completions={dup_done}"
    )
    assert ended[0] >= 1
    assert finished and not lost, out[-3000:]
    assert code == 0, out[-3000:]


def test_sigkill_storm_over_two_workers_loses_nothing(postgres_url, tmp_path):
    ledger = tmp_path / "ledger.txt"
    app, record = _producer(postgres_url)
    n, kills, concurrency = 3000, 4, 4
    ids = [h.id for h in record.starmap([(0.001,)] * n)]
    env = env_for(postgres_url, ledger, lease=1.0)
    args = ("-c", str(concurrency), "--prefetch", "4", *QUIET)
    marks = sorted(random.Random().sample(range(n // 20, n * 8 // 10), kills))
    steady = start_worker(env, *args, app=APP)  # the other worker: never killed
    try:
        killed_at = kill_repeatedly(
            env, args, marks, lambda: len(_count(ledger)), app=APP, interval=0.005
        )
        finished = wait_for(lambda: len(_count(ledger)) >= n and settled(app), 90, interval=0.1)
    finally:
        code, out = stop(steady)
    lost, dup_done, dup_starts = _outcome(ids, ledger)
    report(
        f"PostgreSQL SIGKILL x{kills} beside a steady worker over {n} tasks (-c {concurrency}, "
        f"lease 1 s): kills after {killed_at} completions; lost={len(lost)} "
        f"duplicate completions={dup_done} re-run starts={dup_starts}"
    )
    assert finished and not lost, f"lost {len(lost)} tasks, e.g. {lost[:10]}"
    assert code == 0, out[-3000:]
    assert dup_starts <= kills * held_bound(concurrency, 4)
    s = app.backend.stats("default")
    assert (s.ready, s.delayed, s.running, s.dead) == (0, 0, 0, 0)
    app.close()


def test_a_paused_worker_s_late_ack_is_refused(postgres_url, tmp_path):
    ledger = tmp_path / "ledger.txt"
    app, record = _producer(postgres_url)
    task_id = record.delay(sleep=1.0).id
    env = env_for(postgres_url, ledger, lease=1.0)
    first = start_worker(env, "-c", "1", app=APP)
    assert wait_for(lambda: _count(ledger, "start")[task_id] == 1, 15)
    first.send_signal(signal.SIGSTOP)  # its heartbeat stops too: the lease runs out
    second = start_worker(env, "-c", "1", app=APP)
    try:
        assert wait_for(lambda: _count(ledger)[task_id] == 1, 15)  # the second finished it
        first.send_signal(signal.SIGCONT)
        assert wait_for(lambda: _count(ledger)[task_id] == 2, 15)  # the first finishes its run
        assert wait_for(lambda: app.backend.stats("default").running == 0, 5)
        time.sleep(0.3)
    finally:
        code1, out1 = stop(first)
        stop(second)
    report(f"PostgreSQL SIGSTOP past the lease: late ack refused={'refused' in out1}")
    assert "ack of task" in out1 and "refused" in out1, out1  # the lease was taken over
    assert code1 == 0
    s = app.backend.stats("default")
    assert (s.ready, s.delayed, s.running, s.dead) == (0, 0, 0, 0)
    app.close()
