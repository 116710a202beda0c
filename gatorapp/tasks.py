"""What ``@app.task`` returns, and the option binders around it.

``TaskFunction`` keeps the function's signature (``ParamSpec``), so
``.delay()`` and ``.options(...).delay()`` are type-checked like a call.
Each enqueues through the app's :class:`~gatorapp.producer.Producer`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload

from .options import check_option_names
from .producer import Call, Producer, TaskHandle
from .registry import TaskDef

P = ParamSpec("P")
R = TypeVar("R")

__all__ = [
    "AsyncTaskFunction",
    "BoundTask",
    "Options",
    "TaskDecorator",
    "TaskFunction",
    "TaskHandle",
]


class BoundTask(Generic[P, R]):
    """A task with enqueue options applied: ``add.options(queue="urgent").delay(2, 3)``."""

    def __init__(self, tfn: TaskFunction[P, R], opts: dict[str, Any]) -> None:
        self.task_function = tfn
        self.opts = opts

    @property
    def tdef(self) -> TaskDef:
        return self.task_function.tdef

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R]:
        return self.task_function.producer.send(self.tdef, args, kwargs, self.opts)

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R]:
        """:meth:`delay` for async code."""
        producer = self.task_function.producer
        return (await producer.asend_many(self.tdef, [(args, kwargs)], self.opts))[0]

    def map(self, items: Iterable[Any]) -> list[TaskHandle[R]]:
        """:meth:`TaskFunction.map` with these options."""
        calls: list[Call] = [((item,), {}) for item in items]
        return self.task_function.producer.send_many(self.tdef, calls, self.opts)

    async def amap(self, items: Iterable[Any]) -> list[TaskHandle[R]]:
        """:meth:`map` for async code."""
        calls: list[Call] = [((item,), {}) for item in items]
        return await self.task_function.producer.asend_many(self.tdef, calls, self.opts)

    def options(self, **opts: Any) -> BoundTask[P, R]:
        return self.task_function.options(**{**self.opts, **opts})


class TaskFunction(Generic[P, R]):
    """A registered task. Calling it runs the function here; ``.delay()`` enqueues."""

    def __init__(self, producer: Producer, tdef: TaskDef) -> None:
        self.producer = producer
        self.tdef = tdef
        self.name = tdef.name
        self.__wrapped__ = tdef.fn
        self.__doc__ = tdef.fn.__doc__
        self.__name__ = getattr(tdef.fn, "__name__", tdef.name)
        self.__qualname__ = getattr(tdef.fn, "__qualname__", tdef.name)
        self.__module__ = getattr(tdef.fn, "__module__", __name__)

    @property
    def queue(self) -> str:
        return self.tdef.queue

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.tdef.fn(*args, **kwargs)  # type: ignore[no-any-return]

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R]:
        """Enqueue one run with the task's default options."""
        return self.producer.send(self.tdef, args, kwargs, {})

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R]:
        """:meth:`delay` for async code: the event loop never waits on the backend."""
        return (await self.producer.asend_many(self.tdef, [(args, kwargs)], {}))[0]

    def options(self, **opts: Any) -> BoundTask[P, R]:
        """Options for one enqueue: queue, retries, delay_by, delay_until,
        on_start, on_success, on_error, is_async, task_id, store_result,
        result_ttl, timeout."""
        check_option_names(opts)
        return BoundTask(self, opts)

    def map(self, items: Iterable[Any]) -> list[TaskHandle[R]]:
        """Enqueue one run per item, each item as the single argument, in one backend call."""
        return self.producer.send_many(self.tdef, [((item,), {}) for item in items], {})

    def starmap(self, items: Iterable[Sequence[Any]]) -> list[TaskHandle[R]]:
        """Enqueue one run per argument tuple, in one backend call."""
        return self.producer.send_many(self.tdef, [(tuple(a), {}) for a in items], {})

    async def amap(self, items: Iterable[Any]) -> list[TaskHandle[R]]:
        """:meth:`map` for async code."""
        return await self.producer.asend_many(self.tdef, [((item,), {}) for item in items], {})

    async def astarmap(self, items: Iterable[Sequence[Any]]) -> list[TaskHandle[R]]:
        """:meth:`starmap` for async code."""
        calls: list[Call] = [(tuple(a), {}) for a in items]
        return await self.producer.asend_many(self.tdef, calls, {})

    def __repr__(self) -> str:
        return f"<task {self.name} queue={self.queue}>"


class AsyncTaskFunction(TaskFunction[P, R]):
    """A registered ``async def`` task: ``R`` is what it returns once awaited,
    so ``.delay(...).get()`` is an ``R``; calling it makes the coroutine."""

    def __call__(  # type: ignore[override]
        self, *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, R]:
        return self.tdef.fn(*args, **kwargs)  # type: ignore[no-any-return]


class TaskDecorator(Protocol):
    """What ``@app.task(...)`` with options returns (typed like ``@app.task``)."""

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> AsyncTaskFunction[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> TaskFunction[P, R]: ...


def bound_options(fn: Any) -> dict[str, Any]:
    """Options bound to ``fn`` itself (``add.options(queue="x")``), else none."""
    return fn.opts if isinstance(fn, BoundTask) else {}


class Options:
    """``with app.options(retries=2) as opts: opts.task(add, 2, 3)`` (Alligator's form)."""

    def __init__(self, producer: Producer, opts: dict[str, Any]) -> None:
        check_option_names(opts)
        self.producer = producer
        self.opts = opts

    def __enter__(self) -> Options:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def task(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> TaskHandle[Any]:
        # Options bound to fn itself (add.options(queue="x")) are more specific: they win.
        tdef = self.producer.registry.definition(fn)
        return self.producer.send(tdef, args, kwargs, {**self.opts, **bound_options(fn)})
