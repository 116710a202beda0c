"""Administration a backend may offer beyond delivery, as typed protocols.

:class:`~gatorapp.backends.Backend` is delivery only: enqueue, reserve,
settle, extend, release, wait, and a place for what no worker could run
(``dead_add``). What people and tools do besides is optional, and a backend
declares each part by implementing it (and, for a clear error when a method
is missing, by naming the protocol among its bases):

* :class:`QueueAdmin`: counts per queue (``gatorapp status``, metrics), the
  queues it holds, emptying a queue;
* :class:`TakeById`: removing one waiting task by id (``App.get``,
  ``App.cancel``);
* :class:`DeadLetterAdmin`: listing, showing, requeueing and purging dead
  letters (``gatorapp dead``, the dashboard).

Code that needs one asks for it with :func:`queue_admin`,
:func:`take_by_id` or :func:`dead_letters`: they return the backend typed
as the protocol, or raise :class:`~gatorapp.errors.NotAvailable` saying
which backend lacks what. The type checker then sees every call.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Protocol, TypeVar, runtime_checkable

from ..errors import NotAvailable
from .records import DeadLetter, QueueStats


@runtime_checkable
class QueueAdmin(Protocol):
    """Counts and housekeeping of a backend's queues."""

    @abstractmethod
    def stats(self, queue: str) -> QueueStats:
        """The queue's counts (see ``capabilities.exact_stats``, ``stats_detail``)."""

    @abstractmethod
    def known_queues(self) -> list[str]:
        """Queues this backend holds anything for (tasks or dead letters)."""

    @abstractmethod
    def clear(self, queue: str) -> None:
        """Delete every waiting and running task of the queue (its dead letters stay)."""


@runtime_checkable
class TakeById(Protocol):
    """Removing a waiting task by id."""

    @abstractmethod
    def take(self, queue: str, task_id: str) -> bytes | None:
        """Remove a waiting (not running) task and return its payload, or None."""


@runtime_checkable
class DeadLetterAdmin(Protocol):
    """Looking at and acting on a queue's dead letters (they are added by
    ``Backend.bury`` and ``Backend.dead_add``, part of delivery)."""

    @abstractmethod
    def dead_list(self, queue: str, limit: int = 1000) -> list[DeadLetter]: ...

    @abstractmethod
    def dead_get(self, queue: str, task_id: str) -> DeadLetter | None: ...

    @abstractmethod
    def dead_requeue(self, queue: str, task_id: str, data: bytes | None = None) -> bool:
        """Move a dead letter back to its queue, ready now, in one atomic step.

        ``data`` replaces the payload (the app resets the retry budget)."""

    @abstractmethod
    def dead_purge(self, queue: str, task_id: str | None = None) -> int:
        """Delete the queue's dead letters for good, or only those of ``task_id``
        (every letter of it); returns how many were deleted."""


_P = TypeVar("_P")


def _require(backend: object, protocol: type[_P], what: str) -> _P:
    if isinstance(backend, protocol):
        return backend
    raise NotAvailable(
        f"{type(backend).__name__} keeps no {what}: it implements delivery only "
        f"(see {protocol.__name__} in docs/extending.md)"
    )


def queue_admin(backend: object) -> QueueAdmin:
    """``backend`` as a :class:`QueueAdmin`, or NotAvailable."""
    return _require(backend, QueueAdmin, "queue counts")  # type: ignore[type-abstract]


def take_by_id(backend: object) -> TakeById:
    """``backend`` as a :class:`TakeById`, or NotAvailable."""
    return _require(backend, TakeById, "way to take a task by id")  # type: ignore[type-abstract]


def dead_letters(backend: object) -> DeadLetterAdmin:
    """``backend`` as a :class:`DeadLetterAdmin`, or NotAvailable."""
    return _require(backend, DeadLetterAdmin, "dead letters to look at")  # type: ignore[type-abstract]


def known_queues(backend: object) -> list[str]:
    """The queues ``backend`` holds anything for; none when it cannot tell."""
    return backend.known_queues() if isinstance(backend, QueueAdmin) else []
