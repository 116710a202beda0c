"""The registry: task names and hook names to the functions a worker may run.

A worker resolves what a payload names here and nowhere else: nothing is
imported because a payload names it. The registry also holds what turns
bytes into a run (the envelope class and the attempt cap), so that a worker
process, eager mode and ``app.get`` decode and run a payload the same way.
It knows no backend and no worker.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tenacity

from .encryption import Cipher, without_key
from .envelope import HOOK_NAMES, Task
from .errors import ConfigurationError, Rejected, UnknownTaskError
from .options import check_timeout
from .signing import Signer, unsigned

#: The default backoff: exponential from 1 s, doubling, capped at 5 minutes,
#: plus up to 1 s of random jitter so retries of many tasks spread out.
DEFAULT_BACKOFF = tenacity.wait_exponential_jitter(initial=1, max=300, jitter=1)

Hooks = dict[str, Callable[..., Any] | None]


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
    #: keep a result record (None: as the app does); for how long (None: the app's TTL)
    store_result: bool | None = None
    result_ttl: float | None = None
    #: seconds its result is kept unless an enqueue says otherwise (worked out
    #: by the app from the two above and its own setting); None: not kept
    keep: float | None = None
    #: seconds an attempt may run (None: no limit); see docs/asyncio.md
    timeout: float | None = None
    #: the decoration hooks by kind, worked out once (empty when there are none)
    hooks: Hooks = field(default_factory=dict)
    #: an ``async def`` task: the worker runs it on its event loop
    is_async: bool = False

    def __post_init__(self) -> None:
        self.hooks = {
            kind: getattr(self, kind) for kind in HOOK_NAMES if getattr(self, kind) is not None
        }
        self.is_async = is_coroutine_function(self.fn)


def is_coroutine_function(fn: Any) -> bool:
    """``async def`` (also behind functools.partial or a callable's ``__call__``)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 (an object's __call__, not callable())
    )


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


def check_retries(value: Any, max_attempts: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"retries must be an integer >= 0, not {value!r}")
    if value >= max_attempts:
        raise ConfigurationError(
            f"retries={value} exceeds the app's limit of {max_attempts} attempts "
            f"(App(max_attempts=...) raises it)"
        )
    return value


class Registry:
    """Registered tasks and hooks, by name.

    :param task_class: the envelope class payloads are decoded with.
    :param max_attempts: hard cap on the attempts of one task.
    """

    def __init__(self, task_class: type[Task] = Task, max_attempts: int = 100) -> None:
        if not isinstance(task_class, type) or not issubclass(task_class, Task):
            raise ConfigurationError("task_class must be a subclass of gatorapp.Task")
        if not isinstance(
            inspect.getattr_static(task_class, "deserialize"), (classmethod, staticmethod)
        ):
            # Called on the class: as a plain method every payload would fail to
            # decode, and every task would land in the dead letters.
            raise ConfigurationError(
                f"{task_class.__name__}.deserialize must be a @classmethod (it builds a "
                "task from bytes, with no task to call it on)"
            )
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be an integer >= 1, not {max_attempts!r}")
        self.task_class = task_class
        self.max_attempts = max_attempts
        self.tasks: dict[str, TaskDef] = {}
        self.hooks: dict[str, Callable[..., Any]] = {}
        self.hook_names: dict[Any, str] = {}
        self._by_fn: dict[Any, TaskDef] = {}
        #: Signs what is enqueued and verifies what is decoded (App(signing_key=...)).
        self.signer: Signer | None = None
        #: Encrypts what is enqueued and decrypts what is decoded (App(encryption_key=...)).
        self.cipher: Cipher | None = None

    # -- registration --------------------------------------------------------
    def register(
        self,
        fn: Callable[..., Any],
        *,
        queue: str,
        name: str | None = None,
        retries: int = 0,
        on_start: Callable[..., Any] | None = None,
        on_success: Callable[..., Any] | None = None,
        on_error: Callable[..., Any] | None = None,
        backoff: Any = None,
        retry_on: Any = None,
        lease: float | None = None,
        store_result: bool | None = None,
        result_ttl: float | None = None,
        timeout: Any = None,
    ) -> TaskDef:
        """Register ``fn`` (its queue name already checked by the caller)."""
        if not callable(fn):
            raise ConfigurationError(f"@app.task needs a function, not {fn!r}")
        name = name or qualified_name(fn)
        existing = self.tasks.get(name)
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
            queue=queue,
            retries=check_retries(retries, self.max_attempts),
            on_start=on_start,
            on_success=on_success,
            on_error=on_error,
            backoff=backoff or DEFAULT_BACKOFF,
            retry_on=retry_on,
            lease=lease,
            store_result=store_result,
            result_ttl=result_ttl,
            timeout=check_timeout(timeout),
        )
        self.tasks[name] = tdef
        self._by_fn[fn] = tdef
        return tdef

    def alias(self, obj: Any, tdef: TaskDef) -> None:
        """Let ``obj`` (e.g. what ``@app.task`` returned) stand for ``tdef``."""
        self._by_fn[obj] = tdef

    def hook(self, fn: Callable[..., Any], name: str | None = None) -> Callable[..., Any]:
        """Register a hook by name, so enqueue options and workers can find it."""
        _check_resolvable(fn, "hook")
        hook_name = name or qualified_name(fn)
        if self.hooks.get(hook_name, fn) is not fn:
            raise ConfigurationError(f"two different hooks registered as {hook_name!r}")
        self.hooks[hook_name] = fn
        self.hook_names[fn] = hook_name
        return fn

    # -- lookups -------------------------------------------------------------
    def definition(self, fn: Any) -> TaskDef:
        """The registration behind a task function, its original function or its name."""
        tdef = getattr(fn, "tdef", None)
        if isinstance(tdef, TaskDef):
            return tdef
        if isinstance(fn, str) and fn in self.tasks:
            return self.tasks[fn]
        try:
            found = self._by_fn.get(fn)
        except TypeError:  # unhashable
            found = None
        if found is None:
            raise UnknownTaskError(
                f"{qualified_name(fn) if callable(fn) else fn!r} is not a registered task of this "
                f"app; decorate it with @app.task"
            )
        return found

    def hook_name(self, kind: str, hook: Any) -> str:
        """The registered name of a hook given by name or as the function."""
        if isinstance(hook, str):
            if hook not in self.hooks:
                raise ConfigurationError(f"{kind} hook {hook!r} is not registered (use @app.hook)")
            return hook
        _check_resolvable(hook, f"{kind} hook")
        hook_name = self.hook_names.get(hook)
        if hook_name is None:
            raise ConfigurationError(
                f"{kind} hook {qualified_name(hook)!r} is not registered with this app: decorate "
                f"it with @app.hook (or pass it to @app.task) so workers can find it by name"
            )
        return hook_name

    def hooks_for(self, task: Task, tdef: TaskDef) -> Hooks:
        """The hooks of one run: enqueue-time choices over the decoration defaults."""
        if task.on_start is None and task.on_success is None and task.on_error is None:
            return tdef.hooks
        return {
            kind: self.hooks[getattr(task, kind)] if getattr(task, kind) else getattr(tdef, kind)
            for kind in HOOK_NAMES
        }

    @property
    def sealing(self) -> bool:
        """Whether stored payloads are signed or encrypted (else they are the
        encoded tasks themselves)."""
        return self.signer is not None or self.cipher is not None

    def seal(self, data: bytes) -> bytes:
        """An encoded task as it is stored: encrypted, then signed, as the
        app's keys say."""
        if self.cipher is not None:
            data = self.cipher.encrypt(data)
        return data if self.signer is None else self.signer.sign(data)

    def unseal(self, data: bytes) -> bytes:
        """The encoded task inside a stored payload; :class:`Rejected`
        (``bad_signature``, ``decrypt_error``) when its signature is missing or
        wrong or it does not decrypt, before any of it is decoded. Both
        envelopes start with 0xc1, a byte msgpack never uses."""
        if self.signer is not None:
            data = self.signer.verify(data)
        elif data[:1] == b"\xc1":
            data = unsigned(data)
        if data[:1] == b"\xc1":
            data = self.cipher.decrypt(data) if self.cipher is not None else without_key(data)
        return data

    def decode(self, data: bytes, max_payload: int | None = None) -> tuple[Task, TaskDef]:
        """Decode a payload and find its registered task, or raise :class:`Rejected`."""
        if max_payload is not None and len(data) > max_payload:
            raise Rejected(
                "too_large", f"encoded task is {len(data)} bytes; the limit is {max_payload}"
            )
        data = self.unseal(data)
        try:
            task = self.task_class.deserialize(data)
        except Exception as exc:  # a custom task class may raise anything
            raise Rejected("decode_error", f"{type(exc).__name__}: {exc}") from None
        if not isinstance(task, Task):
            raise Rejected("decode_error", f"deserialize() returned {type(task).__name__}")
        tdef = self.tasks.get(task.name) if isinstance(task.name, str) else None
        if tdef is None:
            raise Rejected(
                "unknown_task",
                f"task {str(task.name)[:200]!r} is not registered in this app (nothing is imported "
                f"by name; register it with @app.task and requeue)",
            )
        if task.on_start is not None or task.on_success is not None or task.on_error is not None:
            for kind in HOOK_NAMES:
                hook_name = getattr(task, kind)
                if hook_name is not None and hook_name not in self.hooks:
                    raise Rejected("unknown_hook", f"{kind} hook {hook_name!r} is not registered")
        return task, tdef
