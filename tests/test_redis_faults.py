"""Fault tests on Redis: real worker processes and a real redis-server, killed.

Every execution is a ``start``/``done`` line (task id, attempt, pid) in a
ledger file written by the task itself (tests/apps/redis_ledger.py). Lost and
duplicate counts come from the ledger, never from logs, and are printed in
the test summary whether the test passes or fails.
"""

from __future__ import annotations

import collections
import random
import re
import signal
import time
from pathlib import Path

import pytest
from service_redis import RedisServer
from worker_proc import (
    env_for,
    held_bound,
    kill_repeatedly,
    ledger_lines,
    output,
    report,
    start_worker,
    stop,
    wait_for,
)

from gatorapp import App

pytestmark = pytest.mark.slow

APP = "redis_ledger"
# Workers log each success at INFO: draining thousands of tasks, keep only
# warnings and errors, which the tests read.
QUIET = ("-l", "WARNING")


def _producer(url: str):
    app = App(url)

    @app.task(name="redis_ledger.record")
    def record(sleep: float = 0.0, spin: float = 0.0) -> None: ...

    return app, record


def _ledger(path: Path) -> list[tuple[str, str, int, int]]:
    """(event, task id, attempt, pid) rows."""
    if not path.exists():
        return []
    rows = []
    for line in ledger_lines(path):
        event, task_id, attempt, pid = line.split()
        rows.append((event, task_id, int(attempt), int(pid)))
    return rows


def _count(path: Path, event: str = "done") -> collections.Counter[str]:
    return collections.Counter(t for ev, t, _, _ in _ledger(path) if ev == event)


def _settled(app: App) -> bool:
    s = app.backend.stats("default")
    return (s.ready, s.delayed, s.running) == (0, 0, 0)


def _outcome(ids: list[str], ledger: Path) -> tuple[list[str], int, int]:
    """(lost ids, duplicate completions, duplicate starts) from the ledger."""
    done, starts = _count(ledger), _count(ledger, "start")
    lost = [i for i in ids if i not in done]
    return lost, sum(c - 1 for c in done.values()), sum(c - 1 for c in starts.values())


def test_sigkill_five_times_while_draining_5000_tasks_loses_nothing(redis_url, tmp_path):
    ledger = tmp_path / "ledger.txt"
    app, record = _producer(redis_url)
    n, kills, concurrency = 5000, 5, 4
    ids = [h.id for h in record.starmap([(0.001,)] * n)]
    env = env_for(redis_url, ledger, lease=1.0)
    rng = random.Random()
    # Kill when the drain reaches random points spread over it, so every kill
    # lands mid-drain whatever the machine's speed.
    marks = sorted(rng.sample(range(n // 20, n * 9 // 10), kills))
    args = ("-c", str(concurrency), "--prefetch", "4", *QUIET)
    killed_at = kill_repeatedly(
        env, args, marks, lambda: len(_count(ledger)), app=APP, interval=0.005
    )
    proc = start_worker(env, "-c", str(concurrency), *QUIET, app=APP)
    try:
        finished = wait_for(lambda: len(_count(ledger)) >= n and _settled(app), 60, interval=0.1)
    finally:
        code, out = stop(proc)
    lost, dup_done, dup_starts = _outcome(ids, ledger)
    report(
        f"Redis SIGKILL x{kills} over {n} tasks (-c {concurrency}, lease 1 s): kills after "
        f"{killed_at} completions; lost={len(lost)} duplicate completions={dup_done} "
        f"re-run starts={dup_starts}"
    )
    assert killed_at[-1] < n, "the drain finished before the last kill"
    assert finished and not lost, f"lost {len(lost)} tasks, e.g. {lost[:10]}"
    assert code == 0, out[-3000:]
    # Only what a killed worker held can run twice: -c 4 plus prefetch 4 per kill
    # (finished tasks whose acknowledgement was still in the outbox are among them).
    assert dup_starts <= kills * held_bound(concurrency, 4)
    s = app.backend.stats("default")
    assert (s.ready, s.delayed, s.running, s.dead) == (0, 0, 0, 0)
    app.close()


def test_sigkill_with_a_full_batch_and_outbox_reruns_at_most_what_was_held(redis_url, tmp_path):
    # Default (adaptive) prefetch and one thread: the worker holds batches of
    # up to 500 and settles them in one call, so every kill lands with a full
    # buffer and a full outbox. What runs again is bounded by what it held.
    ledger = tmp_path / "ledger.txt"
    app, record = _producer(redis_url)
    n, kills = 20_000, 3
    ids = [h.id for h in record.starmap([()] * n)]
    env = env_for(redis_url, ledger, lease=1.0)
    marks = sorted(random.Random().sample(range(n // 10, n * 8 // 10), kills))
    args = ("-c", "1", *QUIET)
    killed_at = kill_repeatedly(
        env, args, marks, lambda: len(_count(ledger)), app=APP, timeout=120, interval=0.002
    )
    proc = start_worker(env, "-c", "1", *QUIET, app=APP)
    try:
        finished = wait_for(lambda: len(_count(ledger)) >= n and _settled(app), 120, interval=0.1)
    finally:
        code, out = stop(proc)
    lost, dup_done, dup_starts = _outcome(ids, ledger)
    bound = held_bound(1, None)
    report(
        f"Redis SIGKILL x{kills} with full batches over {n} tasks (-c 1, default prefetch, "
        f"bound {bound} per kill): kills after {killed_at} completions; lost={len(lost)} "
        f"duplicate completions={dup_done} re-run starts={dup_starts}"
    )
    assert killed_at[-1] < n, "the drain finished before the last kill"
    assert finished and not lost, f"lost {len(lost)} tasks, e.g. {lost[:10]}"
    assert code == 0, out[-3000:]
    assert dup_starts <= kills * bound
    s = app.backend.stats("default")
    assert (s.ready, s.delayed, s.running, s.dead) == (0, 0, 0, 0)
    app.close()


def test_two_workers_on_one_queue_never_run_a_task_twice(redis_url, tmp_path):
    ledger = tmp_path / "ledger.txt"
    app, record = _producer(redis_url)
    n = 1000
    ids = [h.id for h in record.starmap([()] * n)]
    env = env_for(redis_url, ledger, lease=30.0)
    procs = [start_worker(env, "-c", "2", "--burst", *QUIET, app=APP) for _ in range(2)]
    for proc in procs:
        assert proc.wait(60) == 0, output(proc)
    lost, dup_done, dup_starts = _outcome(ids, ledger)
    pids = collections.Counter(pid for ev, _, _, pid in _ledger(ledger) if ev == "done")
    report(
        f"Redis two workers, {n} tasks: tasks per worker={sorted(pids.values())} "
        f"lost={len(lost)} duplicates={dup_starts}"
    )
    assert not lost and dup_starts == 0 and dup_done == 0
    app.close()


def test_task_of_four_leases_runs_once_while_every_slot_is_busy(redis_url, tmp_path):
    # Lease 1 s; two tasks of 4 s fill both slots of a -c 2 worker (one
    # sleeps, one spins holding the GIL), a third waits prefetched just as
    # long; a second worker polls the whole time, ready to take any lease
    # that lapses.
    ledger = tmp_path / "ledger.txt"
    app, record = _producer(redis_url)
    long_sleep = record.delay(sleep=4.0).id
    long_spin = record.delay(spin=4.0).id
    prefetched = record.delay().id
    env = env_for(redis_url, ledger, lease=1.0)
    busy = start_worker(env, "-c", "2", "--prefetch", "1", app=APP)
    assert wait_for(lambda: app.backend.stats("default").running == 3, 15)
    idle = start_worker(env, "-c", "1", app=APP)
    try:
        assert wait_for(lambda: len(_count(ledger)) == 3 and _settled(app), 20)
        time.sleep(1.2)  # past another lease length: nothing may come back
    finally:
        stop(busy)
        stop(idle)
    starts = _count(ledger, "start")
    pids = {t: pid for ev, t, _, pid in _ledger(ledger) if ev == "start"}
    report(
        "Redis heartbeat, 2 tasks of 4x the lease on both slots + 1 prefetched: "
        f"starts per task={sorted(starts.values())}, workers used={len(set(pids.values()))}"
    )
    assert starts == {long_sleep: 1, long_spin: 1, prefetched: 1}
    assert len(set(pids.values())) == 1, "the idle worker took a task over"
    app.close()


@pytest.mark.parametrize(
    ("args", "processes", "held"),
    [
        (("-c", "4", "--prefetch", "4"), 1, held_bound(4, 4)),
        # Two processes with batches of up to 500 in flight.
        (("-p", "2"), 2, held_bound(1, None)),
    ],
    ids=["c4", "p2"],
)
def test_redis_restart_mid_drain_worker_reconnects_and_loses_nothing(
    tmp_path, args, processes, held
):
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    url = f"{server.url}?prefix=restart"
    ledger = tmp_path / "ledger.txt"
    app, record = _producer(url)
    n = 2000
    ids = [h.id for h in record.starmap([(0.002,)] * n)]
    env = env_for(url, ledger, lease=2.0)
    proc = start_worker(env, *args, *QUIET, app=APP)
    try:
        assert wait_for(lambda: len(_count(ledger)) >= n * 3 // 10, 60, interval=0.01)
        server.kill()  # SIGKILL; with appendfsync always every write is on disk
        at_kill = len(_count(ledger))
        time.sleep(1.5)
        server.start()
        finished = wait_for(lambda: len(_count(ledger)) >= n and _settled(app), 60, interval=0.1)
        alive = proc.poll() is None
    finally:
        code, out = stop(proc)
        server.close()
    lost, dup_done, dup_starts = _outcome(ids, ledger)
    failures = out.count("failed, retrying with backoff")
    back = re.search(r"reachable again after ([0-9.]+) s", out)
    report(
        f"Redis restart mid-drain ({n} tasks, {' '.join(args)}, killed at {at_kill} done, "
        f"down 1.5 s): worker "
        f"reconnected {back.group(1) if back else '?'} s after its first failed call, logged "
        f"the outage {failures} time(s); "
        f"lost={len(lost)} duplicate completions={dup_done} re-run starts={dup_starts}"
    )
    assert alive, out[-3000:]
    assert finished and not lost, f"lost {len(lost)} tasks, e.g. {lost[:10]}"
    assert code == 0, out[-3000:]
    assert 1 <= failures <= 2 * processes and back, out[-3000:]
    assert dup_starts <= processes * held  # what the workers held


def test_paused_worker_cannot_ack_a_task_taken_over(redis_url, tmp_path):
    ledger = tmp_path / "ledger.txt"
    app, record = _producer(redis_url)
    task_id = record.delay(sleep=1.0).id
    env = env_for(redis_url, ledger, lease=1.0)
    first = start_worker(env, "-c", "1", app=APP)
    assert wait_for(lambda: _count(ledger, "start")[task_id] == 1, 15)
    first.send_signal(signal.SIGSTOP)  # its heartbeat stops too
    paused_pid = first.pid
    second = start_worker(env, "-c", "1", app=APP)
    try:
        assert wait_for(lambda: _count(ledger)[task_id] == 1, 15)  # second finished it
        assert wait_for(lambda: _settled(app), 5)
        first.send_signal(signal.SIGCONT)
        assert wait_for(lambda: _count(ledger)[task_id] == 2, 15)  # first finishes its run...
        assert wait_for(lambda: app.backend.stats("default").running == 0, 5)
        time.sleep(0.3)
    finally:
        code1, out1 = stop(first)
        stop(second)
    rows = [r for r in _ledger(ledger) if r[0] == "done"]
    report(
        f"Redis SIGSTOP past the lease: completions={len(rows)} "
        f"(paused worker {sum(1 for r in rows if r[3] == paused_pid)}, "
        f"other {sum(1 for r in rows if r[3] != paused_pid)}), late ack refused="
        f"{'ack of task' in out1 and 'refused' in out1}"
    )
    # ...but its acknowledgement is refused: the lease was taken over.
    assert "ack of task" in out1 and "refused" in out1, out1
    assert code1 == 0
    s = app.backend.stats("default")
    assert (s.ready, s.delayed, s.running, s.dead) == (0, 0, 0, 0)
    app.close()
