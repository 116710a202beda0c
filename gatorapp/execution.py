"""Running one attempt of a task: hooks, the function, and the retry decision.

The worker and eager mode share this code, so a task behaves the same way
whether it runs in a worker or inline with ``is_async=False``.

Order of calls for one attempt: ``on_start(task)``, the function, then
exactly one of ``on_success(task, result)`` or ``on_error(task, err)``.

* An exception in ``on_start`` fails the attempt before the function runs
  (``on_error`` then sees it).
* An exception in ``on_success`` is logged; the task still counts as done and
  is never run again for it.
* An exception in ``on_error`` is logged; the retry decision goes on with the
  task as the hook left it.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import tenacity

from .errors import Retry
from .task import FAILED, RETRYING, RUNNING, SUCCESS, Task

log = logging.getLogger("gatorapp.task")

#: The default backoff: exponential from 1 s, doubling, capped at 5 minutes,
#: plus up to 1 s of random jitter so retries of many tasks spread out.
DEFAULT_BACKOFF = tenacity.wait_exponential_jitter(initial=1, max=300, jitter=1)

_RETRYING = tenacity.Retrying()


@dataclass(slots=True)
class TaskDef:
    """A registered task: its function and the defaults chosen at decoration."""

    name: str
    fn: Callable[..., Any]
    queue: str
    retries: int = 0
    on_start: Callable[[Task], Any] | None = None
    on_success: Callable[[Task, Any], Any] | None = None
    on_error: Callable[[Task, BaseException], Any] | None = None
    backoff: Any = DEFAULT_BACKOFF
    retry_on: tuple[type[BaseException], ...] | None = None
    lease: float | None = None


@dataclass(slots=True)
class Outcome:
    """What one attempt came to. ``kind`` is success, retry or dead."""

    kind: Literal["success", "retry", "dead"]
    result: Any = None
    delay: float = 0.0
    reason: str = ""
    error: str = ""
    exc: BaseException | None = None


def backoff_seconds(wait: Any, attempt: int, exc: BaseException) -> float:
    """Ask a tenacity wait strategy how long to wait after failed ``attempt``."""
    state = tenacity.RetryCallState(retry_object=_RETRYING, fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    fut: tenacity.Future = tenacity.Future(attempt)
    fut.set_exception(exc)
    state.outcome = fut
    return max(0.0, float(wait(state)))


def _call_hook(kind: str, hook: Callable[..., Any] | None, *args: Any) -> BaseException | None:
    if hook is None:
        return None
    try:
        hook(*args)
    except Exception as exc:  # a broken hook must not lose or re-run the task
        log.exception("%s hook %r failed for %s", kind, getattr(hook, "__name__", hook), args[0])
        return exc
    return None


def format_error(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).strip()


def run_attempt(
    task: Task,
    tdef: TaskDef,
    hooks: dict[str, Callable[..., Any] | None],
    max_attempts: int,
) -> Outcome:
    """Run one attempt of ``task`` and decide what happens next.

    ``hooks`` are the resolved on_start/on_success/on_error for this task
    (enqueue-time choices over the decoration defaults).
    """
    task.attempt += 1
    task.status = RUNNING
    try:
        start_err = _call_hook("on_start", hooks.get("on_start"), task)
        if start_err is not None:
            raise start_err
        result = tdef.fn(*task.func_args, **task.func_kwargs)
    except Exception as exc:
        task.status = FAILED
        _call_hook("on_error", hooks.get("on_error"), task, exc)
        retryable = (
            isinstance(exc, Retry) or tdef.retry_on is None or isinstance(exc, tdef.retry_on)
        )
        # (The traceback is formatted only for a dead letter: retries log the
        # exception itself, and formatting is costly on a hot retry path.)
        if not retryable:
            return Outcome("dead", reason="not_retryable", error=format_error(exc), exc=exc)
        if task.retries <= 0:
            return Outcome("dead", reason="retries_exhausted", error=format_error(exc), exc=exc)
        if task.attempt >= max_attempts:
            # on_error may grant retries; this cap keeps that from looping forever.
            return Outcome("dead", reason="attempt_limit", error=format_error(exc), exc=exc)
        task.retries -= 1
        task.status = RETRYING
        if isinstance(exc, Retry) and exc.delay is not None:
            delay = max(0.0, float(exc.delay))
        else:
            delay = backoff_seconds(tdef.backoff, task.attempt, exc)
        return Outcome("retry", delay=delay, exc=exc)
    task.status = SUCCESS
    task.result = result
    _call_hook("on_success", hooks.get("on_success"), task, result)
    return Outcome("success", result=result)
