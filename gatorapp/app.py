"""The App: a task registry bound to one backend.

``App()`` does no I/O: it builds its backend object (checking the URL) but
connects to nothing, so an app can be defined at import time in a web process
and in a worker alike. What ``@app.task`` returns lives in :mod:`.taskfn`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ParamSpec, TypeVar, overload

from .backends import Backend, DeadLetter, Message, load_backend
from .backends.base import check_queue_name
from .errors import ConfigurationError, DecodeError, GatorError, Rejected, UnknownTaskError
from .execution import DEFAULT_BACKOFF, Outcome, TaskDef, run_attempt
from .options import as_bool, check_option_names, check_retries, run_at
from .task import CANCELED, HOOK_NAMES, Task
from .taskfn import BoundTask, Options, TaskFunction, TaskHandle

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("gatorapp")

DEFAULT_URL = "sqlite:///gatorapp.db"


def default_url() -> str:
    """``$GATORAPP_URL``, else ``gatorapp.db`` in the current directory."""
    return os.environ.get("GATORAPP_URL") or DEFAULT_URL


def _main_module_name() -> str:
    """The importable name of the script run as ``__main__``.

    A task defined in ``python myproj.py`` is registered as ``myproj.add``,
    the same name a worker started with ``-A myproj`` gives it.
    """
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return str(spec.name).removesuffix(".__main__")
    path = getattr(main, "__file__", None)
    return os.path.splitext(os.path.basename(path))[0] if path else "__main__"


def qualified_name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "?"
    if module == "__main__":
        module = _main_module_name()
    return f"{module}.{getattr(fn, '__qualname__', repr(fn))}"


def _check_resolvable(fn: Any, what: str) -> None:
    if not callable(fn):
        raise ConfigurationError(f"{what} must be callable, not {fn!r}")
    qual = getattr(fn, "__qualname__", "")
    if "<lambda>" in qual or "<locals>" in qual:
        raise ConfigurationError(
            f"{what} {qual!r} is a lambda or nested function; a worker can only find "
            f"module-level functions by name. Define it at module level."
        )


class App:
    """One task registry and one backend.

    :param url: backend URL; default ``$GATORAPP_URL`` or ``sqlite:///gatorapp.db``.
    :param default_queue: queue of tasks that name none.
    :param task_class: Task subclass used to encode and decode payloads.
    :param backend_class: a Backend subclass, or an Alligator-style client class.
    :param lease: seconds a worker holds a task before another may take it
        over, unless the worker's heartbeat renews it (default 30).
    :param max_attempts: hard cap on attempts of one task, retries granted by
        ``on_error`` hooks included (default 100).
    :param max_deliveries: a task handed out this many times without an outcome
        (its workers kept dying) goes to the dead letters as ``worker_lost``.
    :param eager: run every ``.delay()`` inline, as with ``is_async=False``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        default_queue: str = "default",
        task_class: type[Task] = Task,
        backend_class: type | None = None,
        lease: float = 30.0,
        max_payload: int | None = None,
        max_attempts: int = 100,
        max_deliveries: int = 5,
        eager: bool = False,
    ) -> None:
        if url is not None and not isinstance(url, str):
            raise ConfigurationError(f"backend URL must be a string, not {type(url).__name__}")
        self.url = url or default_url()
        # A five-method client gets the URL exactly as given: it parses it its own
        # way (the seed's SQLite client reads sqlite:///tmp/q.db as /tmp/q.db).
        own_backend = backend_class is None or (
            isinstance(backend_class, type) and issubclass(backend_class, Backend)
        )
        scheme, _, rest = self.url.partition("://")
        if own_backend and scheme.lower() == "sqlite" and rest[:1] == "/" and rest[:2] != "//":
            # Pin a relative path now, so a later chdir cannot move the queue.
            path, _, query = rest[1:].partition("?")
            if path and path != ":memory:":
                self.url = "sqlite:///" + os.path.abspath(path) + (f"?{query}" if query else "")
        if not isinstance(task_class, type) or not issubclass(task_class, Task):
            raise ConfigurationError("task_class must be a subclass of gatorapp.Task")
        if lease <= 0:
            raise ConfigurationError(f"lease must be > 0 seconds, not {lease!r}")
        for name, value in (("max_attempts", max_attempts), ("max_deliveries", max_deliveries)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be an integer >= 1, not {value!r}")
        self.default_queue = check_queue_name(default_queue)
        self.task_class = task_class
        self.backend_class = backend_class
        self.lease = float(lease)
        self.max_payload = max_payload
        self.max_attempts = max_attempts
        self.max_deliveries = max_deliveries
        self.eager = as_bool(eager, "eager")
        self._backend: Backend | None = None
        self._backend_lock = threading.Lock()
        self._tasks: dict[str, TaskDef] = {}
        self._by_fn: dict[Any, TaskDef] = {}
        self._hooks: dict[str, Callable[..., Any]] = {}
        self._hook_names: dict[Any, str] = {}
        if backend_class is None:
            # Build (never connect) a built-in backend now, so a bad URL or option
            # or a missing driver fails here rather than at the first .delay().
            # A client class given as backend_class is built on first use, in the
            # thread that first uses it (Alligator's clients are thread-bound).
            self.backend  # noqa: B018
            self.default_queue = self._queue_name(default_queue)

    def __repr__(self) -> str:
        return f"<gatorapp.App {self.url} tasks={len(self._tasks)}>"

    # -- backend -------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        """The backend: built (not connected) with the App, or on first use for a
        client class given as ``backend_class``."""
        backend = self._backend
        if backend is None:
            # Threads of a web server may enqueue at once on a fresh app: build
            # one backend only, or tasks go to a store that is then dropped.
            with self._backend_lock:
                backend = self._backend
                if backend is None:
                    opts: dict[str, Any] = {}
                    if self.max_payload is not None:
                        opts["max_payload"] = self.max_payload
                    backend = self._backend = load_backend(self.url, self.backend_class, **opts)
        return backend

    def _queue_name(self, queue: str) -> str:
        # The backend's own rules once it exists (a client class is built late).
        backend = self._backend
        return check_queue_name(queue) if backend is None else backend.check_queue(queue)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()

    # -- registration --------------------------------------------------------
    @overload
    def task(self, fn: Callable[P, R]) -> TaskFunction[P, R]: ...

    @overload
    def task(
        self,
        fn: None = None,
        *,
        name: str | None = None,
        queue: str | None = None,
        retries: int = 0,
        on_start: Callable[[Task], Any] | None = None,
        on_success: Callable[[Task, Any], Any] | None = None,
        on_error: Callable[[Task, BaseException], Any] | None = None,
        backoff: Any = None,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
        lease: float | None = None,
    ) -> Callable[[Callable[P, R]], TaskFunction[P, R]]: ...

    def task(self, fn: Any = None, **kwargs: Any) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(queue=..., ...)``.

        ``name`` defaults to ``module.qualname``; producers and workers must
        import the task from the same module so the names match.
        """
        if fn is not None:
            return self._register(fn, **kwargs)
        return lambda f: self._register(f, **kwargs)

    def _register(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        queue: str | None = None,
        retries: int = 0,
        on_start: Callable[..., Any] | None = None,
        on_success: Callable[..., Any] | None = None,
        on_error: Callable[..., Any] | None = None,
        backoff: Any = None,
        retry_on: Any = None,
        lease: float | None = None,
    ) -> TaskFunction[Any, Any]:
        if not callable(fn):
            raise ConfigurationError(f"@app.task needs a function, not {fn!r}")
        name = name or qualified_name(fn)
        existing = self._tasks.get(name)
        if existing is not None and qualified_name(existing.fn) != qualified_name(fn):
            raise ConfigurationError(f"two different functions registered as task {name!r}")
        if retry_on is not None:
            retry_on = retry_on if isinstance(retry_on, tuple) else (retry_on,)
            if not all(isinstance(e, type) and issubclass(e, BaseException) for e in retry_on):
                raise ConfigurationError("retry_on must be an exception class or a tuple of them")
        if backoff is not None and not callable(backoff):
            raise ConfigurationError(
                "backoff must be a tenacity wait strategy (e.g. wait_exponential())"
            )
        if lease is not None and lease <= 0:
            raise ConfigurationError(f"lease must be > 0 seconds, not {lease!r}")
        for hook in (on_start, on_success, on_error):
            if hook is not None:
                self.hook(hook)  # so enqueue-time options can name it too
        tdef = TaskDef(
            name=name,
            fn=fn,
            queue=self.default_queue if queue is None else self._queue_name(queue),
            retries=check_retries(retries, self.max_attempts),
            on_start=on_start,
            on_success=on_success,
            on_error=on_error,
            backoff=backoff or DEFAULT_BACKOFF,
            retry_on=retry_on,
            lease=lease,
        )
        self._tasks[name] = tdef
        self._by_fn[fn] = tdef
        tfn: TaskFunction[Any, Any] = TaskFunction(self, tdef)
        self._by_fn[tfn] = tdef
        return tfn

    def hook(self, fn: Callable[..., R] | None = None, *, name: str | None = None) -> Any:
        """Register a hook so tasks can name it in ``.options(on_error=...)``."""
        if fn is None:
            return lambda f: self.hook(f, name=name)
        _check_resolvable(fn, "hook")
        hook_name = name or qualified_name(fn)
        if self._hooks.get(hook_name, fn) is not fn:
            raise ConfigurationError(f"two different hooks registered as {hook_name!r}")
        self._hooks[hook_name] = fn
        self._hook_names[fn] = hook_name
        return fn

    @property
    def tasks(self) -> dict[str, TaskDef]:
        """Registered tasks by name (read-only view)."""
        return dict(self._tasks)

    def queues(self) -> list[str]:
        """The default queue, then each registered task's queue, in registration order."""
        return list(dict.fromkeys([self.default_queue, *(t.queue for t in self._tasks.values())]))

    def _tdef_for(self, fn: Any) -> TaskDef:
        if isinstance(fn, (TaskFunction, BoundTask)):
            return fn.tdef if isinstance(fn, TaskFunction) else fn._tfn.tdef
        if isinstance(fn, str) and fn in self._tasks:
            return self._tasks[fn]
        tdef = self._by_fn.get(fn)
        if tdef is None:
            raise UnknownTaskError(
                f"{qualified_name(fn) if callable(fn) else fn!r} is not a registered task of this "
                f"app; decorate it with @app.task"
            )
        return tdef

    def _resolve_hook_name(self, kind: str, hook: Any) -> str:
        if isinstance(hook, str):
            if hook not in self._hooks:
                raise ConfigurationError(f"{kind} hook {hook!r} is not registered (use @app.hook)")
            return hook
        _check_resolvable(hook, f"{kind} hook")
        hook_name = self._hook_names.get(hook)
        if hook_name is None:
            raise ConfigurationError(
                f"{kind} hook {qualified_name(hook)!r} is not registered with this app: decorate "
                f"it with @app.hook (or pass it to @app.task) so workers can find it by name"
            )
        return hook_name

    # -- enqueue -------------------------------------------------------------
    def options(self, **opts: Any) -> Options:
        """Options for several enqueues: ``with app.options(...) as opts: opts.task(fn, ...)``."""
        return Options(self, opts)

    def _build(
        self, tdef: TaskDef, args: Sequence[Any], kwargs: dict[str, Any], opts: dict[str, Any]
    ) -> tuple[Task, bytes, float | None, bool]:
        queue = tdef.queue if opts.get("queue") is None else self._queue_name(opts["queue"])
        retries = tdef.retries if opts.get("retries") is None else opts["retries"]
        task_id = opts.get("task_id")
        if task_id is not None and not isinstance(task_id, str):
            # the envelope carries string ids only: a worker would refuse any other
            raise ConfigurationError(f"task_id must be a string, not {type(task_id).__name__}")
        task = self.task_class(
            tdef.name,
            list(args),
            kwargs,
            task_id=task_id,
            queue=queue,
            retries=check_retries(retries, self.max_attempts),
            # the budget chosen here, for requeue_dead to restore
            options={"retries": retries} if retries != tdef.retries else None,
        )
        for kind in HOOK_NAMES:
            if opts.get(kind) is not None:
                setattr(task, kind, self._resolve_hook_name(kind, opts[kind]))
        eager = self.eager or not as_bool(opts.get("is_async", True), "is_async")
        due = run_at(opts, time.time())
        data = task.serialize()
        if not isinstance(data, bytes):
            raise ConfigurationError(f"{type(task).__name__}.serialize() must return bytes")
        # The size is checked once, before any I/O: by backend.enqueue, or by
        # decode in eager mode.
        return task, data, due, eager

    def _submit(
        self, tdef: TaskDef, args: Sequence[Any], kwargs: dict[str, Any], opts: dict[str, Any]
    ) -> TaskHandle[Any]:
        task, data, due, eager = self._build(tdef, args, kwargs, opts)
        if eager:
            return TaskHandle(self._run_eager(data), due, eager=True)
        self.backend.enqueue([Message(task.queue, task.task_id, data, due)])
        return TaskHandle(task, due, eager=False)

    def _submit_many(
        self,
        tdef: TaskDef,
        calls: Sequence[tuple[Sequence[Any], dict[str, Any]]],
        opts: dict[str, Any],
    ) -> list[TaskHandle[Any]]:
        built = [self._build(tdef, a, k, opts) for a, k in calls]
        if built and built[0][3]:
            return [TaskHandle(self._run_eager(data), due, eager=True) for _, data, due, _ in built]
        self.backend.enqueue([Message(t.queue, t.task_id, d, due) for t, d, due, _ in built])
        return [TaskHandle(t, due, eager=False) for t, _, due, _ in built]

    def enqueue_many(
        self, task: Any, args_list: Iterable[Sequence[Any]], **opts: Any
    ) -> list[TaskHandle[Any]]:
        """Enqueue many runs of one task in one backend call: one args tuple each."""
        check_option_names(opts)
        # Options bound to the task (add.options(queue="x")) win, as in Options.task.
        bound: dict[str, Any] = task._opts if isinstance(task, BoundTask) else {}
        calls: list[tuple[Sequence[Any], dict[str, Any]]] = [(tuple(a), {}) for a in args_list]
        return self._submit_many(self._tdef_for(task), calls, {**opts, **bound})

    # -- running -------------------------------------------------------------
    def decode(self, data: bytes) -> tuple[Task, TaskDef]:
        """Decode a payload and find its registered task, or raise :class:`Rejected`."""
        try:
            self.backend.check_size(data)
        except GatorError as exc:
            raise Rejected("too_large", str(exc)) from None
        try:
            task = self.task_class.deserialize(data)
        except Exception as exc:  # a custom task class may raise anything
            raise Rejected("decode_error", f"{type(exc).__name__}: {exc}") from None
        if not isinstance(task, Task):
            raise Rejected("decode_error", f"deserialize() returned {type(task).__name__}")
        tdef = self._tasks.get(task.name) if isinstance(task.name, str) else None
        if tdef is None:
            raise Rejected(
                "unknown_task",
                f"task {str(task.name)[:200]!r} is not registered in this app (nothing is imported "
                f"by name; register it with @app.task and requeue)",
            )
        for kind in HOOK_NAMES:
            hook_name = getattr(task, kind)
            if hook_name is not None and hook_name not in self._hooks:
                raise Rejected("unknown_hook", f"{kind} hook {hook_name!r} is not registered")
        return task, tdef

    def hooks_for(self, task: Task, tdef: TaskDef) -> dict[str, Callable[..., Any] | None]:
        return {
            kind: self._hooks[getattr(task, kind)] if getattr(task, kind) else getattr(tdef, kind)
            for kind in HOOK_NAMES
        }

    def run(self, task: Task, tdef: TaskDef) -> Outcome:
        """One attempt of ``task`` with its hooks."""
        return run_attempt(task, tdef, self.hooks_for(task, tdef), self.max_attempts)

    def _run_eager(
        self, data: bytes, on_dead: Callable[[Task, Outcome], None] | None = None
    ) -> Task:
        # Round-trip through the task class, so eager mode fails exactly where a
        # worker would. Retries run at once: eager mode never sleeps a backoff.
        task, tdef = self.decode(data)
        while True:
            outcome = self.run(task, tdef)
            if outcome.kind == "success":
                return task
            if outcome.kind == "dead":
                assert outcome.exc is not None
                if on_dead is not None:
                    on_dead(task, outcome)
                raise outcome.exc
            task = self.task_class.deserialize(task.serialize())

    # -- by id ---------------------------------------------------------------
    def _find(self, task_id: str, queue: str | None) -> tuple[str, bytes] | None:
        queues = (
            [queue] if queue else list(dict.fromkeys(self.queues() + self.backend.known_queues()))
        )
        for q in queues:
            data = self.backend.take(q, task_id)
            if data is not None:
                return q, data
        # "Not found" may only mean "not findable here": say so.
        why = self.backend.unsupported.get("take") or (
            None if queue else self.backend.unsupported.get("known_queues")
        )
        if why:
            log.warning("task %s not found; note that %s", task_id, why)
        return None

    def get(self, task_id: str, queue: str | None = None) -> Task | None:
        """Take a waiting task off its queue and run it now, here (as ``is_async=False``).

        Returns the finished Task, or None for an unknown id. A task whose last
        attempt fails goes to the dead letters, then its exception is raised; a
        payload that cannot run goes there too and raises :class:`Rejected`.
        """
        found = self._find(task_id, queue)
        if found is None:
            return None
        q, data = found

        def bury(task: Task, outcome: Outcome) -> None:
            self.backend.dead_add(q, task_id, data, outcome.reason, outcome.error)

        try:
            return self._run_eager(data, on_dead=bury)
        except Rejected as exc:
            self.backend.dead_add(q, task_id, data, exc.reason, exc.error)
            raise

    def cancel(self, task_id: str, queue: str | None = None) -> Task | None:
        """Remove a waiting task unrun. Returns it, or None for an unknown or running id."""
        found = self._find(task_id, queue)
        if found is None:
            return None
        q, data = found
        try:
            task = self.task_class.deserialize(data)
        except Exception:
            task = Task("?", task_id=task_id, queue=q)
        task.status = CANCELED
        return task

    # -- dead letters --------------------------------------------------------
    def requeue_dead(self, queue: str, task_id: str) -> bool:
        """Move a dead letter back to its queue with its retry budget restored."""
        letter = self.backend.dead_get(queue, task_id)
        return False if letter is None else self.requeue_letter(letter)

    def requeue_letter(self, letter: DeadLetter) -> bool:
        """:meth:`requeue_dead` for a letter already read (e.g. from ``dead_list``)."""
        data: bytes | None = None
        try:
            task, tdef = self.decode(letter.data)
            # The budget chosen at enqueue (kept in the envelope's opts), else the
            # task's default; attempts count afresh so max_attempts does not
            # cut the restored budget short.
            budget = task.options.get("retries")
            if isinstance(budget, int) and not isinstance(budget, bool):
                task.retries = budget if 0 <= budget < self.max_attempts else tdef.retries
            else:
                task.retries = tdef.retries
            task.attempt = 0
            data = task.serialize()
        except (Rejected, DecodeError):
            pass  # requeue as it was: a later deploy may know how to run it
        return self.backend.dead_requeue(letter.queue, letter.task_id, data)

    # -- testing -------------------------------------------------------------
    def drain(self, queues: Sequence[str] | None = None, *, max_tasks: int | None = None) -> int:
        """Run every ready task here and now until the queues have nothing ready.

        Made for tests: enqueue, then ``app.drain()``. Returns attempts run.
        Retries scheduled with a backoff are not waited for.
        """
        from .worker import Worker

        worker = Worker(self, queues=queues, max_tasks=max_tasks, burst=True)
        worker.run_forever()
        return worker.tasks_complete
