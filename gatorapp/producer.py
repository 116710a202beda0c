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
from .execution import Outcome, run_attempt
from .options import as_bool, check_text, run_at
from .registry import Registry, TaskDef, check_retries

R = TypeVar("R")

Call = tuple[Sequence[Any], dict[str, Any]]


class TaskHandle(Generic[R]):
    """What ``.delay()`` returns. ``id`` is the task id; in eager mode
    ``result`` holds the return value and ``task`` the finished Task."""

    __slots__ = ("id", "name", "queue", "run_at", "task")

    def __init__(
        self, task_id: str, name: str, queue: str, run_at: float | None, task: Task | None = None
    ) -> None:
        self.id = task_id
        self.name = name
        self.queue = queue
        self.run_at = run_at
        self.task = task

    @property
    def result(self) -> R | None:
        """The return value of an eager run. None for a queued task, even once a
        worker has run it: gatorapp keeps no results of queued tasks, so None
        does not mean success (``app.get`` does not fetch results either)."""
        return None if self.task is None else self.task.result

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
        extra = {"retries": retries} if retries != tdef.retries else None
        eager = self.eager or not as_bool(opts.get("is_async", True), "is_async")
        due = run_at(opts, time.time())
        return queue, retries, hooks or None, extra, due, eager, task_id

    # -- sending -------------------------------------------------------------
    def send(
        self, tdef: TaskDef, args: Sequence[Any], kwargs: dict[str, Any], opts: dict[str, Any]
    ) -> TaskHandle[Any]:
        """Enqueue one run of ``tdef`` (or run it now, eagerly)."""
        queue, retries, hooks, extra, due, eager, task_id = self._choices(tdef, opts)
        task_id = task_id or new_task_id()
        data = self._encode(tdef, task_id, args, kwargs, queue, retries, hooks, extra)
        registry = self.registry
        if registry.sealing:
            data = registry.seal(data)
        backend = self.backend()
        if eager:
            backend.check_size(data)  # what the backend would refuse, eager mode refuses too
            task = self.run_eager(data)
            return TaskHandle(task.task_id, task.name, task.queue, due, task)
        backend.enqueue([Message(queue, task_id, data, due)])
        return TaskHandle(task_id, tdef.name, queue, due)

    def send_many(
        self, tdef: TaskDef, calls: Sequence[Call], opts: dict[str, Any]
    ) -> list[TaskHandle[Any]]:
        """Enqueue one run per ``(args, kwargs)`` in one backend call."""
        queue, retries, hooks, extra, due, eager, task_id = self._choices(tdef, opts)
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
                handles.append(TaskHandle(task.task_id, task.name, task.queue, due, task))
            return handles
        backend.enqueue([Message(queue, i, data, due) for i, data in zip(ids, datas)])
        name = tdef.name
        return [TaskHandle(i, name, queue, due) for i in ids]

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
                return task
            if outcome.kind == "dead":
                assert outcome.exc is not None
                if on_dead is not None:
                    on_dead(task, outcome)
                raise outcome.exc
            task = registry.task_class.deserialize(task.serialize())
