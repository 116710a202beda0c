"""A leasing backend written outside gatorapp: tasks in a dict, one lock.

It keeps the at-least-once contract (a reserved task stays stored, under a
lease, until it is acknowledged; a lease that runs out makes it ready
again) with the eight primitives of gatorapp.backends.Backend, and adds two
optional administration protocols. It lives in one process, which is enough
to show the contract; a real one would keep the same shape over its store.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from gatorapp.backends import (
    Backend,
    Burial,
    Capabilities,
    DeadLetter,
    Message,
    QueueStats,
    Reservation,
    RetryItem,
    running_error,
)
from gatorapp.backends.protocols import DeadLetterAdmin, QueueAdmin


@dataclass
class Row:
    data: bytes
    run_at: float  # due time, epoch seconds
    seq: int  # enqueue order, for ties
    token: str | None = None  # the live lease's, if any
    lease_until: float = 0.0
    deliveries: int = 0


class DictBackend(Backend, QueueAdmin, DeadLetterAdmin):
    # No TakeById: app.get()/app.cancel() say so instead of guessing.
    capabilities = Capabilities.lacking(
        take="this example keeps no way to remove a waiting task by id",
        locate="this example cannot look a task up by id",
    )

    def __init__(self, url: str = "dict://", **kwargs: int) -> None:
        super().__init__(url, **kwargs)
        self.lock = threading.Lock()
        self.queues: dict[str, dict[str, Row]] = {}
        self.dead: dict[str, list[DeadLetter]] = {}
        self.seq = itertools.count()
        self.tokens = itertools.count(1)

    def _rows(self, queue: str) -> dict[str, Row]:
        return self.queues.setdefault(queue, {})

    # -- delivery: the eight primitives -----------------------------------------------
    def _enqueue(self, messages: Sequence[Message]) -> None:
        now = time.time()
        with self.lock:
            for m in messages:  # first: is any of them running now, as another task?
                row = self._rows(m.queue).get(m.task_id)
                if row and row.token and row.lease_until > now and row.data != m.data:
                    raise running_error(m.queue, m.task_id)  # (nothing stored)
            for m in messages:
                # Idempotent: a second enqueue of a queued id changes nothing.
                self._rows(m.queue).setdefault(
                    m.task_id, Row(m.data, m.run_at or now, next(self.seq))
                )

    def _reserve(self, queue: str, limit: int, lease: float, worker_id: str) -> list[Reservation]:
        now = time.time()
        with self.lock:
            rows = self._rows(queue)
            ready = [
                (row.run_at, row.seq, task_id)
                for task_id, row in rows.items()
                if row.run_at <= now and (row.token is None or row.lease_until <= now)
            ]
            token = f"lease-{next(self.tokens)}"  # one per batch, never reused
            out = []
            for _, _, task_id in sorted(ready)[:limit]:
                row = rows[task_id]
                row.token, row.lease_until = token, now + lease
                row.deliveries += 1
                out.append(Reservation(queue, task_id, row.data, token, row.deliveries, lease))
            return out

    def _held(self, r: Reservation) -> Row | None:
        """The stored row, if ``r``'s lease on it is still the live one."""
        row = self._rows(r.queue).get(r.task_id)
        return row if row is not None and row.token == r.token else None

    def _ack(self, reservations: Sequence[Reservation]) -> list[bool]:
        with self.lock:
            out = []
            for r in reservations:
                held = self._held(r) is not None
                if held:
                    del self._rows(r.queue)[r.task_id]
                out.append(held)
            return out

    def _retry(self, items: Sequence[RetryItem]) -> list[bool]:
        with self.lock:
            out = []
            for r, data, run_at in items:
                row = self._held(r)
                if row is not None:
                    row.data, row.run_at, row.token, row.deliveries = data, run_at, None, 0
                out.append(row is not None)
            return out

    def _release(self, reservations: Sequence[Reservation]) -> list[bool]:
        with self.lock:
            out = []
            for r in reservations:
                row = self._held(r)
                if row is not None:
                    row.token = None
                    row.deliveries -= 1  # never started: not a delivery
                out.append(row is not None)
            return out

    def _extend(self, reservations: Sequence[Reservation]) -> list[bool]:
        now = time.time()
        with self.lock:
            out = []
            for r in reservations:
                row = self._held(r)
                if row is not None:
                    row.lease_until = now + r.lease
                out.append(row is not None)
            return out

    def _bury(self, items: Sequence[Burial]) -> list[bool]:
        with self.lock:
            out = []
            for r, reason, error in items:
                row = self._held(r)
                if row is not None:
                    del self._rows(r.queue)[r.task_id]
                    self._letter(r.queue, r.task_id, row.data, reason, error)
                out.append(row is not None)
            return out

    def _dead_add(self, queue: str, task_id: str, data: bytes, reason: str, error: str) -> None:
        with self.lock:
            self._letter(queue, task_id, data, reason, error)

    def _letter(self, queue: str, task_id: str, data: bytes, reason: str, error: str) -> None:
        letter = DeadLetter(queue, task_id, data, reason, error, time.time())
        self.dead.setdefault(queue, []).append(letter)

    # -- QueueAdmin: gatorapp status, metrics, app.backend.len() -------------------------
    def stats(self, queue: str) -> QueueStats:
        now = time.time()
        with self.lock:
            rows = list(self._rows(queue).values())
            running = sum(1 for r in rows if r.token is not None and r.lease_until > now)
            due = [
                r.run_at for r in rows if r.run_at <= now and not (r.token and r.lease_until > now)
            ]
            return QueueStats(
                ready=len(due),
                delayed=len(rows) - len(due) - running,
                running=running,
                dead=len(self.dead.get(queue, [])),
                oldest=min(due, default=None),
            )

    def known_queues(self) -> list[str]:
        with self.lock:
            return sorted(set(self.queues) | set(self.dead))

    def clear(self, queue: str) -> None:
        with self.lock:
            self.queues.pop(queue, None)

    # -- DeadLetterAdmin: gatorapp dead ---------------------------------------------------
    def dead_list(self, queue: str, limit: int = 1000) -> list[DeadLetter]:
        with self.lock:
            return self.dead.get(queue, [])[:limit]

    def dead_get(self, queue: str, task_id: str) -> DeadLetter | None:
        with self.lock:
            mine = [d for d in self.dead.get(queue, []) if d.task_id == task_id]
            return mine[-1] if mine else None

    def dead_requeue(self, queue: str, task_id: str, data: bytes | None = None) -> bool:
        with self.lock:
            letters = self.dead.get(queue, [])
            mine = [d for d in letters if d.task_id == task_id]
            if not mine or task_id in self._rows(queue):
                return False  # (queued again meanwhile: the letter stays)
            letters.remove(mine[-1])
            row = Row(mine[-1].data if data is None else data, time.time(), next(self.seq))
            self._rows(queue)[task_id] = row
            return True

    def dead_purge(self, queue: str, task_id: str | None = None) -> int:
        with self.lock:
            letters = self.dead.get(queue, [])
            keep = [d for d in letters if task_id is not None and d.task_id != task_id]
            self.dead[queue] = keep
            return len(letters) - len(keep)
