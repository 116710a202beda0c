"""Executors: where task code runs.

* :class:`InlineExecutor` (``-c 1`` on a thread-safe backend): tasks run in
  the worker loop's own thread, one after another. Nothing is handed between
  threads, so a task costs a decode, a call and a list append.
* :class:`ThreadExecutor` (``-c N``): N threads take tasks from a shared
  buffer and put outcomes in the outbox; the loop only refills the buffer and
  sends the outbox, and is woken once per batch, not once per task.

Both run each reservation through :class:`Runner`, which is the one place that
says what happens to a delivery: skipped if its lease was taken over, buried
if it was delivered too often, else decoded and run (see
:mod:`gatorapp.execution`), its outcome added to the outbox.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from ..backends import Reservation
from ..errors import Rejected
from ..execution import Settlement, choose_attempt, rejected, time_limit, undeliverable
from ..registry import Registry
from ..tally import Tally
from .aio import AsyncRunner
from .held import Held, fields
from .outbox import Outbox
from .report import Running
from .watchdog import Watchdog

log = logging.getLogger("gatorapp.worker")


class Runner:
    """Runs one reservation and records its outcome.

    :param on_shorter_lease: called when a task's own lease is shorter than the
        one it was reserved with (the heartbeat renews at once).
    """

    def __init__(
        self,
        registry: Registry,
        held: Held,
        outbox: Outbox,
        *,
        max_deliveries: int,
        max_payload: int | None,
        on_shorter_lease: Callable[[], None],
        aio: AsyncRunner | None = None,
        running: Running | None = None,
    ) -> None:
        self.aio = aio
        #: what runs now, for the worker's record (see gatorapp.workers)
        self.running = running or Running()
        #: counts for metrics (None: metrics off)
        self.tally: Tally | None = None
        #: runs one attempt (in a span, in a process that traces)
        self.attempt = choose_attempt()
        #: stops a sync task at its timeout by ending the process (supervised only)
        self.watch: Watchdog | None = None
        self.handed = 0  # async tasks handed to the loop (see Worker._observe)
        self.registry = registry
        self.held = held
        self.outbox = outbox
        self.max_deliveries = max_deliveries
        self.max_payload = max_payload
        self.on_shorter_lease = on_shorter_lease

    def __call__(self, r: Reservation) -> bool:
        """Handle one delivery; True when it ran an attempt (what max_tasks counts)."""
        held = self.held
        if held.lost and held.was_lost(r):
            # The heartbeat saw another worker take it over while it waited
            # here: running it too would only make a duplicate.
            held.forget([r])
            log.info(
                "skipping task %s on %s: its lease was taken over",
                r.task_id,
                r.queue,
                extra=fields(r),
            )
            return False
        if r.deliveries > self.max_deliveries:
            error = (
                f"delivered {r.deliveries} times without an outcome: its workers died "
                "or lost their leases"
            )
            self.outbox.add(r, undeliverable("worker_lost", error, r.data, self.registry))
            return False
        try:
            task, tdef = self.registry.decode(r.data, self.max_payload)
        except Rejected as exc:
            self.outbox.add(r, rejected(exc, r.data, self.registry))
            return False
        if not r.task_id:
            if r.token:
                # Stored under an empty id (by hand: every way in refuses one).
                # Taking the envelope's id would only have its settlement
                # refused; a dead letter ends it.
                empty = Settlement("dead", reason="decode_error", error="stored with an empty id")
                self.outbox.add(r, empty)
                return False
            r = held.swap(r, r._replace(task_id=task.task_id))  # (a five-method client's)
        lease = tdef.lease
        if lease is not None and lease != r.lease:
            shorter = lease < r.lease
            r = held.swap(r, r._replace(lease=lease))  # what the heartbeat renews from now on
            if shorter:
                # Renew at once with the task's shorter lease, so a crash now
                # frees it after that lease, not the worker's longer one.
                self.on_shorter_lease()
        if tdef.is_async and self.aio is not None:
            self.aio.add(r, task, tdef)  # (its outcome goes to the outbox from there)
            self.handed += 1
            return True
        running = self.running.tasks
        key = id(r)
        running[key] = (r.task_id, task.name, r.queue, time.time())
        if self.tally is not None:
            self.tally.started(r.queue, task.name)
        try:
            watch = self.watch
            if watch is not None and (tdef.timeout is not None or task.options):
                limit = time_limit(task, tdef)
                if limit is not None:
                    watch.started(r, task, tdef, limit)
                    outcome = self.attempt(task, tdef, self.registry)
                    if watch.finished(r):  # (else the watchdog recorded its timeout)
                        self.outbox.add(r, outcome)
                    return True
            self.outbox.add(r, self.attempt(task, tdef, self.registry))
            return True
        finally:
            del running[key]


class InlineExecutor:
    """Runs tasks in the calling thread (the worker loop's)."""

    concurrency = 1

    def __init__(self, run: Runner, stopping: Callable[[], bool]) -> None:
        self.run = run
        self.stopping = stopping
        self.buffer: deque[Reservation] = deque()
        self.started = 0  # attempts started (what max_tasks counts)
        self.progress = threading.Event()  # async tasks finishing wake the loop

    def submit(self, reservations: list[Reservation]) -> None:
        self.buffer.extend(reservations)

    def buffered(self) -> int:
        return len(self.buffer)

    def pending(self) -> int:
        """Tasks buffered or running (async ones included)."""
        aio = self.run.aio
        return len(self.buffer) + (aio.held if aio is not None else 0)

    def work(self, outbox: Outbox, budget: int | None, stop_at: int = 0) -> tuple[int, float]:
        """Run buffered tasks until ``stop_at`` are left, the outbox is due to be
        sent, ``budget`` attempts were started, or the worker stops. Returns how
        many ran and how long they took."""
        buffer, run, stopping = self.buffer, self.run, self.stopping
        clock = time.perf_counter
        started = 0
        t0 = clock()
        # The outbox is due by age only: it holds at most what the buffer held.
        check_at = t0 + outbox.max_age
        n = 0
        while len(buffer) > stop_at and not stopping():
            if budget is not None and started >= budget:
                break
            if run(buffer.popleft()):
                started += 1
            n += 1
            if clock() >= check_at:
                if outbox.due():
                    break
                check_at = clock() + outbox.max_age / 4
        self.started += started
        return n, clock() - t0

    def wait(self, timeout: float) -> None:
        """Wait for async tasks to finish (sync ones run in the caller)."""
        aio = self.run.aio
        if aio is not None and aio.held:
            self.progress.wait(timeout)
            self.progress.clear()

    def unstarted(self) -> list[Reservation]:
        """Take back every buffered task (the worker hands them back)."""
        out = list(self.buffer)
        self.buffer.clear()
        return out

    def running(self) -> int:
        aio = self.run.aio
        return aio.held if aio is not None else 0

    def shutdown(self, wait: bool) -> None:
        return None


class ThreadExecutor:
    """``concurrency`` threads taking tasks from one shared buffer.

    :param low_water: how few buffered tasks make the loop refill; the
        threads wake the loop (``progress``) then, when the outbox is full, and
        when every thread is idle.
    """

    def __init__(
        self,
        run: Runner,
        concurrency: int,
        stopping: Callable[[], bool],
        low_water: Callable[[], int],
    ) -> None:
        self.run = run
        self.concurrency = concurrency
        self.stopping = stopping
        self.low_water = low_water
        self.buffer: deque[Reservation] = deque()
        self._cond = threading.Condition()
        self._running = 0
        self._closed = False
        self._busy_time = 0.0
        self._done = 0
        self.started = 0  # attempts finished or running (what max_tasks counts)
        self.progress = threading.Event()  # the loop waits on it
        self._threads = [
            threading.Thread(target=self._main, name=f"gatorapp-task-{i}", daemon=True)
            for i in range(concurrency)
        ]
        for t in self._threads:
            t.start()

    def submit(self, reservations: list[Reservation]) -> None:
        with self._cond:
            self.buffer.extend(reservations)
            self._cond.notify(len(reservations))

    def buffered(self) -> int:
        return len(self.buffer)

    def pending(self) -> int:
        aio = self.run.aio
        return len(self.buffer) + self._running + (aio.held if aio is not None else 0)

    def running(self) -> int:
        aio = self.run.aio
        return self._running + (aio.held if aio is not None else 0)

    def _main(self) -> None:
        cond, buffer, run = self._cond, self.buffer, self.run
        outbox = run.outbox
        finished = False
        ran = False
        elapsed = 0.0
        while True:
            with cond:
                if finished:
                    self._running -= 1
                    self._done += 1
                    self._busy_time += elapsed
                    if not ran:
                        self.started -= 1  # counted when taken: it was no attempt
                    finished = False
                while not self._closed and (not buffer or self.stopping()):
                    if self._running == 0:
                        self.progress.set()  # all idle: the loop refills, waits or stops
                    cond.wait(0.5)
                if self._closed:
                    return  # (what was still buffered has been handed back)
                r = buffer.popleft()
                self._running += 1
                self.started += 1
                low = len(buffer) <= self.low_water()
            if low:
                self.progress.set()
            t0 = time.perf_counter()
            try:
                ran = run(r)
            except BaseException:
                # Never lose the thread. The task is no longer renewed, so its
                # lease expires and it runs again.
                log.exception("unexpected error running task %s", r.task_id, extra=fields(r))
                self.run.held.forget([r])
                ran = False
            elapsed = time.perf_counter() - t0
            finished = True
            if len(outbox) >= outbox.max_items:
                self.progress.set()

    def work(self, outbox: Outbox, budget: int | None, stop_at: int = 0) -> tuple[int, float]:
        """The threads run on their own: how many tasks finished since the last
        call, and the thread time they took."""
        with self._cond:
            done, busy = self._done, self._busy_time
            self._done, self._busy_time = 0, 0.0
        return done, busy

    def wait(self, timeout: float) -> None:
        self.progress.wait(timeout)
        self.progress.clear()

    def unstarted(self) -> list[Reservation]:
        with self._cond:
            out = list(self.buffer)
            self.buffer.clear()
        return out

    def shutdown(self, wait: bool) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if wait:
            for t in self._threads:
                t.join()
