"""Alligator's five client methods, over any backend.

``app.backend.len("emails")`` and its siblings answer as an Alligator
client did: ``len``, ``drop_all``, ``push``, ``pop`` and ``get``. Every
backend has them through :class:`FiveMethods`, written once here over the
public delivery calls and the administration protocols, so a new backend
writes none of them. They are at-most-once: ``pop`` and ``get`` remove a
task before anything runs it.

A backend that lacks the protocol one of them needs (``len`` and
``drop_all``: :class:`~gatorapp.backends.protocols.QueueAdmin`; ``get``:
:class:`~gatorapp.backends.protocols.TakeById`) raises
:class:`~gatorapp.errors.NotAvailable` from that one.
"""

from __future__ import annotations

from collections.abc import Sequence

from .protocols import queue_admin, take_by_id
from .records import Message, Reservation


class FiveMethods:
    # (What the delivery base provides; declared for the type checker.)
    def enqueue(self, messages: Sequence[Message]) -> None:
        raise NotImplementedError

    def reserve(
        self, queues: Sequence[str], limit: int, lease: float, worker_id: str
    ) -> list[Reservation]:
        raise NotImplementedError

    def ack(self, reservations: Sequence[Reservation]) -> list[bool]:
        raise NotImplementedError

    def len(self, queue_name: str) -> int:
        """Tasks waiting in the queue (ready or delayed, not running)."""
        s = queue_admin(self).stats(queue_name)
        return s.ready + s.delayed

    def drop_all(self, queue_name: str) -> None:
        """Delete every task of the queue (its dead letters stay)."""
        queue_admin(self).clear(queue_name)

    def push(
        self, queue_name: str, task_id: str, data: bytes, delay_until: float | None = None
    ) -> str:
        self.enqueue([Message(queue_name, task_id, data, delay_until)])
        return task_id

    def pop(self, queue_name: str) -> bytes | None:
        got = self.reserve([queue_name], 1, 60.0, "pop")
        if not got:
            return None
        self.ack(got)
        return got[0].data

    def get(self, queue_name: str, task_id: str) -> bytes | None:
        return take_by_id(self).take(queue_name, task_id)
