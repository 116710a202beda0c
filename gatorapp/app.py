"""The App: one task registry bound to one backend, and the facade over them.

``App()`` does no I/O: it builds its backend object (checking the URL) but
connects to nothing, so an app can be defined at import time in a web process
and in a worker alike. The work is done by the parts it holds: the
:class:`~gatorapp.registry.Registry` (names to functions), the
:class:`~gatorapp.producer.Producer` (``.delay()``), :mod:`gatorapp.admin`
(by-id operations and dead letters) and, for :meth:`App.drain`, a
:class:`~gatorapp.worker.Worker`.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, ParamSpec, TypeVar, overload

from . import admin
from .backends import Backend, DeadLetter, Message, load_backend
from .backends.base import check_queue_name, masked_url
from .backends.protocols import dead_letters
from .encryption import Cipher
from .envelope import Task, pack
from .errors import ConfigurationError, GatorError, Rejected
from .execution import Outcome, run_attempt
from .options import as_bool, check_option_names
from .producer import Producer
from .registry import Hooks, Registry, TaskDef, qualified_name
from .results import DEFAULT_TTL, Results, check_ttl
from .schedules import Schedule
from .signing import Signer
from .tasks import (
    AsyncTaskFunction,
    Options,
    TaskDecorator,
    TaskFunction,
    TaskHandle,
    bound_options,
)
from .worker import Worker
from .workers import WorkerInfo, list_workers

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_URL = "sqlite:///gatorapp.db"

__all__ = ["App", "default_url", "qualified_name"]


def default_url() -> str:
    """``$GATORAPP_URL``, else ``gatorapp.db`` in the current directory."""
    return os.environ.get("GATORAPP_URL") or DEFAULT_URL


def _pin_sqlite_path(url: str) -> str:
    # Pin a relative path now, so a later chdir cannot move the queue.
    scheme, _, rest = url.partition("://")
    if scheme.lower() == "sqlite" and rest[:1] == "/" and rest[:2] != "//":
        path, _, query = rest[1:].partition("?")
        if path and path != ":memory:":
            return "sqlite:///" + os.path.abspath(path) + (f"?{query}" if query else "")
    return url


def _wants_results(value: Any) -> bool:
    try:
        return as_bool(value, "results")
    except ConfigurationError:
        raise ConfigurationError(
            f"results must be True, False or a store URL (redis://..., sqlite:///...), "
            f"not {value!r}"
        ) from None


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
    :param signing_key: sign every task enqueued (HMAC-SHA256) and refuse, as a
        ``bad_signature`` dead letter, any payload not signed by one of the keys:
        a key, or a list of keys of which the first signs (rotation). Default:
        ``$GATORAPP_SIGNING_KEY`` (comma-separated), else no signing. See
        docs/security.md.
    :param encryption_key: encrypt every task enqueued (AES-GCM, needs
        ``gatorapp[encryption]``) and decrypt what is decoded: a key or a list
        of keys of which the first encrypts. Default:
        ``$GATORAPP_ENCRYPTION_KEY`` (comma-separated), else none.
    :param results: keep task results (docs/results.md): ``True`` in the
        app's backend, a URL (``redis://...``, ``sqlite:///results.db``) in
        another store; default ``False``. Every task then stores its result
        unless ``store_result=False``.
    :param result_ttl: seconds a result is kept (default one day).
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
        signing_key: str | bytes | Sequence[str | bytes] | None = None,
        encryption_key: str | bytes | Sequence[str | bytes] | None = None,
        results: bool | str = False,
        result_ttl: float = DEFAULT_TTL,
    ) -> None:
        if url is not None and not isinstance(url, str):
            raise ConfigurationError(f"backend URL must be a string, not {type(url).__name__}")
        self.url = url or default_url()
        # A five-method client gets the URL exactly as given: it parses it its own
        # way (the seed's SQLite client reads sqlite:///tmp/q.db as /tmp/q.db).
        if backend_class is None or (
            isinstance(backend_class, type) and issubclass(backend_class, Backend)
        ):
            self.url = _pin_sqlite_path(self.url)
        if lease <= 0:
            raise ConfigurationError(f"lease must be > 0 seconds, not {lease!r}")
        if (
            isinstance(max_deliveries, bool)
            or not isinstance(max_deliveries, int)
            or (max_deliveries < 1)
        ):
            raise ConfigurationError(
                f"max_deliveries must be an integer >= 1, not {max_deliveries!r}"
            )
        self.registry = Registry(task_class, max_attempts)
        self.registry.signer = Signer.from_env() if signing_key is None else Signer(signing_key)
        self.registry.cipher = (
            Cipher.from_env() if encryption_key is None else Cipher(encryption_key)
        )
        self.default_queue = check_queue_name(default_queue)
        self.backend_class = backend_class
        self.lease = float(lease)
        self.max_payload = max_payload
        self.max_deliveries = max_deliveries
        self._backend: Backend | None = None
        self._backend_lock = threading.Lock()
        self._schedules: list[Schedule] = []
        self.producer = Producer(
            self.registry, lambda: self.backend, self.check_queue, eager=as_bool(eager, "eager")
        )
        if backend_class is None:
            # Build (never connect) a built-in backend now, so a bad URL or option
            # or a missing driver fails here rather than at the first .delay().
            # A client class given as backend_class is built on first use, in the
            # thread that first uses it (Alligator's clients are thread-bound).
            self.backend  # noqa: B018
            self.default_queue = self.check_queue(default_queue)
        self._result_store: Backend | None = None
        if isinstance(results, str) and "://" in results:
            self._result_store = load_backend(_pin_sqlite_path(results))
            self._check_store(self._result_store, results)
        elif not _wants_results(results):
            return
        elif backend_class is None:
            self._check_store(self.backend, self.url)
        self.producer.result_ttl = check_ttl(result_ttl)
        self.producer.results = Results(
            self._results_store, lambda: self.backend, self._decode_task, self.queues
        )

    @staticmethod
    def _check_store(store: Backend, url: str) -> None:
        if not store.supports_results:
            raise ConfigurationError(
                f"{masked_url(url)} cannot keep results ({type(store).__name__} has no result "
                'store): name one with App(..., results="redis://..." or "sqlite:///results.db")'
            )

    def _results_store(self) -> Backend:
        if self._result_store is not None:
            return self._result_store
        backend = self.backend
        self._check_store(backend, self.url)  # (a client class: known only now)
        return backend

    # -- periodic tasks --------------------------------------------------------
    def periodic(
        self,
        *,
        cron: str | None = None,
        every: float | dt.timedelta | None = None,
        tz: str | None = None,
        lateness: float | dt.timedelta | None = None,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Callable[[Callable[P, R]], TaskFunction[P, R]]:
        """Register a task that workers enqueue on a schedule (docs/periodic.md):
        ``@app.periodic(cron="0 3 * * *", tz="Europe/Berlin")`` or
        ``@app.periodic(every=30)``. It runs with ``args``/``kwargs`` (none by
        default). ``lateness``: how late a missed tick may still run (default
        one period). Other options are ``@app.task``'s (queue, retries, ...);
        the function is an ordinary task too."""

        def register(fn: Callable[P, R]) -> TaskFunction[P, R]:
            tfn: TaskFunction[P, R] = self.task(**options)(fn)
            schedule = Schedule.make(
                tfn.name,
                tfn.queue,
                cron=cron,
                every=every,
                tz=tz,
                lateness=lateness,
                args=tuple(args),
                kwargs=dict(kwargs or {}),
            )
            pack(list(schedule.args))  # arguments msgpack cannot carry: refused now
            pack(schedule.kwargs)
            self._schedules = [s for s in self._schedules if s.name != schedule.name]
            self._schedules.append(schedule)
            return tfn

        return register

    @property
    def schedules(self) -> list[Schedule]:
        """The app's periodic tasks, in the order they were declared."""
        return list(self._schedules)

    def tick_message(self, schedule: Schedule, tick: float) -> Message:
        """The message of one tick of ``schedule`` (its id is the tick's own)."""
        tdef = self.registry.tasks[schedule.name]
        return self.producer.message(
            tdef, schedule.args, schedule.kwargs, schedule.queue, schedule.tick_id(tick)
        )

    def result_store(self) -> Backend | None:
        """Where results are kept, or None when the app keeps none."""
        return None if self.producer.results is None else self._results_store()

    def _decode_task(self, data: bytes) -> Task:
        return self.registry.task_class.deserialize(self.registry.unseal(data))

    def __repr__(self) -> str:
        return f"<gatorapp.App {self.url} tasks={len(self.registry.tasks)}>"

    # -- configuration kept by the parts -----------------------------------------
    @property
    def task_class(self) -> type[Task]:
        return self.registry.task_class

    @property
    def max_attempts(self) -> int:
        return self.registry.max_attempts

    @property
    def eager(self) -> bool:
        return self.producer.eager

    @eager.setter
    def eager(self, value: bool) -> None:
        self.producer.eager = as_bool(value, "eager")

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

    def check_queue(self, queue: str) -> str:
        """A queue name checked by the backend's rules (once the backend exists)."""
        backend = self._backend
        return check_queue_name(queue) if backend is None else backend.check_queue(queue)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
        if self._result_store is not None:
            self._result_store.close()

    # -- registration --------------------------------------------------------
    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> AsyncTaskFunction[P, R]: ...

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
        store_result: bool | None = None,
        result_ttl: float | None = None,
        timeout: float | None = None,
    ) -> TaskDecorator: ...

    def task(self, fn: Any = None, *args: Any, **kwargs: Any) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(queue=..., ...)``.

        ``name`` defaults to ``module.qualname``; producers and workers must
        import the task from the same module so the names match.

        Alligator's ``gator.task(fn, 42)`` enqueued ``fn(42)``; here that is
        ``fn.delay(42)`` once ``fn`` is registered, and both Alligator forms
        are refused with that spelling rather than misread.
        """
        if isinstance(fn, TaskFunction):
            raise ConfigurationError(
                f"{fn.name} is a task already; to enqueue it, call {fn.__name__}.delay(...)"
            )
        if args:
            name = getattr(fn, "__name__", "fn")
            shown = ", ".join(map(repr, args))
            raise ConfigurationError(
                f"app.task({name}, {shown}) is Alligator's enqueue; in gatorapp, register "
                f"with @app.task and enqueue with {name}.delay({shown})"
            )
        if fn is not None:
            return self._register(fn, **kwargs)
        return lambda f: self._register(f, **kwargs)

    def _register(
        self,
        fn: Callable[..., Any],
        *,
        queue: str | None = None,
        store_result: Any = None,
        result_ttl: Any = None,
        **kwargs: Any,
    ) -> TaskFunction[Any, Any]:
        checked = self.default_queue if queue is None else self.check_queue(queue)
        if store_result is not None:
            kwargs["store_result"] = as_bool(store_result, "store_result")
            if kwargs["store_result"] and self.producer.results is None:
                raise ConfigurationError(
                    f"store_result=True on {getattr(fn, '__name__', fn)!r}, but the app keeps "
                    "no results: App(..., results=True)"
                )
        if result_ttl is not None:
            kwargs["result_ttl"] = check_ttl(result_ttl)
            if self.producer.results is None and kwargs.get("store_result") is not False:
                raise ConfigurationError(
                    f"result_ttl on {getattr(fn, '__name__', fn)!r}, but the app keeps no "
                    "results: App(..., results=True)"
                )
        tdef = self.registry.register(fn, queue=checked, **kwargs)
        default = self.producer.result_ttl  # (None: the app keeps no results)
        stores = tdef.store_result if tdef.store_result is not None else default is not None
        tdef.keep = (tdef.result_ttl or default) if stores else None
        kind = AsyncTaskFunction if tdef.is_async else TaskFunction
        tfn: TaskFunction[Any, Any] = kind(self.producer, tdef)
        self.registry.alias(tfn, tdef)
        return tfn

    def hook(self, fn: Callable[..., R] | None = None, *, name: str | None = None) -> Any:
        """Register a hook so tasks can name it in ``.options(on_error=...)``."""
        if fn is None:
            return lambda f: self.hook(f, name=name)
        return self.registry.hook(fn, name)

    @property
    def tasks(self) -> dict[str, TaskDef]:
        """Registered tasks by name (a copy)."""
        return dict(self.registry.tasks)

    def queues(self) -> list[str]:
        """The default queue, then each registered task's queue, in registration order."""
        tasks = self.registry.tasks.values()
        return list(dict.fromkeys([self.default_queue, *(t.queue for t in tasks)]))

    # -- enqueue -------------------------------------------------------------
    def options(self, **opts: Any) -> Options:
        """Options for several enqueues: ``with app.options(...) as opts: opts.task(fn, ...)``."""
        return Options(self.producer, opts)

    def enqueue_many(
        self, task: Any, args_list: Iterable[Sequence[Any]], **opts: Any
    ) -> list[TaskHandle[Any]]:
        """Enqueue many runs of one task in one backend call: one args tuple each."""
        check_option_names(opts)
        calls: list[tuple[Sequence[Any], dict[str, Any]]] = [(tuple(a), {}) for a in args_list]
        # Options bound to the task (add.options(queue="x")) win, as in Options.task.
        merged = {**opts, **bound_options(task)}
        return self.producer.send_many(self.registry.definition(task), calls, merged)

    # -- the steps of a run (public for custom workers) -----------------------
    def decode(self, data: bytes) -> tuple[Task, TaskDef]:
        """Decode a payload and find its registered task, or raise :class:`Rejected`."""
        try:
            self.backend.check_size(data)
        except GatorError as exc:
            raise Rejected("too_large", str(exc)) from None
        return self.registry.decode(data)

    def hooks_for(self, task: Task, tdef: TaskDef) -> Hooks:
        return self.registry.hooks_for(task, tdef)

    def run(self, task: Task, tdef: TaskDef) -> Outcome:
        """One attempt of ``task`` with its hooks."""
        return run_attempt(task, tdef, self.hooks_for(task, tdef), self.max_attempts)

    # -- by id ---------------------------------------------------------------
    def get(self, task_id: str, queue: str | None = None) -> Task | None:
        """Take a waiting task off its queue and run it now, here (as ``is_async=False``).

        Returns the finished Task, or None for an unknown id. A task whose last
        attempt fails goes to the dead letters, then its exception is raised; a
        payload that cannot run goes there too and raises :class:`Rejected`.

        This is Alligator's ``get``, not Celery's ``AsyncResult.get()``: it
        never fetches the result of a task a worker ran (gatorapp keeps no
        results of queued tasks; ``handle.result`` is None for them).
        """
        return admin.run_now(self.producer, self.queues(), task_id, queue)

    def cancel(self, task_id: str, queue: str | None = None) -> Task | None:
        """Remove a waiting task unrun. Returns it, or None for an unknown or running id.
        With results kept, its status becomes ``cancelled`` and ``get()`` raises."""
        return admin.cancel(self.producer, self.queues(), task_id, queue)

    def result(self, task_id: str, queue: str | None = None) -> TaskHandle[Any]:
        """A handle for a task enqueued earlier, from its id alone (a web request
        that kept only the id): ``status()``, ``ready()``, ``get(timeout=)``.
        Without ``queue``, ``status()`` looks in every queue the app knows."""
        if self.producer.results is None:
            raise ConfigurationError("this app keeps no results: App(..., results=True)")
        return TaskHandle(task_id, "", queue or "", None, None, self.producer.results)

    def workers(self) -> list[WorkerInfo]:
        """The app's live workers, as each last reported itself (see
        :mod:`gatorapp.workers`); ``NotAvailable`` where nothing keeps a list."""
        return list_workers(self)

    # -- dead letters --------------------------------------------------------
    def requeue_dead(self, queue: str, task_id: str) -> bool:
        """Move a dead letter back to its queue with its retry budget restored."""
        letter = dead_letters(self.backend).dead_get(queue, task_id)
        return False if letter is None else self.requeue_letter(letter)

    def requeue_letter(self, letter: DeadLetter) -> bool:
        """:meth:`requeue_dead` for a letter already read (e.g. from ``dead_list``)."""
        return admin.requeue_letter(self.producer, letter)

    # -- testing -------------------------------------------------------------
    def drain(self, queues: Sequence[str] | None = None, *, max_tasks: int | None = None) -> int:
        """Run every ready task here and now until the queues have nothing ready.

        Made for tests: enqueue, then ``app.drain()``. Returns attempts run.
        Retries scheduled with a backoff are not waited for.
        """
        # (Not listed among the workers: it runs here, for a moment.)
        worker = Worker(self, queues=queues, max_tasks=max_tasks, burst=True, beat=None)
        worker.run_forever()
        return worker.tasks_complete
