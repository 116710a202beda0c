"""Every reservation a worker holds, and what the worker knows about each.

A reservation is held from the reserve that leased it until the backend
confirms its settlement (or takes it back): while it waits in the buffer,
while it runs, and while its outcome waits in the outbox. The heartbeat
renews all of them. Backends' :class:`~gatorapp.backends.Reservation`
objects are never written by the worker: what the worker learns (a lease
taken over) is kept here, by the reservation's identity.

Changes come a batch at a time, so the lock is taken once per batch, never
once per task.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from ..backends import Reservation


def fields(
    r: Reservation, name: str = "", attempt: int = 0, duration: float | None = None
) -> dict[str, Any]:
    """A task's fields for a log record's ``extra``: ``--log-format json``
    prints them as keys, and a logging filter of the app's can read them."""
    out: dict[str, Any] = {"task_id": r.task_id, "queue": r.queue}
    if name:
        out["task_name"] = name
    if attempt:
        out["attempt"] = attempt
    if duration is not None:
        out["duration"] = round(duration, 6)
    return out


class Held:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._items: dict[int, Reservation] = {}
        #: held reservations whose lease the heartbeat found taken over
        self.lost: set[int] = set()
        #: a swapped reservation's key -> (it, the one held for it): code that
        #: still has the old one (an error path) forgets the new one through
        #: it; keeping the old object keeps its id from being given again
        self._swapped: dict[int, tuple[Reservation, Reservation]] = {}
        self._swapped_to: dict[int, int] = {}  # the new one's key -> the old one's

    def __len__(self) -> int:
        return len(self._items)

    def add(self, reservations: Iterable[Reservation]) -> None:
        with self.lock:
            self._items.update((id(r), r) for r in reservations)

    def forget(self, reservations: Iterable[Reservation]) -> None:
        with self.lock:
            items, lost = self._items, self.lost
            for r in reservations:
                key = id(r)
                items.pop(key, None)
                if lost:
                    lost.discard(key)
                if self._swapped:
                    self._unswap(key)

    def _unswap(self, key: int) -> None:
        """Forget the swap ``key`` took part in, old side or new (lock held)."""
        old = self._swapped_to.pop(key, None)
        if old is not None:  # the new one: its old one's record goes
            self._swapped.pop(old, None)
            return
        pair = self._swapped.pop(key, None)
        if pair is not None:  # the old one: the one held for it goes too
            new = id(pair[1])
            self._swapped_to.pop(new, None)
            self._items.pop(new, None)
            self.lost.discard(new)

    def swap(self, old: Reservation, new: Reservation) -> Reservation:
        """Hold ``new`` in place of ``old`` (the same task, with what the worker
        learnt since: its own lease, its id), keeping what is known of it;
        returns ``new``."""
        with self.lock:
            key = id(old)
            if self._items.pop(key, None) is not None:
                self._items[id(new)] = new
                first = self._swapped_to.pop(key, key)  # (swapped twice: keep the first)
                self._swapped[first] = (self._swapped.get(first, (old, new))[0], new)
                self._swapped_to[id(new)] = first
            if key in self.lost:
                self.lost.discard(key)
                self.lost.add(id(new))
        return new

    def snapshot(self) -> list[Reservation]:
        with self.lock:
            return list(self._items.values())

    def is_held(self, r: Reservation) -> bool:
        return id(r) in self._items

    def mark_lost(self, r: Reservation) -> bool:
        """Note that ``r``'s lease was taken over; False if it was noted already
        or ``r`` is no longer held."""
        with self.lock:
            key = id(r)
            pair = self._swapped.get(key) if self._swapped else None
            if pair is not None:  # (seen before a swap: the one held for it now)
                key = id(pair[1])
            if key not in self._items or key in self.lost:
                return False
            self.lost.add(key)
            return True

    def was_lost(self, r: Reservation) -> bool:
        return bool(self.lost) and id(r) in self.lost
