"""``async def`` tasks and async producers, on every store (memory, SQLite,
Redis), through the API a user writes; then real worker processes (SIGTERM
with async tasks in flight, SIGKILL with async tasks held, an async task that
blocks the event loop past its lease)."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import tenacity
from worker_proc import counts, env_for, finish, start_worker, stop, wait_for

from gatorapp import App, ConfigurationError, TaskFailed, Worker

EVENTS: list[tuple[str, object]] = []


@pytest.fixture
def app(store_url: str) -> Iterator[App]:
    EVENTS.clear()
    a = App(store_url, results=True)
    yield a
    a.close()


def drain(app: App) -> None:
    Worker(app, burst=True).run_forever()


async def on_start(task):  # an async hook is awaited
    await asyncio.sleep(0)
    EVENTS.append(("start", task.func_args))


def on_success(task, result):  # a sync one is called
    EVENTS.append(("success", result))


async def on_success_of_sync(task, result):  # an async hook of a sync task runs too
    await asyncio.sleep(0)
    EVENTS.append(("sync-success", result))


def test_async_tasks_run_with_hooks_retries_results_and_dead_letters(app: App) -> None:
    @app.task(on_start=on_start, on_success=on_success)
    async def add(a, b):
        await asyncio.sleep(0.001)
        return a + b

    tries: list[int] = []

    @app.task(retries=2, backoff=tenacity.wait_none())
    async def flaky():
        tries.append(1)
        if len(tries) < 3:
            raise ValueError("not yet")
        return "third time"

    @app.task
    async def broken():
        raise KeyError("nope")

    @app.task(on_success=on_success_of_sync)
    def plain(x):  # sync and async tasks share one app and one worker
        return x * 2

    handles = [add.delay(i, i) for i in range(50)]
    retried, dead, sync = flaky.delay(), broken.delay(), plain.delay(21)
    drain(app)
    assert [h.get(timeout=5) for h in handles] == [2 * i for i in range(50)]
    assert sorted(e for e in EVENTS if e[0] == "success") == sorted(
        ("success", 2 * i) for i in range(50)
    )
    assert len([e for e in EVENTS if e[0] == "start"]) == 50
    assert retried.get(timeout=5) == "third time" and len(tries) == 3
    assert sync.get(timeout=5) == 42 and ("sync-success", 42) in EVENTS
    with pytest.raises(TaskFailed, match="KeyError: 'nope'") as info:
        dead.get(timeout=5)
    assert "raise KeyError" in info.value.traceback
    letter = app.backend.dead_get("default", dead.id)
    assert letter is not None and letter.reason == "retries_exhausted"


def test_timeouts_cancel_async_tasks_and_fail_late_sync_ones(app: App) -> None:
    @app.task(timeout=0.2, retries=1, backoff=tenacity.wait_none())
    async def stuck():
        EVENTS.append(("stuck", None))
        await asyncio.sleep(30)

    @app.task
    async def own_timeout():
        raise TimeoutError("mine")  # not the deadline: an ordinary failure

    @app.task(timeout=0.05)
    def slow_sync():
        time.sleep(0.2)
        return "late"

    @app.task
    async def quick(seconds):
        await asyncio.sleep(seconds)
        return seconds

    cancelled, mine, late = stuck.delay(), own_timeout.delay(), slow_sync.delay()
    per_call = quick.options(timeout=0.1).delay(5)
    in_time = quick.options(timeout=5).delay(0.01)
    t0 = time.monotonic()
    drain(app)
    assert time.monotonic() - t0 < 10  # nothing waited for the 30 s or 5 s sleeps
    with pytest.raises(TaskFailed, match=r"TaskTimeout: .*0\.2 s and was cancelled"):
        cancelled.get(timeout=5)
    assert EVENTS.count(("stuck", None)) == 2  # a failed attempt: retried by its policy
    with pytest.raises(TaskFailed, match="TimeoutError: mine"):
        mine.get(timeout=5)
    with pytest.raises(TaskFailed, match=r"TaskTimeout: .*cannot be stopped"):
        late.get(timeout=5)
    with pytest.raises(TaskFailed, match="TaskTimeout"):
        per_call.get(timeout=5)
    assert in_time.get(timeout=5) == 0.01


def run_on(loop: str, coro: Coroutine[Any, Any, None]) -> None:
    if loop == "uvloop":  # (what uvicorn[standard] and many async servers run on)
        pytest.importorskip("uvloop").run(coro)
    else:
        asyncio.run(coro)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_async_producers_never_block_the_event_loop(app: App, loop: str) -> None:
    @app.task
    async def double(x):
        return 2 * x

    @app.task(queue="other")
    def triple(x):
        return 3 * x

    async def main() -> None:
        one = await double.adelay(4)
        many = await double.amap([1, 2, 3])
        bound = await triple.options(queue="other", result_ttl=60).adelay(5)
        stars = await double.astarmap([(7,)])
        assert await one.astatus() == "queued" and not await one.aready()
        # While aget() waits, the loop goes on: a ticker keeps ticking.
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(ticker())
        worker = threading.Timer(0.3, drain, [app])
        worker.start()
        assert await one.aget(timeout=20) == 8
        ticking.cancel()
        assert ticks >= 10
        assert [await h.aget(timeout=5) for h in many] == [2, 4, 6]
        assert await bound.aget(timeout=5) == 15 and await stars[0].aget() == 14
        assert await one.astatus() == "succeeded" and await one.aready()
        rebuilt = app.result(one.id)
        assert await rebuilt.aget(timeout=1) == 8
        # (The worker's last steps, after the results: done before the app closes.)
        await asyncio.to_thread(worker.join, 30)

    run_on(loop, main())


def test_eager_mode_runs_async_tasks() -> None:
    app = App("memory://", eager=True, results=True)

    @app.task
    async def square(x):
        await asyncio.sleep(0)
        return x * x

    @app.task
    async def boom():
        raise KeyError("eager")

    assert square.delay(3).get() == 9  # outside a loop: run to completion
    with pytest.raises(KeyError):
        boom.options(task_id="b1").delay()
    with pytest.raises(TaskFailed, match="KeyError"):
        app.result("b1").get(timeout=1)

    async def main() -> None:
        assert (await square.adelay(4)).result == 16  # awaited on this loop
        assert square.delay(5).result == 25  # delay() inside a loop works too
        with pytest.raises(KeyError):
            await boom.adelay()

    asyncio.run(main())
    app.close()


def test_async_concurrency_is_checked() -> None:
    app = App("memory://")
    for bad in (0, -1, True, "8"):
        with pytest.raises(ConfigurationError, match="async_concurrency"):
            Worker(app, async_concurrency=bad)  # type: ignore[arg-type]


def test_async_tasks_run_many_at_once_up_to_the_limit() -> None:
    app = App("memory://")
    running = 0
    peak = 0

    @app.task
    async def wait_a_bit():
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    for _ in range(40):
        wait_a_bit.delay()
    t0 = time.monotonic()
    Worker(app, burst=True, async_concurrency=10).run_forever()
    took = time.monotonic() - t0
    assert peak == 10
    assert took < 2.0  # 40 tasks of 50 ms, ten at a time: about 0.2 s, not 2 s
    app.close()


# -- real worker processes ----------------------------------------------------------
@pytest.fixture(params=["sqlite", "redis", "postgres"])
def proc_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/q.db"
    return request.getfixturevalue(f"{request.param}_url")


def _enqueue(url: str, keys: list[str], **kwargs: float) -> None:
    """Enqueue ledger_app's record_async (by its registered name) from here."""
    app = App(url)

    @app.task(name="ledger_app.record_async")
    async def record_async(key, sleep=0.0, block=0.0): ...

    for key in keys:
        record_async.delay(key, **kwargs)
    app.close()


@pytest.mark.slow
def test_sigterm_lets_async_tasks_in_flight_finish(proc_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    keys = [f"t{i}" for i in range(20)]
    _enqueue(proc_url, keys, sleep=1.0)
    proc = start_worker(env_for(proc_url, ledger), "--async-concurrency", "20")
    assert wait_for(lambda: len(counts(ledger, "start")) == 20, 30), counts(ledger, "start")
    code, out = stop(proc, signal.SIGTERM)
    assert code == 0, out
    assert counts(ledger) == {k: 1 for k in keys}, out  # each finished, once


@pytest.mark.slow
def test_sigkill_with_async_tasks_held_loses_nothing(proc_url: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    keys = [f"k{i}" for i in range(300)]
    _enqueue(proc_url, keys, sleep=0.02)
    env = env_for(proc_url, ledger, lease=1.0)
    proc = start_worker(env, "--async-concurrency", "20")
    assert wait_for(lambda: len(counts(ledger)) >= 40, 30)
    stop(proc, signal.SIGKILL)
    done_before = len(counts(ledger))
    assert done_before < len(keys)  # killed midway
    again = start_worker(env, "--burst")
    time.sleep(1.2)  # (the killed worker's leases run out)
    code, out = finish(again)
    if len(counts(ledger)) < len(keys):  # (a burst that started before they ran out)
        code, out = finish(start_worker(env, "--burst"))
    assert code == 0, out
    done = counts(ledger)
    assert set(done) == set(keys), sorted(set(keys) - set(done))[:5]


@pytest.mark.slow
def test_an_async_task_blocking_the_loop_past_its_lease_keeps_it(
    proc_url: str, tmp_path: Path
) -> None:
    # The heartbeat has a thread of its own: a loop stuck in a sync call for
    # three leases does not stop the renewals, so the task runs once.
    ledger = tmp_path / "ledger"
    _enqueue(proc_url, ["blocker"], block=3.0)
    env = env_for(proc_url, ledger, lease=1.0)
    first = start_worker(env, "--burst")
    assert wait_for(lambda: counts(ledger, "start")["blocker"] == 1, 20)
    second = start_worker(env, "--burst")  # would take it, were its lease lost
    code, out = finish(first)
    assert code == 0, out
    finish(second)
    assert counts(ledger, "start") == {"blocker": 1}
    assert counts(ledger) == {"blocker": 1}


@pytest.mark.slow
def test_a_sync_task_past_its_timeout_has_its_process_replaced(tmp_path: Path) -> None:
    # Under a supervisor (-p 2), the watchdog fails the attempt with TaskTimeout
    # and ends the process; the supervisor starts another, which runs the
    # retry (and replaces itself again); then the task is a dead letter.
    url = f"sqlite:///{tmp_path}/q.db"
    ledger = tmp_path / "ledger"
    app = App(url)

    @app.task(name="ledger_app.overdue", timeout=1.0, retries=1)
    def overdue(key, sleep=30.0): ...

    @app.task(name="ledger_app.record")
    def record(key, sleep=0.0): ...

    overdue.delay("slow")
    record.delay("after")
    proc = start_worker(env_for(url, ledger), "-p", "2")
    try:
        assert wait_for(lambda: app.backend.stats("default").dead == 1, 60)
        assert wait_for(lambda: counts(ledger)["after"] == 1, 30)
    finally:
        code, out = stop(proc, signal.SIGTERM)
    letter = app.backend.dead_get("default", _only_letter(app))
    assert letter is not None and "TaskTimeout" in letter.error, letter
    assert counts(ledger, "start")["slow"] == 2 and counts(ledger)["slow"] == 0
    assert out.count("ran past its timeout of 1 s: this worker process stops") == 2, out
    assert "stopped for a task past its timeout (status 3); starting a new one" in out
    assert code == 0, out
    app.close()


def _only_letter(app: App) -> str:
    (letter,) = app.backend.dead_list("default")
    return letter.task_id


def test_astatus_says_what_status_says(app: App) -> None:
    @app.task
    async def later(x):
        return x

    async def main() -> None:
        ready = await later.adelay(1)
        delayed = await later.options(delay_by=3600).adelay(2)
        assert (await ready.astatus(), await delayed.astatus()) == ("queued", "delayed")
        assert app.backend.reserve(["default"], 1, 30, "w")  # leased: running
        assert await ready.astatus() == ready.status() == "running"
        assert await app.result("never-enqueued").astatus() == "unknown"

    asyncio.run(main())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_each_event_loop_closes_its_connections(redis_url: str, loop: str) -> None:
    # A web server's loop, or a script's asyncio.run: when it ends, the
    # connections made on it for adelay and aget end with it.
    import redis

    app = App(redis_url, results=True)

    @app.task
    async def add(a, b):
        return a + b

    async def main(i: int) -> None:
        h = await add.adelay(i, i)
        await asyncio.to_thread(Worker(app, burst=True).run_forever)
        assert await h.aget(timeout=5) == 2 * i

    admin = redis.Redis.from_url(redis_url.split("?")[0])
    run_on(loop, main(0))
    before = admin.info("clients")["connected_clients"]
    for i in range(1, 6):
        run_on(loop, main(i))
    assert admin.info("clients")["connected_clients"] <= before
    admin.close()
    app.close()
