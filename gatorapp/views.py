"""What people are shown of a dead letter and of a task, as plain data, for
the ``gatorapp`` command line and the dashboard alike."""

from __future__ import annotations

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
