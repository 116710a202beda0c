"""The worker: reserve tasks, run them on a thread pool, acknowledge outcomes.

One main thread talks to the backend (reserve, ack, retry, bury, release);
``concurrency`` pool threads run task code; a heartbeat thread renews the
leases of every task the worker holds, running or prefetched, on its own
clock, so a worker busy with long tasks never looks dead (it does not depend
on fetching). Backends that are not thread-safe (Alligator-style clients) get
no heartbeat thread and are only ever called from the main thread.

Shutdown: the first SIGINT/SIGTERM stops fetching, hands back prefetched
tasks, lets running tasks finish and acknowledges them, logs a final line and
returns 0. A second signal hands back the running tasks too and exits at
once with status 128 + signal number.
"""

from __future__ import annotations

import logging
import os
import queue as queue_mod
import reprlib
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import tenacity

from .backends import Reservation
from .errors import BackendError, ConfigurationError
from .execution import Outcome, backoff_seconds, format_error
from .task import Task

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("gatorapp.worker")

_Done = tuple[Reservation, Task, Outcome]

#: Seconds a stopping worker keeps trying to send its last acknowledgements to
#: an unreachable backend before it exits (the leases then expire instead).
SHUTDOWN_FLUSH_DEADLINE = 30.0

RECONNECT_BACKOFF = tenacity.wait_exponential(multiplier=0.1, max=5) + tenacity.wait_random(0, 0.1)


class Worker:
    """Consume ``queues`` (earlier ones first) until stopped.

    :param queues: queue names, or a comma-separated string; default: every
        queue the app knows (its default queue, then each task's queue).
    :param max_tasks: return after this many attempts (failed ones count).
    :param concurrency: tasks run at once, on threads.
    :param burst: return once the queues have nothing ready.
    :param prefetch: tasks reserved ahead of free threads (default: concurrency).
    """

    def __init__(
        self,
        app: App,
        queues: Sequence[str] | str | None = None,
        max_tasks: int | None = None,
        *,
        concurrency: int = 1,
        burst: bool = False,
        prefetch: int | None = None,
    ) -> None:
        if isinstance(queues, str):
            queues = [q.strip() for q in queues.split(",") if q.strip()]
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if max_tasks is not None and max_tasks < 1:
            raise ValueError("max_tasks must be >= 1")
        self.app = app
        # Named queues are checked by the backend's rules now, not on first fetch.
        self.queues: list[str] = [app._queue_name(q) for q in (queues or app.queues())]
        self.max_tasks = max_tasks
        self.concurrency = concurrency
        self.burst = burst
        self.prefetch = concurrency if prefetch is None else max(0, prefetch)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.tasks_complete = 0  # attempts finished, failed ones included
        self._started = 0
        self._stop = threading.Event()
        self._cold_signal = 0
        self._lock = threading.Lock()
        self._held: dict[int, Reservation] = {}  # id(r) -> r, for the heartbeat
        self._buffer: deque[Reservation] = deque()
        self._running = 0
        self._done: queue_mod.SimpleQueue[_Done] = queue_mod.SimpleQueue()
        self._acks: list[Reservation] = []
        self._retries: list[tuple[Reservation, bytes, float]] = []
        self._buries: list[tuple[Reservation, str, str]] = []
        self._backend_down = False
        self._down_since = 0.0
        self._attempts = 0  # consecutive backend failures, for the backoff
        self._hb_stop = threading.Event()
        self._hb_wake = threading.Event()  # set when a held lease got shorter

    # -- overridable hooks (Alligator's Worker API) ----------------------------
    @property
    def to_consume(self) -> str:
        return ",".join(self.queues)

    def ident(self) -> str:
        return f"gatorapp-worker[{self.worker_id}]"

    def starting(self) -> None:
        log.info(
            "%s starting: queues %s, concurrency %d%s",
            self.ident(),
            self.to_consume,
            self.concurrency,
            f", max {self.max_tasks} tasks" if self.max_tasks else "",
        )

    def stopping(self) -> None:
        log.info("%s stopped: %d tasks done", self.ident(), self.tasks_complete)

    def result(self, result: Any) -> None:
        """Called with each successful task's return value."""

    # -- control -------------------------------------------------------------
    def stop(self) -> None:
        """Ask the worker to stop gracefully (thread-safe)."""
        self._stop.set()

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop.is_set():
            self._cold_signal = signum
            return
        log.warning(
            "%s got %s: finishing %d running task(s); send it again to stop now",
            self.ident(),
            signal.Signals(signum).name,
            self._running,
        )
        self._stop.set()

    def run_forever(self) -> int:
        """Run until stopped, ``max_tasks`` attempts are done, or (burst) idle. Returns 0."""
        restore: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                restore[sig] = signal.signal(sig, self._on_signal)
        heartbeat: threading.Thread | None = None
        pool: ThreadPoolExecutor | None = None
        try:
            backend = self.app.backend
            if not backend.supports_leases:
                # pop() removes a task for good: hold none ahead of a free thread,
                # so a killed worker loses at most the tasks it was running.
                self.prefetch = 0
            pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="gatorapp-task")
            self.starting()
            if backend.supports_leases and backend.thread_safe:
                heartbeat = threading.Thread(
                    target=self._heartbeat, name="gatorapp-heartbeat", daemon=True
                )
                heartbeat.start()
            self._loop(pool)
            self._shutdown()
        finally:
            self._hb_stop.set()
            self._hb_wake.set()
            if pool is not None:
                pool.shutdown(wait=not self._cold_signal)
            if heartbeat is not None:
                heartbeat.join(timeout=30)  # it may be mid-call on the backend
            for sig, handler in restore.items():
                signal.signal(sig, handler)
        self.stopping()
        return 0

    # -- main loop -------------------------------------------------------------
    def _budget(self) -> int | None:
        if self.max_tasks is None:
            return None
        return self.max_tasks - self._started - len(self._buffer)

    def _loop(self, pool: ThreadPoolExecutor) -> None:
        backend = self.app.backend
        lease = self.app.lease
        while True:
            self._check_cold()
            self._collect(block=False)
            if not self._flush() and not self._stop.is_set():
                self._pause()
                continue
            if self._stop.is_set():
                return  # _shutdown flushes what is left, with a deadline
            if self.max_tasks is not None and self._started >= self.max_tasks:
                if self._running == 0:
                    return
                self._collect(block=True)
                continue
            self._start_buffered(pool)
            room = self.concurrency + self.prefetch - self._running - len(self._buffer)
            budget = self._budget()
            if budget is not None:
                room = min(room, budget)
            got: list[Reservation] = []
            if room > 0:
                try:
                    got = backend.reserve(self.queues, room, lease, self.worker_id)
                except Exception as exc:
                    self._backend_error("reserve", exc)
                    self._pause()
                    continue
                self._backend_ok()
                if got:
                    with self._lock:
                        for r in got:
                            self._held[id(r)] = r
                    self._buffer.extend(got)
                    self._start_buffered(pool)
                    continue
            if self._running:
                self._collect(
                    block=True, timeout=min(backend.poll_interval, 0.05) if room > 0 else 0.5
                )
            elif not self._buffer:
                if self.burst:
                    return
                try:
                    backend.wait(self.queues, 0.5)
                except Exception as exc:
                    self._backend_error("wait", exc)
                    self._pause()

    def _start_buffered(self, pool: ThreadPoolExecutor) -> None:
        app = self.app
        while self._buffer and self._running < self.concurrency and not self._stop.is_set():
            if self.max_tasks is not None and self._started >= self.max_tasks:
                return
            r = self._buffer.popleft()
            if r.extra.get("lost"):
                # The heartbeat saw another worker take it over while it waited
                # here: running it too would only make a duplicate.
                self._forget([r])
                log.info("skipping task %s on %s: its lease was taken over", r.task_id, r.queue)
                continue
            if r.deliveries > app.max_deliveries:
                self._buries.append(
                    (
                        r,
                        "worker_lost",
                        f"delivered {r.deliveries} times without "
                        "an outcome: its workers died or lost their leases",
                    )
                )
                continue
            try:
                task, tdef = app.decode(r.data)
            except Exception as exc:
                reason = getattr(exc, "reason", "decode_error")
                self._buries.append((r, reason, getattr(exc, "error", str(exc))))
                log.error("task %s on %s to dead letters (%s): %s", r.task_id, r.queue, reason, exc)
                continue
            if not r.task_id:
                r.task_id = task.task_id
            shorter = tdef.lease is not None and tdef.lease < r.lease
            r.lease = tdef.lease or app.lease
            if shorter:
                # Renew at once with the task's shorter lease, so a crash now
                # frees it after that lease, not the app's longer one.
                self._hb_wake.set()
            self._running += 1
            self._started += 1
            pool.submit(self._execute, r, task, tdef)

    def _execute(self, r: Reservation, task: Task, tdef: Any) -> None:
        try:
            outcome = self.app.run(task, tdef)
        except BaseException as exc:  # SystemExit from task code: record, don't die
            outcome = Outcome("dead", reason="crashed", error=format_error(exc), exc=exc)
        self._done.put((r, task, outcome))

    def _collect(self, block: bool, timeout: float = 0.5) -> None:
        """Turn finished attempts into pending backend calls."""
        while True:
            try:
                r, task, outcome = self._done.get(block=block, timeout=timeout if block else None)
            except queue_mod.Empty:
                return
            block = False
            r.extra["outcome"] = outcome.kind  # its ack may race a heartbeat: no false alarm
            self._running -= 1
            self.tasks_complete += 1
            if outcome.kind == "success":
                self._acks.append(r)
                if log.isEnabledFor(logging.INFO):
                    log.info(
                        "task %s %s succeeded: %s",
                        task.name,
                        task.task_id,
                        reprlib.repr(outcome.result),
                    )
                try:
                    self.result(outcome.result)
                except Exception:
                    log.exception("%s.result() failed", type(self).__name__)
            elif outcome.kind == "retry":
                log.info(
                    "task %s %s failed (attempt %d); retrying in %.1f s: %s",
                    task.name,
                    task.task_id,
                    task.attempt,
                    outcome.delay,
                    outcome.exc,
                )
                try:
                    data = task.serialize()
                except Exception as exc:
                    self._buries.append((r, "encode_error", format_error(exc)))
                    continue
                self._retries.append((r, data, time.time() + outcome.delay))
            else:
                log.error(
                    "task %s %s to dead letters (%s) after %d attempt(s): %s",
                    task.name,
                    task.task_id,
                    outcome.reason,
                    task.attempt,
                    outcome.exc,
                )
                self._buries.append((r, outcome.reason, outcome.error))

    def _flush(self) -> bool:
        """Send pending acks, retries and dead letters. False if the backend failed
        (they stay pending and are sent again)."""
        backend = self.app.backend
        if not (self._acks or self._retries or self._buries):
            return True  # no call made: says nothing about the backend
        try:
            if self._acks:
                self._report("ack", self._acks, backend.ack(self._acks))
                self._forget(self._acks)
                self._acks = []
            if self._retries:
                self._report("retry", [i[0] for i in self._retries], backend.retry(self._retries))
                self._forget([i[0] for i in self._retries])
                self._retries = []
            if self._buries:
                self._report("bury", [i[0] for i in self._buries], backend.bury(self._buries))
                self._forget([i[0] for i in self._buries])
                self._buries = []
        except Exception as exc:
            # A call whose reply was lost may have been carried out: what is sent
            # again and refused may be our own earlier success (see _report).
            for r in [*self._acks, *(i[0] for i in self._retries), *(i[0] for i in self._buries)]:
                r.extra["resent"] = True
            self._backend_error("acknowledge", exc)
            return False
        self._backend_ok()
        return True

    def _report(self, what: str, rs: Sequence[Reservation], oks: Sequence[bool]) -> None:
        for r, ok in zip(rs, oks):
            if ok:
                continue
            if r.extra.get("resent"):
                log.info(
                    "%s of task %s on %s not confirmed: it was done before the backend "
                    "connection broke, or the lease was taken over meanwhile",
                    what,
                    r.task_id,
                    r.queue,
                )
            else:
                log.warning(
                    "%s of task %s on %s refused: its lease was taken over by another worker",
                    what,
                    r.task_id,
                    r.queue,
                )

    def _forget(self, rs: Sequence[Reservation]) -> None:
        with self._lock:
            for r in rs:
                self._held.pop(id(r), None)

    # -- failures and shutdown -----------------------------------------------
    def _backend_error(self, what: str, exc: Exception) -> None:
        if isinstance(exc, ConfigurationError):
            raise exc  # a bad URL or path does not heal by waiting
        if self.burst and not self._running:
            # A burst run is a script's step: fail it rather than wait for a backend.
            log.error("%s: backend %s failed: %s", self.ident(), what, exc)
            raise exc
        if not self._backend_down:
            log.error("%s: backend %s failed, retrying with backoff: %s", self.ident(), what, exc)
            self._backend_down = True
            self._down_since = time.monotonic()
            self._attempts = 0

    def _backend_ok(self) -> None:
        if self._backend_down:
            log.warning(
                "%s: backend reachable again after %.1f s",
                self.ident(),
                time.monotonic() - self._down_since,
            )
            self._backend_down = False

    def _pause(self) -> None:
        # Reconnect backoff from tenacity (exponential with jitter, capped at
        # 5 s), cut short by a stop request.
        self._attempts += 1
        self._collect(block=False)
        self._stop.wait(backoff_seconds(RECONNECT_BACKOFF, self._attempts, BackendError()))

    def _check_cold(self) -> None:
        if not self._cold_signal:
            return
        # Outcomes first: a task that already finished must not be handed back
        # to run again. Then hand back only what has no outcome.
        self._collect(block=False)
        try:
            self._flush()
        except Exception:
            pass
        pending = {id(r) for r in self._acks}
        pending |= {id(item[0]) for item in self._retries}
        pending |= {id(item[0]) for item in self._buries}
        with self._lock:
            held = [r for key, r in self._held.items() if key not in pending]
        try:
            self.app.backend.release(held)
            self.app.backend.stop_waiting()
        except Exception:
            pass  # their leases expire instead
        log.warning(
            "%s stopping now (second signal): %d task(s) handed back, %d done",
            self.ident(),
            len(held),
            self.tasks_complete,
        )
        logging.shutdown()
        os._exit(128 + self._cold_signal)

    def _shutdown(self) -> None:
        backend = self.app.backend
        try:
            backend.stop_waiting()  # what an idle poll received goes back now
        except Exception as exc:
            log.warning("could not hand back tasks received while idle (%s)", exc)
        if self._buffer:
            unstarted = list(self._buffer)
            self._buffer.clear()
            try:
                backend.release(unstarted)
            except Exception as exc:
                log.warning(
                    "could not hand back %d prefetched task(s) (%s); their leases will expire",
                    len(unstarted),
                    exc,
                )
            self._forget(unstarted)
        deadline = None
        while self._running or self._acks or self._retries or self._buries:
            self._check_cold()
            self._collect(block=bool(self._running), timeout=0.1)
            if not self._flush():
                if deadline is None:
                    deadline = time.monotonic() + SHUTDOWN_FLUSH_DEADLINE
                if time.monotonic() > deadline and not self._running:
                    log.error(
                        "backend unreachable at shutdown; unacknowledged tasks will run "
                        "again when their leases expire"
                    )
                    return
                time.sleep(0.2)

    def _heartbeat(self) -> None:
        backend = self.app.backend
        failing = False
        while True:
            with self._lock:
                held = list(self._held.values())
            shortest = min((r.lease for r in held), default=self.app.lease)
            self._hb_wake.wait(max(0.05, min(10.0, shortest / 3)))
            self._hb_wake.clear()
            if self._hb_stop.is_set():
                return
            with self._lock:
                held = list(self._held.values())
            if not held:
                continue
            try:
                oks = backend.extend(held)
            except Exception as exc:
                if not failing:  # once per outage, not once per beat
                    log.warning("heartbeat could not renew %d lease(s): %s", len(held), exc)
                failing = True
                continue
            failing = False
            with self._lock:
                # A task acknowledged since the snapshot above is refused too;
                # only one still held has really lost its lease.
                lost = [
                    r
                    for r, ok in zip(held, oks)
                    if not ok and id(r) in self._held and "outcome" not in r.extra
                ]
            for r in lost:
                if not r.extra.get("lost"):
                    r.extra["lost"] = True
                    log.warning("lease of task %s on %s lost to another worker", r.task_id, r.queue)
