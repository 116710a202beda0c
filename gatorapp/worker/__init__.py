"""The worker: reserve tasks in batches, run them, settle their outcomes in batches.

One loop per worker process does every backend call but the heartbeat's:

1. it refills a local buffer with one call that also sends the outbox
   (:mod:`.fetch`), so a deep queue costs a round trip per batch;
2. tasks run (:mod:`.executors`): in the loop's own thread at ``-c 1``, on
   ``N`` threads at ``-c N``; each outcome goes to the outbox (:mod:`.outbox`);
3. with nothing buffered, running or unsent, it blocks in ``backend.wait``
   until a task may be ready (or returns, with ``burst``).

A heartbeat thread (:mod:`.heartbeat`) renews the lease of everything held.
Backends that are not thread-safe (Alligator-style clients) get no heartbeat
and are only ever called from the loop's thread, while tasks run on others.

Shutdown: the first SIGINT/SIGTERM (:mod:`.signals`) stops fetching, hands
back buffered tasks, lets running tasks finish and settles them, logs a final
line and returns 0. A second signal settles what has finished, hands back
everything else, running tasks included, and exits at once with status
128 + signal number.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from ..backends import Backend, Message, Reservation
from ..errors import ConfigurationError
from ..execution import Settlement
from ..registry import Registry
from ..schedules import Schedule
from ..tally import Tally
from ..workers import DEFAULT_BEAT, store_for
from .aio import AsyncRunner
from .executors import InlineExecutor, Runner, ThreadExecutor
from .fetch import MAX_PREFETCH, Fetcher, Outage, hand_back
from .heartbeat import Heartbeat
from .held import Held
from .outbox import Outbox
from .report import Reporter, Running
from .scheduler import Scheduler
from .signals import Installed
from .watchdog import TIMEOUT_EXIT, Watchdog

__all__ = ["AppLike", "Worker"]

log = logging.getLogger("gatorapp.worker")

#: Seconds a stopping worker keeps trying to send its last settlements to an
#: unreachable backend before it exits (the leases then expire instead).
SHUTDOWN_FLUSH_DEADLINE = 30.0

#: Seconds the oldest outcome may wait in the outbox before it is sent.
OUTBOX_MAX_AGE = 0.05

#: ``async def`` tasks a worker runs at once by default (on one event loop,
#: so many cost little; they wait on I/O together).
DEFAULT_ASYNC_CONCURRENCY = 100

#: Seconds a cold stop (second signal) spends handing tasks back before it
#: exits regardless (an unreachable backend: the leases expire instead).
COLD_STOP_DEADLINE = 5.0


class AppLike(Protocol):
    """What a worker needs from an app (:class:`gatorapp.App` has it)."""

    registry: Registry
    lease: float
    max_deliveries: int

    @property
    def backend(self) -> Backend: ...

    def queues(self) -> list[str]: ...

    def check_queue(self, queue: str) -> str: ...

    def result_store(self) -> Backend | None: ...

    @property
    def schedules(self) -> list[Schedule]: ...

    def tick_message(self, schedule: Schedule, tick: float) -> Message: ...


class Worker:
    """Consume ``queues`` (earlier ones first) until stopped.

    :param queues: queue names, or a comma-separated string; default: every
        queue the app knows (its default queue, then each task's queue).
    :param max_tasks: return after this many attempts (failed ones count).
    :param concurrency: tasks run at once: in the worker's own thread at 1,
        on threads above.
    :param burst: return once the queues have nothing ready.
    :param prefetch: tasks reserved ahead of free threads; default: adapts to
        how long tasks take (up to 500, see :mod:`gatorapp.worker.fetch`).
    :param schedule: also enqueue the ticks of the app's periodic tasks (see
        :mod:`gatorapp.worker.scheduler`); ``gatorapp worker`` does unless
        ``--no-schedule`` or ``--burst``.
    :param async_concurrency: ``async def`` tasks run at once on the worker's
        event loop (see :mod:`gatorapp.worker.aio`), besides ``concurrency``.
    :param beat: seconds between two writes of this worker's record in the
        list of workers (:mod:`gatorapp.workers`); None: not listed.
    :param tally: counts attempts and outcomes for metrics (see
        :mod:`gatorapp.metrics`); None: nothing is counted.
    :param replace_overdue: a sync task past its ``timeout`` ends this process
        (exit status :data:`~gatorapp.worker.watchdog.TIMEOUT_EXIT`), for a
        supervisor to replace it; ``gatorapp worker -p N`` sets it in its
        processes (see :mod:`gatorapp.worker.watchdog`).
    """

    def __init__(
        self,
        app: AppLike,
        queues: Sequence[str] | str | None = None,
        max_tasks: int | None = None,
        *,
        concurrency: int = 1,
        burst: bool = False,
        prefetch: int | None = None,
        schedule: bool = False,
        async_concurrency: int = DEFAULT_ASYNC_CONCURRENCY,
        replace_overdue: bool = False,
        beat: float | None = DEFAULT_BEAT,
        tally: Tally | None = None,
    ) -> None:
        if isinstance(queues, str):
            queues = [q.strip() for q in queues.split(",") if q.strip()]
        if concurrency < 1:
            raise ConfigurationError("concurrency must be >= 1")
        if max_tasks is not None and max_tasks < 1:
            raise ConfigurationError("max_tasks must be >= 1")
        if prefetch is not None and prefetch < 0:
            raise ConfigurationError("prefetch must be >= 0")
        if isinstance(async_concurrency, bool) or not isinstance(async_concurrency, int):
            raise ConfigurationError("async_concurrency must be an integer >= 1")
        if async_concurrency < 1:
            raise ConfigurationError("async_concurrency must be >= 1")
        if beat is not None and not beat > 0:
            raise ConfigurationError("beat must be a number of seconds > 0, or None")
        self.beat = beat
        self.tally = tally
        self.async_concurrency = async_concurrency
        self.replace_overdue = replace_overdue
        self.app = app
        # Named queues are checked by the backend's rules now, not on first fetch.
        self.queues: list[str] = [app.check_queue(q) for q in (queues or app.queues())]
        self.max_tasks = max_tasks
        self.concurrency = concurrency
        self.burst = burst
        self.schedule = schedule
        self.prefetch = prefetch
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._cold = 0
        self._cold_once = threading.Lock()
        self._held = Held()
        self._outbox = Outbox(self._held, max_age=OUTBOX_MAX_AGE)
        self._running = Running()
        self._reporting: Reporter | None = None

    # -- overridable hooks (Alligator's Worker API) ----------------------------
    @property
    def to_consume(self) -> str:
        return ",".join(self.queues)

    def ident(self) -> str:
        return f"gatorapp-worker[{self.worker_id}]"

    def starting(self) -> None:
        log.info(
            "%s starting: backend %s, queues %s, concurrency %d%s",
            self.ident(),
            self.app.backend.describe(),
            self.to_consume,
            self.concurrency,
            f", max {self.max_tasks} tasks" if self.max_tasks else "",
        )

    def stopping(self) -> None:
        done, ok = self.tasks_complete, self._outbox.succeeded
        log.info(
            "%s stopped: %d tasks done (%d succeeded, %d failed)", self.ident(), done, ok, done - ok
        )

    def result(self, result: Any) -> None:
        """Called with each successful task's return value, in the loop's thread."""

    # -- control -------------------------------------------------------------
    @property
    def tasks_complete(self) -> int:
        """Attempts finished, failed ones included."""
        return self._outbox.completed

    def stop(self) -> None:
        """Ask the worker to stop gracefully (thread-safe)."""
        self._stop.set()

    def handle_signal(self, signum: int, frame: Any = None) -> None:
        """SIGINT/SIGTERM: the first stops gracefully, a second at once."""
        if self._stop.is_set():
            if self._cold:
                return
            self._cold = signum
            if self.app.backend.thread_safe:
                # The loop's thread may be deep in a task: stop from a thread of
                # our own, with a connection of its own.
                threading.Thread(target=self._cold_stop, name="gatorapp-stop").start()
            return  # (else the loop stops at its next step: tasks run on other threads)
        log.warning(
            "%s got %s: finishing running task(s); send it again to stop now",
            self.ident(),
            signal.Signals(signum).name,
        )
        self._stop.set()

    def run_forever(self) -> int:
        """Run until stopped, ``max_tasks`` attempts are done, or (burst) idle. Returns 0."""
        with Installed(self.handle_signal):
            backend = self.app.backend
            leases = backend.supports_leases
            inline = self.concurrency == 1 and backend.thread_safe
            # pop() removes a task for good: hold none ahead of a free thread,
            # so a killed worker loses at most the tasks it was running.
            if not leases:
                self.prefetch = 0
            store = self.app.result_store()
            if store is not None:
                self._outbox.result_limit = min(self._outbox.result_limit, store.max_payload)
            registry = self.app.registry
            tasks = registry.tasks.values()
            has_async = any(t.is_async for t in tasks)
            # Reserve for the event loop's capacity only on queues of async
            # tasks alone: on a queue shared with sync tasks, a batch that size
            # would hold sync tasks back behind a busy thread (docs/asyncio.md).
            sync_queues = {t.queue for t in tasks if not t.is_async}
            async_only = has_async and not sync_queues.intersection(self.queues)
            # (No thread until the first async task; with none, never.)
            self._aio = AsyncRunner(
                registry,
                self.async_concurrency,
                self._outbox.add,
                threading.Event(),
                self._running,
                forget=self._held.forget,
            )
            self._fetch = Fetcher(
                backend,
                self.queues,
                self.worker_id,
                concurrency=self.concurrency + (self.async_concurrency if async_only else 0),
                prefetch=self.prefetch,
                lease=self.app.lease,
                refill_early=not inline,
                result_store=store,
            )
            outbox = self._outbox
            # (More than a worker ever holds: a full batch is settled with the next
            # reserve, not on its own.)
            outbox.max_items = 2 * (self.concurrency + MAX_PREFETCH)
            outbox.keep_results = type(self).result is not Worker.result
            outbox.shared = not inline or has_async
            self._heartbeat = Heartbeat(backend, self._held, self.app.lease, outbox.pending)
            runner = Runner(
                self.app.registry,
                self._held,
                outbox,
                max_deliveries=self.app.max_deliveries,
                max_payload=backend.max_payload,
                on_shorter_lease=self._heartbeat.wake,
                aio=self._aio,
                running=self._running,
            )
            stopping = self._stop.is_set
            self._executor: InlineExecutor | ThreadExecutor = (
                InlineExecutor(runner, stopping)
                if inline
                else ThreadExecutor(
                    runner, self.concurrency, stopping, lambda: self._fetch.concurrency
                )
            )
            self._aio.progress = self._executor.progress  # (finishing wakes the loop)
            if self.tally is not None:
                # (tasks start on several threads: the executor's, the event loop's)
                self.tally.shared = not inline or has_async
                outbox.tally = runner.tally = self._aio.tally = self.tally
            if self.replace_overdue:
                runner.watch = Watchdog(registry, self._overdue)
            self._outage = Outage(self.ident())
            beating = leases and backend.thread_safe
            scheduler = None
            if self.schedule and self.app.schedules:  # (no thread at all without them)
                scheduler = Scheduler(
                    backend, self.app.schedules, self.app.tick_message, self.ident()
                )
            reporter = self._reporting = self._reporter(has_async)
            try:
                self.starting()
                if reporter is not None:
                    reporter.start()
                if beating:
                    self._heartbeat.start()
                if scheduler is not None:
                    scheduler.start()
                self._loop()
                self._shutdown()
            finally:
                if scheduler is not None:
                    scheduler.stop()
                if runner.watch is not None:
                    runner.watch.stop()
                self._heartbeat.stop()
                self._executor.shutdown(wait=not self._cold)
                self._aio.shutdown(wait=not self._cold, timeout=SHUTDOWN_FLUSH_DEADLINE)
                if reporter is not None:
                    reporter.stop()
        self.stopping()
        return 0

    def _reporter(self, has_async: bool) -> Reporter | None:
        """What writes this worker's record in the list of workers, if it has one."""
        store = store_for(self.app) if self.beat is not None else None
        if store is None or self.beat is None:
            return None
        try:
            version = importlib.metadata.version("gatorapp")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        outbox = self._outbox
        return Reporter(
            store,
            self.worker_id,
            queues=self.queues,
            concurrency=self.concurrency,
            async_concurrency=self.async_concurrency if has_async else 0,
            version=version,
            running=self._running,
            counts=lambda: (outbox.completed, outbox.completed - outbox.succeeded),
            settled=outbox.settled.copy,
            beat=self.beat,
        )

    # -- the loop ----------------------------------------------------------------
    def _budget(self) -> int | None:
        """Attempts still allowed by ``max_tasks`` beyond those started or buffered."""
        if self.max_tasks is None:
            return None
        ex = self._executor
        return self.max_tasks - ex.started - ex.buffered()

    def _deliver_results(self) -> None:
        outbox = self._outbox
        if not outbox.results:
            return
        with outbox.lock:
            results, outbox.results = outbox.results, []
        for value in results:
            try:
                self.result(value)
            except Exception:
                log.exception("%s.result() failed", type(self).__name__)

    def _observe(self, ran: int, busy: float) -> None:
        """Tell the fetcher how long tasks take: sync ones by the thread time
        they took, async ones by their time over the loop's concurrency (many
        wait together)."""
        runner = self._executor.run
        if runner.handed:
            ran, runner.handed = ran - runner.handed, 0
            n, seconds = self._aio.observed()
            if n:
                self._fetch.observe(n, seconds / self._aio.concurrency)
        self._fetch.observe(ran, busy)

    def _left(self) -> int | None:
        """Attempts ``max_tasks`` still allows."""
        return None if self.max_tasks is None else self.max_tasks - self._executor.started

    def _loop(self) -> None:
        ex, outbox, fetch, held = self._executor, self._outbox, self._fetch, self._held
        overlap = isinstance(ex, InlineExecutor)
        outage = self._outage
        stop = self._stop
        idle = False
        while True:
            if self._cold:
                self._cold_stop()
            if stop.is_set():
                return
            # 1. Run what is buffered (here, down to the low-water mark; or let
            #    the threads report).
            if ex.pending():
                ran, busy = ex.work(outbox, self._left(), fetch.low if overlap else 0)
                self._observe(ran, busy)
                if outbox.keep_results:
                    self._deliver_results()
                if stop.is_set():
                    return
            if self.max_tasks is not None and ex.started >= self.max_tasks:
                if not ex.running():
                    # (The shutdown hands back anything still buffered and
                    # sends the outbox.)
                    return
                ex.wait(OUTBOX_MAX_AGE)
                continue
            # 2. Settle and refill, in one call. Running tasks in this thread,
            #    run what is left while the call travels.
            want = fetch.want(ex.pending(), self._budget())
            if want or outbox.due() or (len(outbox) and not ex.pending()):
                try:
                    finish = fetch.begin(outbox, held, want)
                    if overlap and ex.pending():
                        ran, busy = ex.work(outbox, self._left())
                        self._observe(ran, busy)
                    got = finish()
                    if outbox.keep_results:
                        self._deliver_results()
                except Exception as exc:
                    what = "reserve" if want and not len(outbox) else "acknowledge"
                    outage.failed(what, exc, fatal=self.burst and not ex.running())
                    stop.wait(outage.backoff())
                    continue
                outage.ok()
                if got:
                    idle = False
                    ex.submit(got)
                    continue
            elif overlap and ex.pending():
                # Nothing to send or fetch (max_tasks reached): run the rest.
                ran, busy = ex.work(outbox, self._left())
                self._observe(ran, busy)
                continue
            # 3. Nothing new to run: wait for a task, or for the threads.
            if not ex.pending():
                if len(outbox):
                    continue
                if self.burst:
                    if want:
                        return  # (the queues were looked at just now: nothing ready)
                    # The last tasks finished after ``want`` was worked out
                    # (threads, or the event loop): look once more before stopping.
                    continue
                if not idle:
                    idle = True
                    log.debug("%s idle: waiting for tasks on %s", self.ident(), self.to_consume)
                self._wait(0.5)
            elif want:
                self._wait(0.05)  # free threads and nothing ready: a task may come
            else:
                ex.wait(OUTBOX_MAX_AGE if len(outbox) else 0.05)

    def _wait(self, timeout: float) -> None:
        """Block in the backend until a task may be ready."""
        try:
            self.app.backend.wait(self.queues, timeout)
        except Exception as exc:
            self._outage.failed("wait", exc, fatal=False)
            self._stop.wait(self._outage.backoff())

    # -- stopping ------------------------------------------------------------------
    def _shutdown(self) -> None:
        backend = self.app.backend
        ex, outbox, fetch, held = self._executor, self._outbox, self._fetch, self._held
        try:
            backend.stop_waiting()  # what an idle poll received goes back now
        except Exception as exc:
            log.warning("could not hand back tasks received while idle (%s)", exc)
        unstarted = ex.unstarted() + self._aio.unstarted()
        if unstarted:
            try:
                backend.release(unstarted)
            except Exception as exc:
                log.warning(
                    "could not hand back %d prefetched task(s) (%s); their leases will expire",
                    len(unstarted),
                    exc,
                )
            held.forget(unstarted)
        deadline = None
        while ex.running() or len(outbox):
            if self._cold:
                self._cold_stop()
            if ex.running():
                ex.wait(0.1)
            if outbox.keep_results:
                self._deliver_results()
            if not len(outbox):
                continue
            try:
                fetch.exchange(outbox, held, 0)
                self._outage.ok()
            except Exception as exc:
                self._outage.failed("acknowledge", exc, fatal=False)
                if deadline is None:
                    deadline = time.monotonic() + SHUTDOWN_FLUSH_DEADLINE
                if time.monotonic() > deadline and not ex.running():
                    log.error(
                        "backend unreachable at shutdown; unacknowledged tasks will run "
                        "again when their leases expire"
                    )
                    return
                time.sleep(0.2)
        if outbox.keep_results:
            self._deliver_results()  # (those of the last tasks run)

    def _overdue(self, r: Reservation, s: Settlement) -> None:
        """A sync task ran past its timeout (the watchdog's thread): record its
        failed attempt, settle what has finished, hand back the rest, and end
        the process for the supervisor to replace."""
        self._outbox.add(r, s)
        with self._cold_once:  # (a signal's cold stop may be under way: let it end)
            sender = threading.Thread(
                target=self._hand_back_and_leave,
                name="gatorapp-hand-back",
                daemon=True,
            )
            sender.start()
            sender.join(COLD_STOP_DEADLINE)
            self._last_counts()
            logging.shutdown()
            os._exit(TIMEOUT_EXIT)

    def _hand_back_and_leave(self) -> int:
        """Hand back what is held, then leave the list of workers (a process
        that ends at once is gone from it now, not three beats later)."""
        count = hand_back(self._fetch, self._outbox, self._held)
        if self._reporting is not None:
            self._reporting.stop(timeout=1.0)
        return count

    def _cold_stop(self) -> None:
        """Settle what has finished, hand back everything else, exit at once.

        Called by the signal's thread and by the loop: the first does it, the
        other waits for the exit. The hand-back gets COLD_STOP_DEADLINE
        seconds; what it cannot send comes back when its lease expires.
        """
        if not self._cold_once.acquire(blocking=False):
            threading.Event().wait()  # the other caller ends the process
        signum = self._cold
        counted: list[int] = []
        sender = threading.Thread(
            target=lambda: counted.append(self._hand_back_and_leave()),
            name="gatorapp-hand-back",
            daemon=True,
        )
        sender.start()
        sender.join(COLD_STOP_DEADLINE)
        log.warning(
            "%s stopping now (second signal): %s task(s) handed back, %d done",
            self.ident(),
            counted[0] if counted else "no",
            self.tasks_complete,
        )
        self._last_counts()
        logging.shutdown()
        os._exit(128 + signum)

    def _last_counts(self) -> None:
        """Write the metrics counts out before ``os._exit``, which would skip
        it: the failed attempt that ends the process is the one to count."""
        if self.tally is not None and self.tally.last_write is not None:
            try:
                self.tally.last_write()
            except Exception:  # (the process must end all the same)
                log.exception("could not write the metrics counts")
