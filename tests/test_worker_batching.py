"""The worker fetches and settles in batches: backend calls per task, counted.

With a deep queue a worker reserves a batch and settles the previous one in
one call, so the calls it makes are a small fraction of the tasks it runs;
with a shallow queue it settles at once, adding no latency.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gatorapp import App, Worker
from gatorapp.backends.memory import MemoryBackend
from gatorapp.backends.redis_link import Link

N = 5000
CALLS = (
    "reserve",
    "settle",
    "settle_and_reserve",  # (begin_settle_and_reserve only starts it)
    "ack",
    "retry",
    "bury",
    "release",
)


class Counting(MemoryBackend):
    """Counts the worker's calls: only the outermost one of calls made inside
    others (settle_and_reserve is one call, not a settle and a reserve)."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.calls: dict[str, int] = dict.fromkeys(CALLS, 0)
        self.sizes: list[int] = []
        self._depth = threading.local()

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if name not in CALLS:
            return attr
        local = super().__getattribute__("_depth")
        calls = super().__getattribute__("calls")

        def counted(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(local, "n", 0)
            if depth == 0:
                calls[name] += 1
            local.n = depth + 1
            try:
                return attr(*args, **kwargs)
            finally:
                local.n = depth

        return counted


@pytest.fixture
def counted() -> Iterator[tuple[App, Counting]]:
    app = App("counting://", backend_class=Counting)

    @app.task
    def noop(i: int) -> None: ...

    noop.map(range(N))
    backend = app.backend
    assert isinstance(backend, Counting)
    yield app, backend
    app.close()


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_deep_queue_costs_few_backend_calls(counted, concurrency: int) -> None:
    app, backend = counted
    worker = Worker(app, concurrency=concurrency, burst=True)
    assert worker.run_forever() == 0
    assert worker.tasks_complete == N
    calls = sum(backend.calls.values())
    # One call per batch of up to 500 (13 or so): well under 1% of the tasks.
    assert calls <= N * 0.01, backend.calls
    assert backend.stats("default") == type(backend.stats("default"))()


def test_a_deep_queue_costs_few_round_trips_on_redis(redis_url: str, monkeypatch) -> None:
    trips = []
    real_send = Link.send

    def send(self: Link, commands: Any) -> Any:
        trips.append(len(commands))
        return real_send(self, commands)

    app = App(redis_url, default_queue=f"batching-{time.monotonic_ns()}")

    @app.task
    def noop(i: int) -> None: ...

    noop.map(range(N))
    monkeypatch.setattr(Link, "send", send)
    worker = Worker(app, burst=True)
    assert worker.run_forever() == 0
    assert worker.tasks_complete == N
    # Each round trip settles the last batch and reserves the next.
    assert len(trips) <= N * 0.01, len(trips)
    app.close()


def test_a_shallow_queue_is_settled_at_once(url: str) -> None:
    app = App(url)
    done = threading.Event()

    @app.task
    def job() -> None:
        done.set()

    worker = Worker(app)
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    try:
        time.sleep(0.2)  # idle
        job.delay()
        assert done.wait(5)
        # The worker would wait next: its outbox goes out now, not after an age.
        settled_in = time.monotonic()
        while app.backend.stats("default").running and time.monotonic() - settled_in < 2:
            time.sleep(0.005)
        assert app.backend.stats("default").running == 0
        assert time.monotonic() - settled_in < 0.5
    finally:
        worker.stop()
        thread.join(10)
        app.close()
