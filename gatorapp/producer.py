"""The producer: what ``.delay()`` does.

It builds the envelope, checks it, and stores it with one backend call
(``send``), or many of them with one call (``send_many``); in eager mode it
runs the task here instead, through the same code a worker uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

from . import tracing
from .backends.base import Backend
from .backends.records import Message
from .envelope import (
    HOOK_NAMES,
    Task,
    envelope_dict,
    new_task_id,
    new_task_ids,
    pack_envelope,
    pack_envelopes,
)
from .errors import ConfigurationError
from .execution import Outcome, run_attempt, summarize
from .execution_async import run_attempt_async, run_coroutine
from .options import as_bool, check_text, check_timeout, run_at
from .registry import Registry, TaskDef, check_retries
from .results import (
    DEAD,
    FINAL,
    MAX_RECORD,
    OPTION,
    SUCCEEDED,
    Results,
    check_ttl,
    failure,
    store_final,
    success,
    ttl_of,
)
from .tally import Tally

R = TypeVar("R")

Call = tuple[Sequence[Any], dict[str, Any]]


class Built(NamedTuple):
    """The envelopes of one enqueue, ready to store (or to run, eagerly)."""

    queue: str
    due: float | None
    eager: bool
    keep: bool
    ids: list[str]
    datas: list[bytes]


class TaskHandle(Generic[R]):
    """What ``.delay()`` returns: ``id``, and the task's status and result
    (``status()``, ``ready()``, ``get()``) when the app keeps results (see
    :mod:`gatorapp.results`). In eager mode ``task`` is the finished Task."""

    __slots__ = ("_results", "id", "name", "queue", "run_at", "stores", "task")

    def __init__(
        self,
        task_id: str,
        name: str,
        queue: str,
        run_at: float | None,
        task: Task | None = None,
        results: Results | None = None,
        stores: bool = True,
    ) -> None:
        self.id = task_id
        self.name = name
        self.queue = queue
        self.run_at = run_at
        self.task = task
        self._results = results
        #: whether the enqueue asked for a result record (False: get() cannot wait for one)
        self.stores = stores and results is not None

    @property
    def result(self) -> R | None:
        """The return value of an eager run. None for a queued task, even once a
        worker has run it: None does not mean success. Use :meth:`get`, which
        waits for the task and returns its stored result."""
        return None if self.task is None else self.task.result

    def _reader(self) -> Results:
        if self._results is None:
            raise ConfigurationError(
                "this app keeps no results: App(..., results=True) (see docs/results.md)"
            )
        return self._results

    def _checked_reader(self) -> Results:
        """The reader, for a handle whose enqueue stores a result."""
        reader = self._reader()
        if not self.stores:
            raise ConfigurationError(
                f"task {self.name} {self.id} stores no result (it was enqueued with "
                "store_result=False): there is nothing to wait for"
            )
        return reader

    def status(self) -> str:
        """``queued``, ``delayed``, ``running``, ``retrying``, ``succeeded``,
        ``failed``, ``dead``, ``cancelled``, or ``unknown`` (never stored, or
        its result expired)."""
        if self.task is not None and not self.stores:
            return SUCCEEDED  # eager, nothing stored: it ran here
        return self._reader().status(self.id, self.queue or None)

    def ready(self) -> bool:
        """Whether the task has ended (succeeded, failed, dead or cancelled)."""
        return self.status() in FINAL

    def get(self, timeout: float | None = None) -> R:
        """The task's return value, waiting up to ``timeout`` seconds (None: as
        long as it takes). Raises :class:`~gatorapp.errors.TaskFailed` when the
        task failed for good, :class:`~gatorapp.errors.ResultTimeout` (a
        ``TimeoutError``) when the time runs out. Reading deletes nothing."""
        if self.task is not None and not self.stores:
            return self.task.result  # type: ignore[no-any-return]
        reader = self._checked_reader()
        value: R = reader.value(self.id, reader.wait(self.id, timeout))
        return value

    async def aget(self, timeout: float | None = None) -> R:
        """:meth:`get` for async code: waits without blocking the event loop."""
        if self.task is not None and not self.stores:
            return self.task.result  # type: ignore[no-any-return]
        reader = self._checked_reader()
        value: R = reader.value(self.id, await reader.await_(self.id, timeout))
        return value

    async def astatus(self) -> str:
        """:meth:`status` for async code."""
        if self.task is not None and not self.stores:
            return SUCCEEDED
        return await self._reader().astatus(self.id, self.queue or None)

    async def aready(self) -> bool:
        """:meth:`ready` for async code."""
        return await self.astatus() in FINAL

    def __repr__(self) -> str:
        return f"<TaskHandle {self.name} id={self.id} queue={self.queue}>"


class Producer:
    """Builds envelopes and hands them to the backend (or runs them, eagerly).

    :param registry: task and hook names.
    :param backend: returns the backend (a client class is built on first use).
    :param check_queue: the backend's rules for a queue name.
    :param eager: run every send inline.
    """

    def __init__(
        self,
        registry: Registry,
        backend: Callable[[], Backend],
        check_queue: Callable[[str], str],
        *,
        eager: bool = False,
    ) -> None:
        self.registry = registry
        self.backend = backend
        self.check_queue = check_queue
        self.eager = eager
        #: the app's result store and default TTL; None when it keeps no results
        self.results: Results | None = None
        self.result_ttl: float | None = None
        #: counts enqueues for metrics (None: metrics off; see gatorapp.metrics)
        self.tally: Tally | None = None

    # -- building ------------------------------------------------------------
    def _encode(
        self,
        tdef: TaskDef,
        task_id: str,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        queue: str,
        retries: int,
        hooks: dict[str, str] | None,
        opts: dict[str, Any] | None,
    ) -> bytes:
        cls = self.registry.task_class
        if cls is Task:
            # The envelope straight from its fields: no Task object on the way.
            return pack_envelope(
                envelope_dict(
                    task_id, tdef.name, queue, list(args), kwargs, retries, 0, hooks, opts
                )
            )
        task = cls(
            tdef.name,
            list(args),
            kwargs,
            task_id=task_id,
            queue=queue,
            retries=retries,
            options=opts,
        )
        for kind, name in (hooks or {}).items():
            setattr(task, kind, name)
        data = task.serialize()
        if not isinstance(data, bytes):
            raise ConfigurationError(f"{cls.__name__}.serialize() must return bytes")
        return data

    def _choices(
        self, tdef: TaskDef, opts: dict[str, Any]
    ) -> tuple[
        str, int, dict[str, str] | None, dict[str, Any] | None, float | None, bool, str | None
    ]:
        """Queue, retries, hooks, envelope opts, due time, eagerness and id from ``opts``."""
        if not opts:
            return tdef.queue, tdef.retries, None, None, None, self.eager, None
        queue = tdef.queue if opts.get("queue") is None else self.check_queue(opts["queue"])
        retries = tdef.retries if opts.get("retries") is None else opts["retries"]
        check_retries(retries, self.registry.max_attempts)
        task_id = opts.get("task_id")
        if task_id is not None and (not isinstance(task_id, str) or not task_id):
            # the envelope carries non-empty string ids only: a worker would refuse any other
            raise ConfigurationError(f"task_id must be a non-empty string, not {task_id!r}")
        if task_id is not None and not task_id.isascii():
            check_text("task_id", task_id)
        hooks = {
            kind: self.registry.hook_name(kind, opts[kind])
            for kind in HOOK_NAMES
            if opts.get(kind) is not None
        }
        # The budget chosen here travels along, for requeue_dead to restore.
        extra = self._keep(tdef, opts.get("store_result"), opts.get("result_ttl"))
        if retries != tdef.retries:
            extra = {**(extra or {}), "retries": retries}
        if opts.get("timeout") is not None:
            extra = {**(extra or {}), "timeout": check_timeout(opts["timeout"])}
        eager = self.eager or not as_bool(opts.get("is_async", True), "is_async")
        due = run_at(opts, time.time())
        return queue, retries, hooks or None, extra, due, eager, task_id

    def _keep(self, tdef: TaskDef, store: Any, ttl: Any) -> dict[str, Any] | None:
        """The envelope option of an enqueue whose result is kept otherwise
        than the task's default (see results.OPTION), or None."""
        if store is None and ttl is None:
            return None
        # (A result_ttl alone asks for a result: ignoring it would be a surprise.)
        if store is None:
            keep = tdef.keep is not None or ttl is not None
        else:
            keep = as_bool(store, "store_result")
        if not keep:
            return None if tdef.keep is None else {OPTION: 0}
        if self.result_ttl is None:
            raise ConfigurationError(
                f"task {tdef.name} stores its result, but the app keeps none: "
                "App(..., results=True)"
            )
        seconds = check_ttl(ttl) if ttl is not None else tdef.keep or self.result_ttl
        if seconds == tdef.keep:
            return None
        return {OPTION: int(seconds) if seconds == int(seconds) else seconds}

    def message(
        self, tdef: TaskDef, args: Sequence[Any], kwargs: dict[str, Any], queue: str, task_id: str
    ) -> Message:
        """The message ``.delay()`` would store for this call, due now, for a
        caller that stores it itself (the scheduler, with ``enqueue_tick``)."""
        data = self._encode(tdef, task_id, args, kwargs, queue, tdef.retries, None, None)
        if self.registry.sealing:
            data = self.registry.seal(data)
        return Message(queue, task_id, data, None)

    # -- sending -------------------------------------------------------------
    def _build(
        self,
        tdef: TaskDef,
        calls: Sequence[Call],
        opts: dict[str, Any],
        trace: dict[str, str] | None,
    ) -> Built:
        """The envelopes of one enqueue (one per call), checked and sealed;
        ``trace`` is the enqueuer's trace context (see :mod:`gatorapp.tracing`)."""
        queue, retries, hooks, extra, due, eager, task_id = self._choices(tdef, opts)
        if trace is not None:
            extra = {**(extra or {}), tracing.OPTION: trace}
        keep = ttl_of(extra, tdef.keep) is not None
        if len(calls) == 1:
            ids = [task_id or new_task_id()]
            args, kwargs = calls[0]
            datas = [self._encode(tdef, ids[0], args, kwargs, queue, retries, hooks, extra)]
        else:
            ids = [task_id] * len(calls) if task_id else new_task_ids(len(calls))
            if self.registry.task_class is Task:
                datas = pack_envelopes(ids, tdef.name, queue, calls, retries, hooks, extra)
            else:
                encode = self._encode
                datas = [
                    encode(tdef, i, args, kwargs, queue, retries, hooks, extra)
                    for i, (args, kwargs) in zip(ids, calls)
                ]
        registry = self.registry
        if registry.sealing:
            datas = [registry.seal(d) for d in datas]
        if eager:
            backend = self.backend()
            for data in datas:
                backend.check_size(data)  # what the backend would refuse, eager mode refuses too
        return Built(queue, due, eager, keep, ids, datas)

    def _handles(self, tdef: TaskDef, built: Built) -> list[TaskHandle[Any]]:
        name, results, queue, due = tdef.name, self.results, built.queue, built.due
        return [TaskHandle(i, name, queue, due, None, results, built.keep) for i in built.ids]

    def _eager_handle(self, built: Built, task: Task) -> TaskHandle[Any]:
        return TaskHandle(
            task.task_id, task.name, task.queue, built.due, task, self.results, built.keep
        )

    def send(
        self, tdef: TaskDef, args: Sequence[Any], kwargs: dict[str, Any], opts: dict[str, Any]
    ) -> TaskHandle[Any]:
        """Enqueue one run of ``tdef`` (or run it now, eagerly)."""
        return self.send_many(tdef, [(args, kwargs)], opts)[0]

    def send_many(
        self, tdef: TaskDef, calls: Sequence[Call], opts: dict[str, Any]
    ) -> list[TaskHandle[Any]]:
        """Enqueue one run per ``(args, kwargs)`` in one backend call."""
        if not tracing.in_span():  # (False at once without OpenTelemetry)
            return self._send_many(tdef, calls, opts, None)
        # A process that traces makes the enqueue a span, and the envelopes carry its context.
        if tracing.tracer() is not None:
            with tracing.publishing(tdef.name, len(calls)) as publish:
                return publish.sent(self._send_many(tdef, calls, opts, publish.headers))
        return self._send_many(tdef, calls, opts, tracing.carrier())

    def _send_many(
        self,
        tdef: TaskDef,
        calls: Sequence[Call],
        opts: dict[str, Any],
        trace: dict[str, str] | None,
    ) -> list[TaskHandle[Any]]:
        built = self._build(tdef, calls, opts, trace)
        if built.eager:
            return [self._eager_handle(built, self.run_eager(data)) for data in built.datas]
        queue, due = built.queue, built.due
        messages = [Message(queue, i, data, due) for i, data in zip(built.ids, built.datas)]
        connection = opts.get("connection") if opts else None
        if connection is None:
            self.backend().enqueue(messages)
        else:  # in the caller's transaction: visible once they commit
            self.backend().enqueue_in_transaction(connection, messages)
        if self.tally is not None:
            self.tally.enqueued(queue, tdef.name, len(built.ids))
        return self._handles(tdef, built)

    async def asend_many(
        self, tdef: TaskDef, calls: Sequence[Call], opts: dict[str, Any]
    ) -> list[TaskHandle[Any]]:
        """:meth:`send_many` for async code: the event loop is never blocked on
        the backend. Eagerly, an async task is awaited here."""
        if opts and opts.get("connection") is not None:
            raise ConfigurationError(
                "connection= enqueues in a transaction of a blocking connection: use "
                ".delay() or .map() with it (run them in a thread from async code)"
            )
        if not tracing.in_span():
            return await self._asend_many(tdef, calls, opts, None)
        if tracing.tracer() is not None:
            with tracing.publishing(tdef.name, len(calls)) as publish:
                return publish.sent(await self._asend_many(tdef, calls, opts, publish.headers))
        return await self._asend_many(tdef, calls, opts, tracing.carrier())

    async def _asend_many(
        self,
        tdef: TaskDef,
        calls: Sequence[Call],
        opts: dict[str, Any],
        trace: dict[str, str] | None,
    ) -> list[TaskHandle[Any]]:
        built = self._build(tdef, calls, opts, trace)
        if built.eager:
            return [self._eager_handle(built, await self.arun_eager(data)) for data in built.datas]
        queue, due = built.queue, built.due
        await self.backend().aenqueue(
            [Message(queue, i, data, due) for i, data in zip(built.ids, built.datas)]
        )
        if self.tally is not None:
            self.tally.enqueued(queue, tdef.name, len(built.ids))
        return self._handles(tdef, built)

    # -- eager -----------------------------------------------------------------
    def run_eager(
        self, data: bytes, on_dead: Callable[[Task, Outcome], None] | None = None
    ) -> Task:
        """Run a payload here until it succeeds or dies; return the finished Task.

        The payload round-trips through the task class, so eager mode fails
        exactly where a worker would. Retries run at once: eager mode never
        sleeps a backoff. A final failure raises the task's own exception; a
        payload that cannot run raises :class:`~gatorapp.errors.Rejected`.
        """
        registry = self.registry
        task, tdef = registry.decode(data)
        # In a process that traces, each attempt is a CONSUMER span, as on a worker.
        run = self._eager_attempt if tracing.tracer() is None else self._traced_eager_attempt
        while True:
            outcome = run(task, tdef)
            if self._eager_done(task, tdef, outcome, on_dead):
                return task
            task = registry.task_class.deserialize(task.serialize())

    async def arun_eager(self, data: bytes) -> Task:
        """:meth:`run_eager` in async code: an async task is awaited here."""
        registry = self.registry
        task, tdef = registry.decode(data)
        run = self._aeager_attempt if tracing.tracer() is None else self._atraced_eager_attempt
        while True:
            outcome = await run(task, tdef)
            if self._eager_done(task, tdef, outcome, None):
                return task
            task = registry.task_class.deserialize(task.serialize())

    def _eager_attempt(self, task: Task, tdef: TaskDef) -> Outcome:
        registry = self.registry
        hooks = registry.hooks_for(task, tdef)
        if tdef.is_async:
            # (on a loop of its own: outside a loop, asyncio.run; inside
            # one, which cannot be blocked on, on a thread of its own)
            return run_coroutine(run_attempt_async(task, tdef, hooks, registry.max_attempts))
        return run_attempt(task, tdef, hooks, registry.max_attempts)

    async def _aeager_attempt(self, task: Task, tdef: TaskDef) -> Outcome:
        registry = self.registry
        hooks = registry.hooks_for(task, tdef)
        if tdef.is_async:
            return await run_attempt_async(task, tdef, hooks, registry.max_attempts)
        return run_attempt(task, tdef, hooks, registry.max_attempts)

    def _traced_eager_attempt(self, task: Task, tdef: TaskDef) -> Outcome:
        with tracing.consumer(task) as span:
            outcome = self._eager_attempt(task, tdef)
            _finish_span(span, outcome)
            return outcome

    async def _atraced_eager_attempt(self, task: Task, tdef: TaskDef) -> Outcome:
        with tracing.consumer(task) as span:
            outcome = await self._aeager_attempt(task, tdef)
            _finish_span(span, outcome)
            return outcome

    def _eager_done(
        self,
        task: Task,
        tdef: TaskDef,
        outcome: Outcome,
        on_dead: Callable[[Task, Outcome], None] | None,
    ) -> bool:
        """Store what an eager attempt came to; True when it succeeded, False
        to run it again; a final failure raises the task's exception."""
        if outcome.kind == "success":
            if self.results is not None and ttl_of(task.options, tdef.keep):
                record = success(task.result, task.name, task.attempt, self._limit())
                store_final(self.results, task, tdef.keep, record)
            return True
        if outcome.kind == "dead":
            assert outcome.exc is not None
            summary = summarize(outcome.exc)
            record = failure(DEAD, outcome.reason, summary, outcome.error, task.name, task.attempt)
            store_final(self.results, task, tdef.keep, record)
            if on_dead is not None:
                on_dead(task, outcome)
            raise outcome.exc
        return False

    def _limit(self) -> int:
        store = self.results.store() if self.results and self.results.store else None
        return min(MAX_RECORD, store.max_payload) if store is not None else MAX_RECORD


def _finish_span(span: Any, outcome: Outcome) -> None:
    """Say on an eager attempt's span how it ended (see tracing.finish)."""
    summary = summarize(outcome.exc) if outcome.exc is not None else ""
    tracing.finish(span, outcome.kind, summary, outcome.error, outcome.reason)
