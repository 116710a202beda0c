"""Adapter for Alligator-style backend clients with five methods.

A client class with ``__init__(conn_string)``, ``len(queue_name)``,
``drop_all(queue_name)``, ``push(queue_name, task_id, data, delay_until=None)``,
``pop(queue_name)`` and ``get(queue_name, task_id)`` works unchanged as
``App(url, backend_class=Client)``.

Such a client gets **at-most-once** delivery: ``pop`` removes a task before it
runs, so a task running when its worker dies is lost. Failed attempts are
pushed back with their retry delay, and dead letters are pushed to a queue
named ``<queue>.dead`` through the same client, each payload wrapped with its
reason and error. The worker calls the client only from the thread that
created it; no heartbeat thread is started.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import msgpack

from ..errors import ConfigurationError
from .base import Backend, check_queue_name
from .capabilities import Capabilities
from .protocols import DeadLetterAdmin, QueueAdmin, TakeById
from .records import DeadLetter, Message, QueueStats, Reservation

DEAD_SUFFIX = ".dead"


class _Once:
    """A reservation's handle: whether it was pushed back already. The worker
    sends a failed batch again; each item remembers it was pushed, so a push
    that failed part-way through a batch never duplicates the rest."""

    __slots__ = ("pushed",)

    def __init__(self) -> None:
        self.pushed = False


def _pushed(r: Reservation) -> bool:
    return isinstance(r.handle, _Once) and r.handle.pushed


def _mark(r: Reservation) -> None:
    if isinstance(r.handle, _Once):
        r.handle.pushed = True


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, str):  # a client that stores text hands back str
        return data.encode("utf-8", "surrogateescape")
    return bytes(data)


class ClientBackend(Backend, QueueAdmin, TakeById, DeadLetterAdmin):
    supports_leases = False
    thread_safe = False
    capabilities = Capabilities.lacking(
        known_queues="a five-method client cannot list its queues: pass queue= to "
        "app.get/app.cancel and -Q to gatorapp status/dead for queues no task names",
        stats_detail="len() cannot tell ready from delayed, and running tasks are invisible",
        oldest="len() cannot tell when a task became due",
        locate="the five methods cannot look at a task without removing it",
    )

    def check_queue(self, queue: str) -> str:
        queue = super().check_queue(queue)
        if queue.endswith(DEAD_SUFFIX):
            raise ConfigurationError(
                f"queue name {queue!r}: names ending in {DEAD_SUFFIX!r} hold another queue's "
                "dead letters on a five-method client"
            )
        return queue

    def __init__(self, client: Any, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.client = client

    # -- primitives ----------------------------------------------------------
    def _enqueue(self, messages: Sequence[Message]) -> None:
        for m in messages:
            self.client.push(m.queue, m.task_id, m.data, delay_until=m.run_at)

    def _reserve(self, queue: str, limit: int, lease: float, worker_id: str) -> list[Reservation]:
        out = []
        for _ in range(limit):
            data = self.client.pop(queue)
            if data is None:
                break
            # The id is not known until the worker decodes the payload.
            out.append(Reservation(queue, "", _as_bytes(data), "", 1, lease, _Once()))
        return out

    def _ack(self, reservations: Sequence[Reservation]) -> list[bool]:
        return [True] * len(reservations)  # pop already removed them

    def _retry(self, items: Sequence[tuple[Reservation, bytes, float]]) -> list[bool]:
        for r, data, run_at in items:
            if not _pushed(r):
                self.client.push(r.queue, r.task_id, data, delay_until=run_at)
                _mark(r)
        return [True] * len(items)

    def _release(self, reservations: Sequence[Reservation]) -> list[bool]:
        for r in reservations:
            if not _pushed(r):
                self.client.push(r.queue, r.task_id or uuid.uuid4().hex, r.data, delay_until=None)
                _mark(r)
        return [True] * len(reservations)

    def _extend(self, reservations: Sequence[Reservation]) -> list[bool]:
        return [True] * len(reservations)

    def _bury(self, items: Sequence[tuple[Reservation, str, str]]) -> list[bool]:
        for r, reason, error in items:
            if not _pushed(r):
                self.dead_add(r.queue, r.task_id or uuid.uuid4().hex, r.data, reason, error)
                _mark(r)
        return [True] * len(items)

    def take(self, queue: str, task_id: str) -> bytes | None:
        queue = check_queue_name(queue)
        data = self.client.get(queue, task_id)
        return None if data is None else _as_bytes(data)

    # -- dead letters: records in the "<queue>.dead" queue ---------------------
    def _dead_add(self, queue: str, task_id: str, data: bytes, reason: str, error: str) -> None:
        record = msgpack.packb(
            {
                "id": task_id,
                "data": data,
                "reason": reason,
                "error": error,
                "at": time.time(),
            },
            use_bin_type=True,
        )
        self.client.push(queue + DEAD_SUFFIX, task_id, record, delay_until=None)

    @staticmethod
    def _letter(queue: str, task_id: str, raw: Any) -> DeadLetter:
        """Parse a dead-letter record; one written by something else is shown as is."""
        try:
            rec = msgpack.unpackb(_as_bytes(raw), raw=False)
            return DeadLetter(
                queue, rec.get("id", task_id), rec["data"], rec["reason"], rec["error"], rec["at"]
            )
        except Exception as exc:
            return DeadLetter(queue, task_id, _as_bytes(raw), "unreadable", str(exc), 0.0)

    def dead_list(self, queue: str, limit: int = 1000) -> list[DeadLetter]:
        # The five methods cannot list without removing: pop everything, then
        # push it all back in the same order.
        raws: list[Any] = []
        letters: list[DeadLetter] = []
        try:
            while len(raws) < limit:
                raw = self.client.pop(queue + DEAD_SUFFIX)
                if raw is None:
                    break
                raws.append(raw)
            letters = [self._letter(queue, "", raw) for raw in raws]
        finally:  # whatever happened, every record popped goes back
            ids = [letter.task_id for letter in letters] or [""] * len(raws)
            for task_id, raw in zip(ids, raws):
                self.client.push(queue + DEAD_SUFFIX, task_id or uuid.uuid4().hex, raw)
        return letters

    def dead_get(self, queue: str, task_id: str) -> DeadLetter | None:
        raw = self.client.get(queue + DEAD_SUFFIX, task_id)
        if raw is None:
            return None
        self.client.push(queue + DEAD_SUFFIX, task_id, raw, delay_until=None)
        return self._letter(queue, task_id, raw)

    def dead_requeue(self, queue: str, task_id: str, data: bytes | None = None) -> bool:
        raw = self.client.get(queue + DEAD_SUFFIX, task_id)
        if raw is None:
            return False
        letter = self._letter(queue, task_id, raw)
        try:
            self.client.push(
                queue, task_id, data if data is not None else letter.data, delay_until=None
            )
        except BaseException:
            self.client.push(queue + DEAD_SUFFIX, task_id, raw, delay_until=None)  # keep it
            raise
        return True

    def dead_purge(self, queue: str, task_id: str | None = None) -> int:
        if task_id is not None:
            n = 0
            while self.client.get(queue + DEAD_SUFFIX, task_id) is not None:
                n += 1
            return n
        n = int(self.client.len(queue + DEAD_SUFFIX))
        self.client.drop_all(queue + DEAD_SUFFIX)
        return n

    def stats(self, queue: str) -> QueueStats:
        # The client cannot tell ready from delayed, nor see running tasks.
        return QueueStats(
            ready=int(self.client.len(queue)), dead=int(self.client.len(queue + DEAD_SUFFIX))
        )

    def known_queues(self) -> list[str]:
        return []  # (see capabilities.known_queues)

    def clear(self, queue: str) -> None:
        self.client.drop_all(queue)

    # -- the five methods go straight to the client -----------------------------
    def len(self, queue_name: str) -> int:
        return int(self.client.len(queue_name))

    def drop_all(self, queue_name: str) -> None:
        self.client.drop_all(queue_name)

    def push(
        self, queue_name: str, task_id: str, data: bytes, delay_until: float | None = None
    ) -> str:
        self.check_size(data)
        result = self.client.push(queue_name, task_id, data, delay_until=delay_until)
        return result if isinstance(result, str) else task_id

    def pop(self, queue_name: str) -> bytes | None:
        data = self.client.pop(queue_name)
        return None if data is None else _as_bytes(data)

    def get(self, queue_name: str, task_id: str) -> bytes | None:
        return self.take(queue_name, task_id)
