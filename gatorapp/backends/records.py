"""The values backends and the worker pass each other: what to enqueue, what
was leased, what a settle did, dead letters and queue counts. Plain immutable
values with no behaviour, so every layer may import them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class Message(NamedTuple):
    """One task to enqueue: its queue, id, payload and due time (epoch seconds).

    (A named tuple: immutable, and cheap to make a hundred thousand times a
    second.)"""

    queue: str
    task_id: str
    data: bytes
    run_at: float | None = None


class Reservation(NamedTuple):
    """A task leased to one worker (immutable).

    ``token`` identifies this lease; ``deliveries`` counts how many times the
    task was handed out since it was enqueued or last retried (a value above 1
    means a worker that held it before died or lost its lease). ``lease`` is
    the lease length in seconds the heartbeat keeps renewing. ``handle`` is
    the backend's own, for what it needs to settle the task later (SQS: its
    receipt's queue URL and receive time); nothing else reads it.

    The worker never writes a reservation: what it learns (the task's own
    lease, a five-method client's task id) it keeps as a new one made with
    ``_replace``, and what it knows of each (a lease taken over) in its own
    in-flight state (:mod:`gatorapp.worker.held`).
    """

    queue: str
    task_id: str
    data: bytes
    token: str
    deliveries: int = 1
    lease: float = 30.0
    handle: object = None


#: A failed task to put back: its reservation, the new payload, its due time.
RetryItem = tuple[Reservation, bytes, float]
#: A task for the dead letters: its reservation, the reason and the error text.
Burial = tuple[Reservation, str, str]


#: A finished task's result record to store: its task id, the record, and
#: for how many seconds (a plain tuple: one is made per task).
ResultItem = tuple[str, bytes, float]


#: Where a task is in its queue (:meth:`Backend.locate`): ``ready``,
#: ``delayed`` or ``running``, and its payload.
Located = tuple[str, bytes]


@dataclass(frozen=True, slots=True)
class Settled:
    """What :meth:`Backend.settle` did: one bool per item of each list, False
    where the lease was lost (the item was not applied)."""

    acked: list[bool]
    retried: list[bool]
    buried: list[bool]


NOTHING_SETTLED = Settled([], [], [])


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A task in a queue's dead-letter store, with why it is there."""

    queue: str
    task_id: str
    data: bytes
    reason: str
    error: str
    failed_at: float


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A queue's counts. ``oldest`` is when its oldest ready task became due
    (epoch seconds; None when nothing is ready, or the backend cannot tell):
    ``now - oldest`` is how late the queue runs."""

    ready: int = 0
    delayed: int = 0
    running: int = 0
    dead: int = 0
    oldest: float | None = None
