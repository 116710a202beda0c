"""The worker's event loop: where ``async def`` tasks run.

One loop per worker process, in a thread of its own, started with the first
async task (a worker whose app has none starts no thread). The worker's
executor decodes each reservation as usual and hands an async task here;
up to ``concurrency`` run at once, the rest wait here in order. Hand-overs
are batched: tasks handed over while the loop is busy start together, with
one wake-up of the loop, so a deep queue of short async tasks costs a thread
switch per batch, not per task.

Each outcome goes to the worker's outbox like a sync task's, so leases,
heartbeats, retries, results and dead letters work the same. A task that
blocks the loop (a sync call inside ``async def``) stalls the other async
tasks, not the heartbeat, which has a thread of its own.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from ..backends import Reservation
from ..envelope import Task
from ..execution import Settlement
from ..execution_async import choose_attempt_async
from ..registry import Registry, TaskDef
from ..tally import Tally
from .held import fields
from .report import Running

log = logging.getLogger("gatorapp.worker")

Item = tuple[Reservation, Task, TaskDef]


class AsyncRunner:
    """Runs async tasks on a loop thread; ``add`` is called from any thread.

    :param done: called in the loop's thread with each reservation and its
        settlement (the worker's outbox).
    :param progress: set when tasks finish, so a waiting worker loop wakes.
    """

    def __init__(
        self,
        registry: Registry,
        concurrency: int,
        done: Callable[[Reservation, Settlement], None],
        progress: threading.Event,
        running: Running | None = None,
        forget: Callable[[Sequence[Reservation]], None] | None = None,
    ) -> None:
        self.registry = registry
        #: stops renewing a reservation whose attempt ended in an error of ours
        self.forget = forget
        #: what runs now, for the worker's record (see gatorapp.workers)
        self.running = running or Running()
        #: counts for metrics (None: metrics off)
        self.tally: Tally | None = None
        #: runs one attempt (in a span, in a process that traces)
        self.attempt = choose_attempt_async()
        self.concurrency = concurrency
        self.done = done
        self.progress = progress
        self._lock = threading.Lock()
        self._incoming: list[Item] = []
        self._waiting: deque[Item] = deque()  # (loop thread only)
        self._parked: deque[asyncio.Future[None]] = deque()  # idle runners (loop thread)
        #: tasks handed over and not finished (buffered here or running)
        self.held = 0
        self.finished = 0  # attempts finished since the last observed()
        self.busy = 0.0  # their seconds, summed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runners: set[asyncio.Task[None]] = set()
        self._idle = threading.Condition(self._lock)

    # -- any thread ----------------------------------------------------------------
    def add(self, r: Reservation, task: Task, tdef: TaskDef) -> None:
        with self._lock:
            self.held += 1
            first = not self._incoming
            self._incoming.append((r, task, tdef))
        loop = self._loop or self._start()
        if first:
            loop.call_soon_threadsafe(self._take)

    def observed(self) -> tuple[int, float]:
        """Attempts finished and their summed seconds since the last call."""
        with self._lock:
            n, busy = self.finished, self.busy
            self.finished, self.busy = 0, 0.0
        return n, busy

    def unstarted(self) -> list[Reservation]:
        """Take back the tasks not started yet (the worker hands them back)."""
        out: list[Reservation] = []
        if self._loop is None:
            return out
        taken = threading.Event()

        def take() -> None:
            with self._lock:
                items = [*self._waiting, *self._incoming]
                self._waiting.clear()
                self._incoming.clear()
                self.held -= len(items)
                if self.held == 0:
                    self._idle.notify_all()
            out.extend(r for r, _, _ in items)
            taken.set()

        self._loop.call_soon_threadsafe(take)
        taken.wait(5.0)
        return out

    def shutdown(self, wait: bool, timeout: float | None = None) -> None:
        """Stop the loop: after the running tasks finish (``wait``), or now,
        cancelling them (their leases run out and they run again)."""
        loop = self._loop
        if loop is None:
            return
        if wait:
            with self._idle:
                self._idle.wait_for(lambda: self.held == 0, timeout)
        else:
            loop.call_soon_threadsafe(self._cancel_all)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10.0)

    # -- the loop's thread ------------------------------------------------------------
    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is not None:
                return self._loop
            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._main, args=(loop,), name="gatorapp-asyncio", daemon=True
            )
            self._loop = loop
        self._thread.start()
        return loop

    def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            # Idle runners (and, after a stop at once, running tasks) end here.
            left = asyncio.all_tasks(loop)
            for t in left:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _take(self) -> None:
        with self._lock:
            items, self._incoming = self._incoming, []
        self._waiting.extend(items)
        # Wake parked runners, and start more while tasks wait and the limit
        # allows. A runner is a long-lived coroutine taking tasks one after
        # another: an asyncio Task per task would cost more than a no-op task.
        parked = self._parked
        for _ in range(min(len(parked), len(self._waiting))):
            fut = parked.popleft()
            if not fut.done():
                fut.set_result(None)
        loop = self._loop
        assert loop is not None
        runners = self._runners
        while len(runners) < self.concurrency and len(runners) - len(parked) < len(self._waiting):
            t = loop.create_task(self._runner())
            runners.add(t)
            t.add_done_callback(runners.discard)

    async def _runner(self) -> None:
        loop = self._loop
        assert loop is not None
        waiting = self._waiting
        while True:
            while waiting:
                r, task, tdef = waiting.popleft()
                await self._one(r, task, tdef)
            self.progress.set()  # (nothing waits here: the worker may send, refill)
            fut: asyncio.Future[None] = loop.create_future()
            self._parked.append(fut)
            await fut

    async def _one(self, r: Reservation, task: Task, tdef: TaskDef) -> None:
        t0 = time.perf_counter()
        running = self.running.tasks
        key = id(r)
        running[key] = (r.task_id, task.name, r.queue, time.time())
        if self.tally is not None:
            self.tally.started(r.queue, task.name)
        try:
            settlement = await self.attempt(task, tdef, self.registry)
        except asyncio.CancelledError:
            self._finish(time.perf_counter() - t0)
            raise
        except BaseException:  # never lose the runner: its lease runs out, it runs again
            log.exception("unexpected error running task %s", r.task_id, extra=fields(r))
            if self.forget is not None:
                self.forget([r])  # (no longer renewed: so it does run out)
            self._finish(time.perf_counter() - t0)
            return
        finally:
            del running[key]
        self.done(r, settlement)
        self._finish(time.perf_counter() - t0)

    def _finish(self, took: float) -> None:
        with self._lock:
            self.held -= 1
            self.finished += 1
            self.busy += took
            if self.held == 0:
                self._idle.notify_all()

    def _cancel_all(self) -> None:
        with self._lock:
            self._waiting.clear()
            self._incoming.clear()
        for t in list(self._runners):
            t.cancel()
