"""Running one attempt of a task: hooks, the function, and the retry decision.

Eager mode, ``app.get`` and every worker share this code, so a task behaves
the same way whether it runs in a worker or inline with ``is_async=False``.

Order of calls for one attempt: ``on_start(task)``, the function, then
exactly one of ``on_success(task, result)`` or ``on_error(task, err)``.

* An exception in ``on_start`` fails the attempt before the function runs
  (``on_error`` then sees it).
* An exception in ``on_success`` is logged; the task still counts as done and
  is never run again for it.
* An exception in ``on_error`` is logged; the retry decision goes on with the
  task as the hook left it.

:func:`execute` is what a worker calls: payload bytes in, a
:class:`Settlement` out. A settlement is plain data (what to tell the
backend, and what to log), so it can cross a thread or process boundary.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import tenacity

from . import tracing
from .envelope import FAILED, RETRYING, RUNNING, SUCCESS, Task
from .errors import Rejected, Retry, TaskTimeout
from .registry import DEFAULT_BACKOFF, Hooks, Registry, TaskDef
from .results import ttl_of

__all__ = [
    "DEFAULT_BACKOFF",
    "Outcome",
    "Settlement",
    "attempt",
    "backoff_seconds",
    "execute",
    "format_error",
    "rejected",
    "run_attempt",
]

log = logging.getLogger("gatorapp.task")

_RETRYING = tenacity.Retrying()


@dataclass(slots=True)
class Outcome:
    """What one attempt came to, in this process. ``kind`` is success, retry or dead."""

    kind: Literal["success", "retry", "dead"]
    result: Any = None
    delay: float = 0.0
    reason: str = ""
    error: str = ""
    exc: BaseException | None = None


@dataclass(slots=True)
class Settlement:
    """What a worker tells the backend about one delivery, as plain data.

    * ``success``: acknowledge. ``result`` is the return value.
    * ``retry``: put back ``payload`` (the envelope of the next attempt), due
      ``delay`` seconds from now.
    * ``dead``: move to the dead letters with ``reason`` and ``error`` (a
      traceback, or why the payload cannot run).

    ``name``, ``task_id``, ``attempt`` and ``duration`` (seconds the attempt
    ran, hooks included) are for log lines; ``summary`` is the error in one
    line (``KeyError: 'x'``). ``result_ttl`` says the task keeps a result
    record (see :mod:`gatorapp.results`).
    """

    kind: Literal["success", "retry", "dead"]
    result: Any = None
    payload: bytes | None = None
    delay: float = 0.0
    reason: str = ""
    error: str = ""
    summary: str = ""
    name: str = ""
    task_id: str = ""
    attempt: int = 0
    duration: float = 0.0
    #: seconds to keep the task's result record (None: it stores none)
    result_ttl: float | None = None


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
        out = hook(*args)
        if inspect.isawaitable(out):
            # An async hook of a sync task: run here, on a loop of its own (a
            # sync task runs on a thread with none).
            asyncio.run(_awaited(out))
    except Exception as exc:  # a broken hook must not lose or re-run the task
        log.exception("%s hook %r failed for %s", kind, getattr(hook, "__name__", hook), args[0])
        return exc
    return None


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def time_limit(task: Task, tdef: TaskDef) -> float | None:
    """Seconds this attempt may run: the enqueue's ``timeout``, else the task's."""
    opts = task.options
    if opts:
        limit = opts.get("timeout")
        if isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit > 0:
            return float(limit)
    return tdef.timeout


def overran(took: float, limit: float) -> TaskTimeout:
    """The failure of a sync attempt that returned after its time limit."""
    return TaskTimeout(
        f"the attempt took {took:.3g} s, past its timeout of {limit:g} s (a task on a "
        "thread cannot be stopped: it ran to its end, and its return value is discarded)"
    )


def format_error(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).strip()


def summarize(exc: BaseException) -> str:
    """An exception in one line, with its type: ``KeyError: 'missing'``."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_attempt(task: Task, tdef: TaskDef, hooks: Hooks, max_attempts: int) -> Outcome:
    """Run one attempt of ``task`` and decide what happens next.

    ``hooks`` are the resolved on_start/on_success/on_error for this task
    (enqueue-time choices over the decoration defaults).
    """
    task.attempt += 1
    task.status = RUNNING
    limit = time_limit(task, tdef)
    t0 = time.perf_counter()
    try:
        if hooks:
            start_err = _call_hook("on_start", hooks.get("on_start"), task)
            if start_err is not None:
                raise start_err
        result = tdef.fn(*task.func_args, **task.func_kwargs)
        if limit is not None and time.perf_counter() - t0 > limit:
            raise overran(time.perf_counter() - t0, limit)
    except Exception as exc:
        return failed(task, tdef, hooks, exc, max_attempts)
    task.status = SUCCESS
    task.result = result
    if hooks:
        _call_hook("on_success", hooks.get("on_success"), task, result)
    return Outcome("success", result=result)


def failed(task: Task, tdef: TaskDef, hooks: Hooks, exc: Exception, max_attempts: int) -> Outcome:
    """An attempt that raised ``exc``: ``on_error``, then the retry decision."""
    task.status = FAILED
    if hooks:
        _call_hook("on_error", hooks.get("on_error"), task, exc)
    return decide(task, tdef, exc, max_attempts)


def decide(task: Task, tdef: TaskDef, exc: Exception, max_attempts: int) -> Outcome:
    """The retry decision for an attempt that raised ``exc`` (its hooks run)."""
    retryable = isinstance(exc, Retry) or tdef.retry_on is None or isinstance(exc, tdef.retry_on)
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


def undeliverable(reason: str, error: str, data: bytes, registry: Registry) -> Settlement:
    """The settlement of a delivery that never runs (its payload cannot run,
    or its workers kept dying): a dead letter, not an attempt.

    It carries a result record when what can be read of the task says it
    keeps one, so a caller waiting in ``get()`` learns that it died."""
    name, task_id, ttl = "", "", None
    try:
        task = registry.task_class.deserialize(registry.unseal(data))
        tdef = registry.tasks.get(task.name) if isinstance(task.name, str) else None
        ttl = ttl_of(task.options, tdef.keep if tdef is not None else None)
        name, task_id = str(task.name)[:200], str(task.task_id)
    except Exception:  # (nothing readable: no record)
        pass
    return Settlement(
        "dead",
        reason=reason,
        error=error,
        summary=error,
        name=name,
        task_id=task_id,
        result_ttl=ttl,
    )


def rejected(exc: Rejected, data: bytes, registry: Registry) -> Settlement:
    """The settlement of a payload that cannot run (see :func:`undeliverable`)."""
    return undeliverable(exc.reason, exc.error, data, registry)


Attempt = Callable[[Task, TaskDef, Registry], Settlement]


def choose_attempt() -> Attempt:
    """:func:`attempt`, or :func:`traced_attempt` in a process that traces
    (see :mod:`gatorapp.tracing`): a worker asks once, when it starts, so an
    untraced worker pays nothing per task for tracing."""
    return attempt if tracing.tracer() is None else traced_attempt


def traced_attempt(task: Task, tdef: TaskDef, registry: Registry) -> Settlement:
    """:func:`attempt` in a CONSUMER span of the enqueuer's trace."""
    with tracing.consumer(task) as span:
        settled = attempt(task, tdef, registry)
        tracing.finish(span, settled.kind, settled.summary, settled.error, settled.reason)
        return settled


def attempt(task: Task, tdef: TaskDef, registry: Registry) -> Settlement:
    """Run one attempt of a decoded task and say what the backend must do.

    Never raises for anything the task does: a task that ends the attempt with
    ``SystemExit`` or ``KeyboardInterrupt`` is a ``crashed`` dead letter.
    """
    hooks = registry.hooks_for(task, tdef)
    clock = time.perf_counter
    t0 = clock()
    try:
        if hooks:
            outcome = run_attempt(task, tdef, hooks, registry.max_attempts)
        else:
            # run_attempt without hooks, written out: this is every task's path.
            task.attempt += 1
            task.status = RUNNING
            try:
                result = tdef.fn(*task.func_args, **task.func_kwargs)
                if tdef.timeout is not None or task.options:
                    limit = time_limit(task, tdef)
                    if limit is not None and clock() - t0 > limit:
                        raise overran(clock() - t0, limit)
            except Exception as exc:
                outcome = failed(task, tdef, hooks, exc, registry.max_attempts)
            else:
                task.status = SUCCESS
                task.result = result
                return Settlement(
                    "success",
                    result,
                    None,
                    0.0,
                    "",
                    "",
                    "",
                    task.name,
                    task.task_id,
                    task.attempt,
                    clock() - t0,
                    ttl_of(task.options, tdef.keep) if task.options else tdef.keep,
                )
    except BaseException as exc:  # SystemExit from task code: record, don't die
        outcome = Outcome("dead", reason="crashed", error=format_error(exc), exc=exc)
    return settlement(task, tdef, registry, outcome, clock() - t0)


def settlement(
    task: Task, tdef: TaskDef, registry: Registry, outcome: Outcome, took: float
) -> Settlement:
    """What the backend must do after an attempt that came to ``outcome``."""
    kind = outcome.kind
    if kind == "success":
        return Settlement(
            "success",
            outcome.result,
            name=task.name,
            task_id=task.task_id,
            attempt=task.attempt,
            duration=took,
            result_ttl=ttl_of(task.options, tdef.keep),
        )
    exc = outcome.exc
    summary = summarize(exc) if exc is not None else ""
    if kind == "retry":
        try:
            payload = registry.seal(task.serialize())
        except Exception as err:
            return Settlement(
                "dead",
                reason="encode_error",
                error=format_error(err),
                summary=summarize(err),
                name=task.name,
                task_id=task.task_id,
                attempt=task.attempt,
                duration=took,
                result_ttl=ttl_of(task.options, tdef.keep),
            )
        return Settlement(
            "retry",
            payload=payload,
            delay=outcome.delay,
            error=outcome.error or (format_error(exc) if exc is not None else ""),
            summary=summary,
            name=task.name,
            task_id=task.task_id,
            attempt=task.attempt,
            duration=took,
            result_ttl=ttl_of(task.options, tdef.keep),
        )
    return Settlement(
        "dead",
        reason=outcome.reason,
        error=outcome.error,
        summary=summary,
        name=task.name,
        task_id=task.task_id,
        attempt=task.attempt,
        duration=took,
        result_ttl=ttl_of(task.options, tdef.keep),
    )


def execute(data: bytes, registry: Registry, max_payload: int | None = None) -> Settlement:
    """Decode a payload, run one attempt, and say what the backend must do.

    Never raises for anything the payload or the task does: a payload that
    cannot run is a ``dead`` settlement with its reason (see :func:`rejected`).
    """
    try:
        task, tdef = registry.decode(data, max_payload)
    except Rejected as exc:
        return rejected(exc, data, registry)
    return choose_attempt()(task, tdef, registry)
