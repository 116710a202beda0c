"""What people are shown of a dead letter and of a task, as plain data, for
the ``gatorapp`` command line and the dashboard alike."""

from __future__ import annotations

from collections import deque
from typing import Any

from .app import App
from .backends import DeadLetter
from .envelope import Task
from .results import FINAL, Result

# The stored payload is the one the last attempt started from, so these reasons
# mean one more attempt ran than the payload records.
_AFTER_AN_ATTEMPT = {"retries_exhausted", "not_retryable", "attempt_limit", "crashed"}


def describe(app: App, data: bytes) -> Task | None:
    """The task of a stored payload, or None when it cannot be read (nothing
    is imported or run: the payload is plain data)."""
    try:
        return app.task_class.deserialize(app.registry.unseal(data))
    except Exception:
        return None


def attempts(task: Task, reason: str) -> int:
    """How many attempts a dead letter's task ran."""
    return task.attempt + (1 if reason in _AFTER_AN_ATTEMPT else 0)


def letter(app: App, dead: DeadLetter) -> dict[str, Any]:
    """A dead letter as plain data: its arguments decoded, never evaluated."""
    task = describe(app, dead.data)
    out: dict[str, Any] = {
        "queue": dead.queue,
        "task_id": dead.task_id,
        "reason": dead.reason,
        "error": dead.error,
        "failed_at": dead.failed_at,
        "size": len(dead.data),
        "task": None,
    }
    if task is not None:
        out["task"] = {
            "name": task.name,
            "args": task.func_args,
            "kwargs": task.func_kwargs,
            "attempts": attempts(task, dead.reason),
        }
    return out


def task(app: App, task_id: str, found: Result | None, status: str) -> dict[str, Any]:
    """A task's status and, once it ended, its result record as plain data."""
    out: dict[str, Any] = {"task_id": task_id, "status": status}
    if found is not None and status in FINAL:
        if found.name:  # (a success record keeps only its value and time)
            out.update(task=found.name, attempts=found.attempts)
        out.update(
            finished_at=found.finished_at,
            value=found.value,
            reason=found.reason,
            error=found.summary,
            traceback=found.traceback,
        )
    return out


def lookup(app: App, task_id: str) -> dict[str, Any]:
    """:func:`task` for a task known by its id alone (``status`` is None when
    the app keeps no results: nothing says how a task ended)."""
    reader = app.producer.results
    if reader is None:
        return {
            "task_id": task_id,
            "status": None,
            "note": "this app keeps no results: App(..., results=True) keeps them",
        }
    found = reader.stored(task_id)
    status = found.status if found is not None and found.status in FINAL else None
    return task(app, task_id, found, status or reader.status(task_id, None))


#: seconds of looks a rate is taken over
RATE_WINDOW = 10.0


class Rates:
    """Tasks per second over the last :data:`RATE_WINDOW` seconds, from
    successive looks (``gatorapp status --json``'s shape): tasks finished by
    each live worker (its ``done``), tasks out of each queue (the workers'
    ``settled``: acknowledged, retried or buried), and how fast each queue's
    backlog (ready and delayed) grows or shrinks. A worker that appears counts
    from its first look; one that leaves takes nothing away."""

    def __init__(self) -> None:
        self.looks: deque[tuple[float, dict[str, int], dict[str, int], dict[str, int]]] = deque()

    def add(self, look: dict[str, Any]) -> None:
        t = look["time"]
        # (delayed is None where the backend cannot tell it apart: ready has it)
        backlog = {r["queue"]: r["ready"] + (r["delayed"] or 0) for r in look["queues"]}
        workers = look["workers"] or []
        done = {w["id"]: w["done"] for w in workers}
        settled = {
            f"{w['id']}\0{q}": n for w in workers for q, n in (w.get("settled") or {}).items()
        }
        self.looks.append((t, backlog, done, settled))
        while len(self.looks) > 2 and t - self.looks[0][0] > RATE_WINDOW:
            self.looks.popleft()

    def _per_key(self, which: int) -> dict[str, float]:
        """Per key of the looks' ``which`` counts: its growth per second since
        the first look that had it."""
        if len(self.looks) < 2:
            return {}
        series: list[tuple[float, dict[str, int]]] = [
            (look[0], look[2] if which == 2 else look[3]) for look in self.looks
        ]
        t1, last = series[-1]
        out = {}
        for key, n in last.items():
            t0, first = next((t, counts[key]) for t, counts in series if key in counts)
            out[key] = (n - first) / (t1 - t0) if t1 > t0 else 0.0
        return out

    def finished(self) -> dict[str, float]:
        """Tasks/s finished by each worker, by its id."""
        return self._per_key(2)

    def out(self) -> dict[str, float]:
        """Tasks/s out of each queue, by all the live workers."""
        if len(self.looks) < 2:
            return {}
        out: dict[str, float] = {q: 0.0 for q in self.looks[-1][1]}
        for key, rate in self._per_key(3).items():
            queue = key.partition("\0")[2]
            out[queue] = out.get(queue, 0.0) + rate
        return out

    def backlog(self) -> dict[str, float]:
        """Change of each queue's backlog per second (negative: it drains)."""
        if len(self.looks) < 2:
            return {}
        t0, backlog0 = self.looks[0][0], self.looks[0][1]
        t1, backlog1 = self.looks[-1][0], self.looks[-1][1]
        if t1 <= t0:
            return {}
        return {q: (n - backlog0.get(q, n)) / (t1 - t0) for q, n in backlog1.items()}
