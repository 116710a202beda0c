"""What one process did, counted in plain Python for metrics (:mod:`gatorapp.metrics`).

A worker with metrics on calls :meth:`Tally.started` when an attempt starts
and :meth:`Tally.outcome` when a delivery's outcome is known (the outbox);
a producer calls :meth:`Tally.enqueued`. Each is a dict look-up and a few
integer additions under a lock, well under a microsecond; nothing of
prometheus-client runs per task. Metrics are made from :meth:`Tally.snapshot`
when they are scraped. With metrics off there is no tally, and the hot paths
pay one ``is None`` test.

The counts, per queue and task name, and how they add up once a drain is over:

* ``started``: attempts begun. ``started = succeeded + failed``.
* ``succeeded``, ``failed``: attempts that returned, or raised (or ran past
  their timeout). ``failed = retried + dead`` of the tasks that ran.
* ``retried``: failed attempts put back for another one.
* ``dead``: tasks moved to the dead letters, by reason; those that never ran
  (a payload that cannot run: ``reason`` ``decode_error``, ``unknown_task``...;
  ``worker_lost``) are dead without an attempt.
* ``enqueued``: tasks enqueued by this process (``.delay()``, ``.map()``; a
  retry is not an enqueue). Each enqueued task ends once, so across every
  process, ``enqueued = succeeded + dead`` when nothing waits or runs.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable
from typing import Any, Protocol

#: upper bounds (seconds) of the duration histogram's buckets: prometheus-client's
#: defaults, which span a fast task to a slow one
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

# Positions in a row of counts (a list: made once per (queue, task), then
# added to in place).
STARTED, SUCCEEDED, FAILED, RETRIED, ENQUEUED, SECONDS = range(6)
FIRST_BUCKET = 6  # then one count per bucket, the last one for +Inf


class Outcome(Protocol):
    """What :meth:`Tally.outcome` reads of a settlement (gatorapp.execution's)."""

    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def duration(self) -> float: ...


def _row() -> list[Any]:
    return [0, 0, 0, 0, 0, 0.0] + [0] * (len(BUCKETS) + 1)


class Tally:
    """Counts per (queue, task name).

    :meth:`outcome` is called under the worker's outbox lock (or from its one
    thread), :meth:`started` under this tally's own lock when ``shared`` (tasks
    start on several threads), so a single-threaded worker takes no lock for
    it. The two add to different places of a row, and a row is made with
    ``setdefault``, so neither loses the other's counts.
    """

    def __init__(self, shared: bool = True) -> None:
        self.shared = shared
        self.lock = threading.Lock()
        self.rows: dict[tuple[str, str], list[Any]] = {}
        self.dead: dict[tuple[str, str, str], int] = {}
        #: writes these counts where they are read (a worker process under a
        #: supervisor: to its folder); a worker that ends at once (``os._exit``,
        #: which skips the writer's own last write) calls it first
        self.last_write: Callable[[], None] | None = None

    def _row(self, key: tuple[str, str]) -> list[Any]:
        return self.rows.setdefault(key, _row())

    def started(self, queue: str, name: str) -> None:
        if self.shared:
            with self.lock:
                row = self.rows.get((queue, name)) or self._row((queue, name))
                row[STARTED] += 1
        else:
            row = self.rows.get((queue, name)) or self._row((queue, name))
            row[STARTED] += 1

    def outcome(self, queue: str, s: Outcome) -> None:
        """One delivery's outcome (a worker's settlement: ``kind`` ``success``,
        ``retry`` or ``dead``; a dead one with ``attempt`` 0 never ran)."""
        key = (queue, s.name or "?")  # (a payload that cannot be read has no name)
        row = self.rows.get(key) or self._row(key)
        kind = s.kind
        if kind == "success":
            row[SUCCEEDED] += 1
        else:
            if kind == "retry":
                row[RETRIED] += 1
            else:
                dkey = (key[0], key[1], s.reason)
                with self.lock:  # (rare: dead letters)
                    self.dead[dkey] = self.dead.get(dkey, 0) + 1
            if not s.attempt:
                return
            row[FAILED] += 1
        duration = s.duration
        row[SECONDS] += duration
        row[FIRST_BUCKET + bisect_left(BUCKETS, duration)] += 1

    def enqueued(self, queue: str, name: str, n: int = 1) -> None:
        with self.lock:  # (producers may be threads of a web server)
            row = self.rows.get((queue, name)) or self._row((queue, name))
            row[ENQUEUED] += n

    def snapshot(self) -> dict[str, Any]:
        """The counts as plain data (msgpack-able): ``rows`` of ``[queue, name,
        *counts]`` and ``dead`` of ``[queue, name, reason, n]``."""
        # (A copy first: a worker's thread may add a row while this runs.)
        rows = self.rows.copy()
        with self.lock:
            dead = self.dead.copy()
        return {
            "rows": [[q, n, *row] for (q, n), row in rows.items()],
            "dead": [[q, n, r, c] for (q, n, r), c in dead.items()],
        }


def merge(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """The sum of several processes' snapshots (``gatorapp worker -p N``)."""
    rows: dict[tuple[str, str], list[Any]] = {}
    dead: dict[tuple[str, str, str], int] = {}
    for snap in snapshots:
        for q, n, *counts in snap.get("rows", []):
            row = rows.get((q, n))
            if row is None:
                rows[(q, n)] = list(counts)
            else:
                for i, c in enumerate(counts):
                    row[i] += c
        for q, n, r, c in snap.get("dead", []):
            dead[(q, n, r)] = dead.get((q, n, r), 0) + c
    return {
        "rows": [[q, n, *row] for (q, n), row in rows.items()],
        "dead": [[q, n, r, c] for (q, n, r), c in dead.items()],
    }
