"""What ``@app.task`` returns, and the handles and option binders around it.

``TaskFunction`` keeps the function's signature (``ParamSpec``), so
``.delay()`` and ``.options(...).delay()`` are type-checked like a call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from .execution import TaskDef
from .options import check_option_names
from .task import Task

if TYPE_CHECKING:
    from .app import App

P = ParamSpec("P")
R = TypeVar("R")


class TaskHandle(Generic[R]):
    """What ``.delay()`` returns. ``id`` is the task id; in eager mode
    ``result`` holds the return value and ``task`` the finished Task."""

    __slots__ = ("id", "name", "queue", "run_at", "task")

    def __init__(self, task: Task, run_at: float | None, eager: bool) -> None:
        self.id: str = task.task_id
        self.name = task.name
        self.queue = task.queue
        self.run_at = run_at
        self.task: Task | None = task if eager else None

    @property
    def result(self) -> R | None:
        """The return value of an eager run; None for a queued task (gatorapp keeps no results)."""
        return None if self.task is None else self.task.result

    def __repr__(self) -> str:
        return f"<TaskHandle {self.name} id={self.id} queue={self.queue}>"


class BoundTask(Generic[P, R]):
    """A task with enqueue options applied: ``add.options(queue="urgent").delay(2, 3)``."""

    def __init__(self, tfn: TaskFunction[P, R], opts: dict[str, Any]) -> None:
        self._tfn = tfn
        self._opts = opts

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> TaskHandle[R]:
        return self._tfn.app._submit(self._tfn.tdef, args, kwargs, self._opts)

    def options(self, **opts: Any) -> BoundTask[P, R]:
        return self._tfn.options(**{**self._opts, **opts})


class TaskFunction(Generic[P, R]):
    """A registered task. Calling it runs the function here; ``.delay()`` enqueues."""

    def __init__(self, app: App, tdef: TaskDef) -> None:
        self.app = app
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
        return self.app._submit(self.tdef, args, kwargs, {})

    def options(self, **opts: Any) -> BoundTask[P, R]:
        """Options for one enqueue: queue, retries, delay_by, delay_until,
        on_start, on_success, on_error, is_async, task_id."""
        check_option_names(opts)
        return BoundTask(self, opts)

    def map(self, items: Iterable[Any]) -> list[TaskHandle[R]]:
        """Enqueue one run per item, each item as the single argument, in one backend call."""
        return self.app._submit_many(self.tdef, [((item,), {}) for item in items], {})

    def starmap(self, items: Iterable[Sequence[Any]]) -> list[TaskHandle[R]]:
        """Enqueue one run per argument tuple, in one backend call."""
        return self.app._submit_many(self.tdef, [(tuple(a), {}) for a in items], {})

    def __repr__(self) -> str:
        return f"<task {self.name} queue={self.queue}>"


class Options:
    """``with app.options(retries=2) as opts: opts.task(add, 2, 3)`` (Alligator's form)."""

    def __init__(self, app: App, opts: dict[str, Any]) -> None:
        check_option_names(opts)
        self.app = app
        self.opts = opts

    def __enter__(self) -> Options:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def task(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> TaskHandle[Any]:
        # Options bound to fn itself (add.options(queue="x")) are more specific: they win.
        bound: dict[str, Any] = fn._opts if isinstance(fn, BoundTask) else {}
        return self.app._submit(self.app._tdef_for(fn), args, kwargs, {**self.opts, **bound})
