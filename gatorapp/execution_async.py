"""One attempt of an ``async def`` task: :mod:`gatorapp.execution`, awaited.

The same order of calls and the same retry decision as a sync task's
attempt; hooks may be sync or async (an async hook is awaited). A task's
``timeout`` cancels the coroutine at its deadline: the attempt then fails
with :class:`~gatorapp.errors.TaskTimeout` and is retried by the task's
policy. A ``TimeoutError`` the task raises itself is an ordinary failure.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from . import tracing
from .envelope import FAILED, RUNNING, SUCCESS, Task
from .errors import TaskTimeout
from .execution import Outcome, Settlement, decide, format_error, settlement, time_limit
from .registry import Hooks, Registry, TaskDef

log = logging.getLogger("gatorapp.task")

T = TypeVar("T")


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end from sync code: with ``asyncio.run`` outside an
    event loop; inside one (which must not be blocked on from itself), on a
    thread of its own. For eager mode, which runs tasks where they are sent."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    out: list[T] = []
    errors: list[BaseException] = []

    def main() -> None:
        try:
            out.append(asyncio.run(coro))
        except BaseException as exc:
            errors.append(exc)

    # The thread runs in a copy of the caller's context, as asyncio.run would:
    # the task sees the caller's context variables (its current span among them).
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(main,), name="gatorapp-eager")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return out[0]


async def _call_hook(
    kind: str, hook: Callable[..., Any] | None, *args: Any
) -> BaseException | None:
    if hook is None:
        return None
    try:
        out = hook(*args)
        if inspect.isawaitable(out):
            await out
    except Exception as exc:  # a broken hook must not lose or re-run the task
        log.exception("%s hook %r failed for %s", kind, getattr(hook, "__name__", hook), args[0])
        return exc
    return None


async def _run(tdef: TaskDef, task: Task, limit: float | None) -> Any:
    coro = tdef.fn(*task.func_args, **task.func_kwargs)
    if limit is None:
        return await coro
    # (Not asyncio.wait_for: a TimeoutError of the task's own must stay a
    # failure of its own, not read as the deadline.)
    running = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait({running}, timeout=limit)
    if not done:
        running.cancel()
        try:
            await running
        except asyncio.CancelledError:
            pass
        except Exception:  # (it raised while being cancelled: the deadline still counts)
            log.debug("task %s raised while cancelled at its deadline", task.task_id)
        raise TaskTimeout(f"the attempt ran past its timeout of {limit:g} s and was cancelled")
    return running.result()


async def run_attempt_async(task: Task, tdef: TaskDef, hooks: Hooks, max_attempts: int) -> Outcome:
    """:func:`gatorapp.execution.run_attempt` for a coroutine function."""
    task.attempt += 1
    task.status = RUNNING
    try:
        if hooks:
            start_err = await _call_hook("on_start", hooks.get("on_start"), task)
            if start_err is not None:
                raise start_err
        result = await _run(tdef, task, time_limit(task, tdef))
    except Exception as exc:
        task.status = FAILED
        if hooks:
            await _call_hook("on_error", hooks.get("on_error"), task, exc)
        return decide(task, tdef, exc, max_attempts)
    task.status = SUCCESS
    task.result = result
    if hooks:
        await _call_hook("on_success", hooks.get("on_success"), task, result)
    return Outcome("success", result=result)


AsyncAttempt = Callable[[Task, TaskDef, Registry], Awaitable[Settlement]]


def choose_attempt_async() -> AsyncAttempt:
    """:func:`attempt_async`, or :func:`traced_attempt_async` in a process
    that traces (see :func:`gatorapp.execution.choose_attempt`)."""
    return attempt_async if tracing.tracer() is None else traced_attempt_async


async def traced_attempt_async(task: Task, tdef: TaskDef, registry: Registry) -> Settlement:
    """:func:`attempt_async` in a CONSUMER span of the enqueuer's trace."""
    with tracing.consumer(task) as span:
        settled = await attempt_async(task, tdef, registry)
        tracing.finish(span, settled.kind, settled.summary, settled.error, settled.reason)
        return settled


async def attempt_async(task: Task, tdef: TaskDef, registry: Registry) -> Settlement:
    """:func:`gatorapp.execution.attempt` for a coroutine function: never
    raises for anything the task does. Cancelled from outside (the worker
    stopping at once), it raises CancelledError; the task runs again later."""
    t0 = time.perf_counter()
    try:
        hooks = registry.hooks_for(task, tdef)
        outcome = await run_attempt_async(task, tdef, hooks, registry.max_attempts)
    except asyncio.CancelledError:
        raise  # the worker stopping at once: the task's lease runs out, it runs again
    except BaseException as exc:  # SystemExit from task code: record, don't die
        outcome = Outcome("dead", reason="crashed", error=format_error(exc), exc=exc)
    return settlement(task, tdef, registry, outcome, time.perf_counter() - t0)
