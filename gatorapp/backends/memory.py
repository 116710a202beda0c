"""``memory://``: an in-process, thread-safe backend.

It keeps the full delivery contract (leases, tokens, delays, dead letters)
so tests written against it hold on the other backends, but everything is
lost when the process exits. Each ``App("memory://")`` has its own store.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import GatorError
from .base import Backend, check_queue_name, running_error
from .protocols import DeadLetterAdmin, QueueAdmin, TakeById
from .records import DeadLetter, Located, Message, QueueStats, Reservation, ResultItem


@dataclass(slots=True)
class _Entry:
    data: bytes
    run_at: float
    seq: int
    token: str | None = None
    lease_until: float = 0.0
    deliveries: int = 0


def _available(entry: _Entry, now: float) -> bool:
    return entry.token is None or entry.lease_until <= now


def _newest(letters: list[DeadLetter], task_id: str) -> int | None:
    """Where the newest dead letter of ``task_id`` is."""
    for i in range(len(letters) - 1, -1, -1):
        if letters[i].task_id == task_id:
            return i
    return None


class _Queue:
    __slots__ = ("dead", "entries", "heap", "leased")

    def __init__(self) -> None:
        self.entries: dict[str, _Entry] = {}
        # (run_at, seq, task_id); stale items are skipped when popped
        self.heap: list[tuple[float, int, str]] = []
        self.leased: set[str] = set()
        self.dead: list[DeadLetter] = []  # oldest first; an id may have several


class MemoryBackend(Backend, QueueAdmin, TakeById, DeadLetterAdmin):
    poll_interval = 1.0  # wait() is woken by a condition variable, so polling is rare
    supports_results = True
    supports_workers = True
    ticks_once = True

    def __init__(self, url: str = "memory://", **kwargs: object) -> None:
        super().__init__(url, **kwargs)  # type: ignore[arg-type]
        self._queues: dict[str, _Queue] = {}
        self._cond = threading.Condition()
        self._seq = itertools.count()
        # Lease tokens only need to be unique within this store: a counter is
        # enough, and far cheaper than a uuid per task.
        self._tokens = itertools.count(1)
        self._token_prefix = uuid.uuid4().hex[:8] + "-"
        #: task id -> (result record, expires at); expired ones swept on put
        self._results: dict[str, tuple[bytes, float]] = {}
        self._results_swept = 0.0
        self._workers: dict[str, tuple[bytes, float]] = {}
        self._ticks: dict[str, float] = {}  # schedule -> last tick enqueued

    def _q(self, name: str) -> _Queue:
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = _Queue()
        return q

    def _expire(self, q: _Queue, now: float) -> None:
        # An expired lease goes back on the heap but keeps its token until another
        # worker reserves it, so the holder can still ack or extend until then.
        for task_id in [t for t in q.leased if q.entries[t].lease_until <= now]:
            entry = q.entries[task_id]
            q.leased.discard(task_id)
            heapq.heappush(q.heap, (entry.run_at, entry.seq, task_id))

    def _push(self, q: _Queue, task_id: str, data: bytes, run_at: float) -> None:
        entry = _Entry(data, run_at, next(self._seq))
        q.entries[task_id] = entry
        heapq.heappush(q.heap, (run_at, entry.seq, task_id))

    # -- primitives ----------------------------------------------------------
    def _enqueue(self, messages: Sequence[Message]) -> None:
        now = time.time()
        with self._cond:
            for m in messages:  # first: is any of them running, as another task?
                q = self._queues.get(m.queue)
                entry = q.entries.get(m.task_id) if q is not None else None
                if entry is not None and not _available(entry, now) and entry.data != m.data:
                    raise running_error(m.queue, m.task_id)
            for m in messages:
                q = self._q(m.queue)
                if m.task_id not in q.entries:
                    self._push(q, m.task_id, m.data, m.run_at or now)
            self._cond.notify_all()

    def _reserve(self, queue: str, limit: int, lease: float, worker_id: str) -> list[Reservation]:
        now = time.time()
        out: list[Reservation] = []
        with self._cond:
            q = self._queues.get(queue)
            if q is None:
                return out
            self._expire(q, now)
            heap, entries, leased = q.heap, q.entries, q.leased
            # One token for the whole batch: a lease is still told apart by
            # (task id, token), and a token is never reused.
            token = f"{self._token_prefix}{next(self._tokens)}"
            until = now + lease
            while heap and len(out) < limit:
                run_at, seq, task_id = heap[0]
                entry = entries.get(task_id)
                if (
                    entry is None
                    or entry.seq != seq
                    or entry.run_at != run_at
                    or (entry.token is not None and entry.lease_until > now)
                ):
                    heapq.heappop(heap)  # stale
                    continue
                if run_at > now:
                    break
                heapq.heappop(heap)
                entry.token = token
                entry.lease_until = until
                entry.deliveries += 1
                leased.add(task_id)
                out.append(Reservation(queue, task_id, entry.data, token, entry.deliveries, lease))
        return out

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        deadline = time.time() + timeout
        with self._cond:
            while True:
                now = time.time()
                next_due = deadline
                for name in queues:
                    q = self._queues.get(name)
                    if q is None:
                        continue
                    self._expire(q, now)
                    for run_at, seq, task_id in q.heap:
                        entry = q.entries.get(task_id)
                        if (
                            entry is not None
                            and (entry.seq, entry.run_at) == (seq, run_at)
                            and _available(entry, now)
                        ):
                            if run_at <= now:
                                return
                            next_due = min(next_due, run_at)
                    for task_id in q.leased:
                        next_due = min(next_due, q.entries[task_id].lease_until)
                if now >= deadline:
                    return
                self._cond.wait(max(0.001, next_due - now))

    def _held(self, q: _Queue | None, r: Reservation) -> _Entry | None:
        if q is None:
            return None
        entry = q.entries.get(r.task_id)
        if entry is None or entry.token != r.token:
            return None  # acknowledged already, or another worker took it over
        return entry

    def _ack(self, reservations: Sequence[Reservation]) -> list[bool]:
        out = []
        with self._cond:
            for r in reservations:
                q = self._queues.get(r.queue)
                ok = self._held(q, r) is not None
                if ok and q is not None:
                    del q.entries[r.task_id]
                    q.leased.discard(r.task_id)
                out.append(ok)
            self._cond.notify_all()
        return out

    def _requeue(self, r: Reservation, data: bytes, run_at: float, deliveries: int) -> bool:
        q = self._queues.get(r.queue)
        entry = self._held(q, r)
        if entry is None or q is None:
            return False
        q.leased.discard(r.task_id)
        entry.token = None
        entry.data = data
        entry.run_at = run_at
        entry.deliveries = deliveries
        heapq.heappush(q.heap, (entry.run_at, entry.seq, r.task_id))
        return True

    def _retry(self, items: Sequence[tuple[Reservation, bytes, float]]) -> list[bool]:
        with self._cond:
            out = [self._requeue(r, data, run_at, 0) for r, data, run_at in items]
            self._cond.notify_all()
        return out

    def _release(self, reservations: Sequence[Reservation]) -> list[bool]:
        with self._cond:
            out = []
            for r in reservations:
                q = self._queues.get(r.queue)
                entry = self._held(q, r)
                out.append(
                    entry is not None
                    and self._requeue(r, entry.data, entry.run_at, max(0, entry.deliveries - 1))
                )
            self._cond.notify_all()
        return out

    def _extend(self, reservations: Sequence[Reservation]) -> list[bool]:
        now = time.time()
        out = []
        with self._cond:
            for r in reservations:
                entry = self._held(self._queues.get(r.queue), r)
                if entry is not None:
                    entry.lease_until = now + r.lease
                    self._queues[r.queue].leased.add(r.task_id)
                out.append(entry is not None)
        return out

    def _bury(self, items: Sequence[tuple[Reservation, str, str]]) -> list[bool]:
        out = []
        now = time.time()
        with self._cond:
            for r, reason, error in items:
                q = self._queues.get(r.queue)
                entry = self._held(q, r)
                if entry is not None and q is not None:
                    del q.entries[r.task_id]
                    q.leased.discard(r.task_id)
                    q.dead.append(DeadLetter(r.queue, r.task_id, entry.data, reason, error, now))
                out.append(entry is not None)
            self._cond.notify_all()
        return out

    # -- results ---------------------------------------------------------------
    def put_results(self, items: Sequence[ResultItem]) -> None:
        now = time.time()
        with self._cond:
            results = self._results
            for task_id, record, ttl in items:
                results[task_id] = (record, now + ttl)
            if now - self._results_swept > 60:
                self._results_swept = now
                for task_id in [t for t, (_, until) in results.items() if until <= now]:
                    del results[task_id]
            self._cond.notify_all()

    def get_result(self, task_id: str) -> bytes | None:
        with self._cond:
            found = self._results.get(task_id)
        return found[0] if found is not None and found[1] > time.time() else None

    # -- workers ---------------------------------------------------------------
    def put_worker(self, worker_id: str, record: bytes, ttl: float) -> None:
        with self._cond:
            self._workers[worker_id] = (record, time.time() + ttl)

    def remove_worker(self, worker_id: str) -> None:
        with self._cond:
            self._workers.pop(worker_id, None)

    def list_workers(self) -> list[bytes]:
        now = time.time()
        with self._cond:
            for gone in [w for w, (_, until) in self._workers.items() if until <= now]:
                del self._workers[gone]
            return [record for record, _ in self._workers.values()]

    async def aenqueue(self, messages: Sequence[Message]) -> None:
        self.enqueue(messages)  # (in memory, under a lock held briefly: no I/O to wait for)

    def wait_result(self, task_id: str, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                record = self.get_result(task_id)
                left = deadline - time.monotonic()
                if record is not None or left <= 0:
                    return record
                self._cond.wait(left)

    def forget_result(self, task_id: str) -> None:
        with self._cond:
            self._results.pop(task_id, None)

    def enqueue_tick(
        self, message: Message, schedule: str, tick: float
    ) -> tuple[bool, float | None]:
        with self._cond:
            last = self._ticks.get(schedule)
            if last is not None and last >= tick:
                return False, last
            # (Enqueued first: a refused message leaves the tick unrecorded.
            # Re-entrant: the condition's lock is an RLock.)
            self.enqueue([message])
            self._ticks[schedule] = tick
            return True, last

    def last_tick(self, schedule: str, queue: str) -> float | None:
        with self._cond:
            return self._ticks.get(schedule)

    def locate(self, queue: str, task_id: str) -> Located | None:
        with self._cond:
            q = self._queues.get(queue)
            entry = q.entries.get(task_id) if q is not None else None
            if entry is None:
                return None
            now = time.time()
            if not _available(entry, now):
                return "running", entry.data
            return ("ready" if entry.run_at <= now else "delayed"), entry.data

    def take(self, queue: str, task_id: str) -> bytes | None:
        queue = check_queue_name(queue)
        with self._cond:
            q = self._queues.get(queue)
            if q is None:
                return None
            self._expire(q, time.time())
            entry = q.entries.get(task_id)
            if entry is None or not _available(entry, time.time()):
                return None
            del q.entries[task_id]
            q.leased.discard(task_id)
            self._cond.notify_all()
            return entry.data

    # -- dead letters ----------------------------------------------------------
    def _dead_add(self, queue: str, task_id: str, data: bytes, reason: str, error: str) -> None:
        with self._cond:
            self._q(queue).dead.append(DeadLetter(queue, task_id, data, reason, error, time.time()))

    def dead_list(self, queue: str, limit: int = 1000) -> list[DeadLetter]:
        with self._cond:
            q = self._queues.get(queue)
            return q.dead[:limit] if q else []

    def dead_get(self, queue: str, task_id: str) -> DeadLetter | None:
        with self._cond:
            q = self._queues.get(queue)
            i = _newest(q.dead, task_id) if q else None
            return None if q is None or i is None else q.dead[i]

    def dead_requeue(self, queue: str, task_id: str, data: bytes | None = None) -> bool:
        with self._cond:
            q = self._queues.get(queue)
            i = _newest(q.dead, task_id) if q else None
            if q is None or i is None or task_id in q.entries:
                return False
            dead = q.dead.pop(i)
            self._push(q, task_id, data if data is not None else dead.data, time.time())
            self._cond.notify_all()
            return True

    def dead_purge(self, queue: str, task_id: str | None = None) -> int:
        with self._cond:
            q = self._queues.get(queue)
            if q is None:
                return 0
            if task_id is not None:
                kept = [d for d in q.dead if d.task_id != task_id]
                n = len(q.dead) - len(kept)
                q.dead[:] = kept
                return n
            n = len(q.dead)
            q.dead.clear()
            return n

    # -- introspection -------------------------------------------------------
    def stats(self, queue: str) -> QueueStats:
        now = time.time()
        with self._cond:
            q = self._queues.get(queue)
            if q is None:
                return QueueStats()
            self._expire(q, now)
            running = len(q.leased)
            waiting = [e for e in q.entries.values() if _available(e, now)]
            due = [e.run_at for e in waiting if e.run_at <= now]
            return QueueStats(
                len(due), len(waiting) - len(due), running, len(q.dead), min(due, default=None)
            )

    def known_queues(self) -> list[str]:
        with self._cond:
            return list(self._queues)

    def clear(self, queue_name: str) -> None:
        with self._cond:
            q = self._queues.get(queue_name)
            if q is not None:
                q.entries.clear()
                q.heap.clear()
                q.leased.clear()

    def join(self, queues: Sequence[str] | None = None, timeout: float | None = None) -> None:
        """Block until the queues have nothing ready or running (delayed tasks
        not yet due are not waited for). For tests that run a worker in a thread.
        """
        deadline = None if timeout is None else time.time() + timeout
        with self._cond:
            while True:
                busy = False
                for name in queues or list(self._queues):
                    s_q = self._queues.get(name)
                    if s_q is None:
                        continue
                    now = time.time()
                    self._expire(s_q, now)
                    if s_q.leased or any(
                        _available(e, now) and e.run_at <= now for e in s_q.entries.values()
                    ):
                        busy = True
                        break
                if not busy:
                    return
                if deadline is not None and time.time() >= deadline:
                    raise GatorError(f"join timed out after {timeout} s with tasks still pending")
                self._cond.wait(0.05)
