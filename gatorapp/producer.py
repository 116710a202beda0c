"""The producer: what ``.delay()`` does.

It builds the envelope, checks it, and stores it with one backend call
(``send``), or many of them with one call (``send_many``); in eager mode it
runs the task here instead, through the same code a worker uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from .backends.base import Backend, Message
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
from .options import as_bool, check_text, run_at
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

R = TypeVar("R")

Call = tuple[Sequence[Any], dict[str, Any]]


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
        reader = self._reader()
        if not self.stores:
            raise ConfigurationError(
                f"task {self.name} {self.id} stores no result (it was enqueued with "
                "store_result=False): there is nothing to wait for"
            )
        value: R = reader.value(self.id, reader.wait(self.id, timeout))
        return value

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
    def send(
        self, tdef: TaskDef, args: Sequence[Any], kwargs: dict[str, Any], opts: dict[str, Any]
    ) -> TaskHandle[Any]:
        """Enqueue one run of ``tdef`` (or run it now, eagerly)."""
        queue, retries, hooks, extra, due, eager, task_id = self._choices(tdef, opts)
        keep = ttl_of(extra, tdef.keep) is not None
        task_id = task_id or new_task_id()
        data = self._encode(tdef, task_id, args, kwargs, queue, retries, hooks, extra)
        registry = self.registry
        if registry.sealing:
            data = registry.seal(data)
        backend = self.backend()
        if eager:
            backend.check_size(data)  # what the backend would refuse, eager mode refuses too
            task = self.run_eager(data)
            return TaskHandle(task.task_id, task.name, task.queue, due, task, self.results, keep)
        backend.enqueue([Message(queue, task_id, data, due)])
        return TaskHandle(task_id, tdef.name, queue, due, None, self.results, keep)

    def send_many(
        self, tdef: TaskDef, calls: Sequence[Call], opts: dict[str, Any]
    ) -> list[TaskHandle[Any]]:
        """Enqueue one run per ``(args, kwargs)`` in one backend call."""
        queue, retries, hooks, extra, due, eager, task_id = self._choices(tdef, opts)
        keep = ttl_of(extra, tdef.keep) is not None
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
        backend = self.backend()
        if eager:
            for data in datas:
                backend.check_size(data)
            handles = []
            for data in datas:
                task = self.run_eager(data)
                handles.append(
                    TaskHandle(task.task_id, task.name, task.queue, due, task, self.results, keep)
                )
            return handles
        backend.enqueue([Message(queue, i, data, due) for i, data in zip(ids, datas)])
        name, results = tdef.name, self.results
        return [TaskHandle(i, name, queue, due, None, results, keep) for i in ids]

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
        while True:
            outcome = run_attempt(task, tdef, registry.hooks_for(task, tdef), registry.max_attempts)
            if outcome.kind == "success":
                if self.results is not None and ttl_of(task.options, tdef.keep):
                    record = success(task.result, task.name, task.attempt, self._limit())
                    store_final(self.results, task, tdef.keep, record)
                return task
            if outcome.kind == "dead":
                assert outcome.exc is not None
                summary = summarize(outcome.exc)
                record = failure(
                    DEAD, outcome.reason, summary, outcome.error, task.name, task.attempt
                )
                store_final(self.results, task, tdef.keep, record)
                if on_dead is not None:
                    on_dead(task, outcome)
                raise outcome.exc
            task = registry.task_class.deserialize(task.serialize())

    def _limit(self) -> int:
        store = self.results.store() if self.results and self.results.store else None
        return min(MAX_RECORD, store.max_payload) if store is not None else MAX_RECORD
