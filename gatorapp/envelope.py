"""The task envelope: what travels through a backend, as msgpack bytes.

A :class:`Task` is one invocation of a registered function: its id, the
registered name (never a module path: workers look names up in the app's
registry and import nothing a payload names), arguments, the retries left and
the hooks chosen at enqueue time. Subclass it and override
:meth:`Task.serialize` / :meth:`Task.deserialize` to change the wire format
(compression, encryption); ``App(task_class=...)`` makes both the producer and
the worker use the subclass.

Envelope version 1 is a msgpack map::

    {"v": 1, "id": str, "name": str, "queue": str, "args": list, "kwargs": map,
     "retries": int, "attempt": int, "hooks": map, "opts": map}

Unknown keys are ignored, so a newer producer can add fields without breaking
older workers; missing optional keys take their defaults. ``opts`` carries
what an enqueue chose for the worker: ``retries``, ``timeout``, ``result``
(see :mod:`gatorapp.results`) and ``trace`` (see :mod:`gatorapp.tracing`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, ClassVar

import msgpack

from .errors import DecodeError, SerializationError

ENVELOPE_VERSION = 1
HOOK_NAMES = ("on_start", "on_success", "on_error")

# Statuses a Task passes through in this process (not stored in the backend).
WAITING = "waiting"
RUNNING = "running"
SUCCESS = "success"
RETRYING = "retrying"
FAILED = "failed"
CANCELED = "canceled"


def new_task_id() -> str:
    """A random 128-bit id as 32 hex digits (uuid4's width, from the OS's generator)."""
    return os.urandom(16).hex()


def new_task_ids(n: int) -> list[str]:
    """``n`` ids for one bulk enqueue: a random 96-bit prefix, then a counter,
    so they sort in the order of the call (backends that order equal due
    times by id keep the call's order)."""
    prefix = os.urandom(12).hex()
    return [f"{prefix}{i:08x}" for i in range(n)]


def _no_ext(code: int, data: bytes) -> Any:
    # gatorapp never writes msgpack extension types; a payload carrying one was
    # not written by us, so refuse it instead of handing a foreign object to a task.
    raise DecodeError(f"msgpack extension type {code} is not allowed in a task payload")


MAX_DEPTH = 64  # nesting allowed in a payload; deeper is refused on both sides
_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})
_EMPTY: dict[str, Any] = {}  # (never handed out: read-only defaults)
_NO_ARGS: list[Any] = []


def _check_plain(value: Any, depth: int = 0) -> None:
    """Reject anything that is not a plain data value.

    On decode, msgpack turns its timestamp extension into ``msgpack.Timestamp``
    without calling ``ext_hook``, so the walk is the only place that sees it.
    On encode, :func:`pack` runs the same walk so that nothing is enqueued that
    a worker would refuse (a map with int keys, nesting past the limit).
    """
    # Exact type checks first: this runs on every .delay(), and most values
    # are scalars (subclasses such as enum.IntEnum take the slower path).
    if type(value) in _SCALARS:
        return
    if isinstance(value, (str, int, float, bool, bytes, bytearray, memoryview)) or value is None:
        return
    if depth > MAX_DEPTH:
        raise DecodeError(f"payload nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, (list, tuple)):
        for item in value:
            if type(item) not in _SCALARS:
                _check_plain(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if type(key) is not str and not isinstance(key, (str, bytes)):
                # the decoder's strict_map_key refuses any other key type
                raise DecodeError(f"map keys must be str or bytes, not {type(key).__name__}")
            if type(item) not in _SCALARS:
                _check_plain(item, depth + 1)
    else:
        raise DecodeError(f"payload holds a {type(value).__name__}, not plain data")


def _encode_error(exc: Exception) -> SerializationError:
    return SerializationError(
        f"task arguments must be msgpack-encodable (str, bytes, int, float, bool, None, "
        f"list, dict with str keys): {exc}"
    )


_LOCAL = threading.local()
_KEEP_BUFFER = 256 * 1024


def _packer() -> msgpack.Packer:
    """This thread's Packer: msgpack.packb builds one per call, which costs more
    than packing a small value (a Packer is not shared: it has a buffer)."""
    try:
        packer: msgpack.Packer = _LOCAL.packer
    except AttributeError:
        packer = _LOCAL.packer = msgpack.Packer(use_bin_type=True, datetime=False)
    return packer


def pack(data: Any) -> bytes:
    """msgpack-encode ``data``; a value msgpack cannot encode, or that :func:`unpack`
    and the envelope checks would refuse, is a SerializationError."""
    try:
        packed = _packb(data)
        if type(data) not in _SCALARS:  # (most return values are scalars)
            _check_plain(data)
    except (TypeError, ValueError, OverflowError) as exc:  # DecodeError is a ValueError
        raise _encode_error(exc) from exc
    return packed


def envelope_dict(
    task_id: str,
    name: str,
    queue: str,
    args: list[Any] | tuple[Any, ...],
    kwargs: dict[str, Any],
    retries: int,
    attempt: int = 0,
    hooks: dict[str, str] | None = None,
    opts: dict[str, Any] | None = None,
    version: int = ENVELOPE_VERSION,
) -> dict[str, Any]:
    """Envelope version 1 as a plain dict; ``hooks`` and ``opts`` only when not empty."""
    data: dict[str, Any] = {
        "v": version,
        "id": task_id,
        "name": name,
        "queue": queue,
        "args": args,
        "kwargs": kwargs,
        "retries": retries,
        "attempt": attempt,
    }
    if hooks:
        data["hooks"] = hooks
    if opts:
        data["opts"] = opts
    return data


def _packb(value: Any) -> bytes:
    packed: bytes = _packer().pack(value)
    if len(packed) > _KEEP_BUFFER:
        del _LOCAL.packer  # (its buffer keeps the size of its largest output)
    return packed


def pack_envelopes(
    ids: list[str],
    name: str,
    queue: str,
    calls: Sequence[tuple[Sequence[Any], dict[str, Any]]],
    retries: int,
    hooks: dict[str, str] | None = None,
    opts: dict[str, Any] | None = None,
) -> list[bytes]:
    """:func:`pack_envelope` of :func:`envelope_dict` for many calls of one task,
    byte for byte: what the envelopes share is packed once (bulk enqueue)."""
    sample = envelope_dict("", name, queue, [], {}, retries, 0, hooks, opts)
    keys = list(sample)
    # A map header, then key, value pairs in the order of envelope_dict.
    header = msgpack.packb(sample)[:1] if len(keys) < 16 else b"\xde" + len(keys).to_bytes(2)
    head = header + _packb("v") + _packb(ENVELOPE_VERSION) + _packb("id")
    middle = _packb("name") + _packb(name) + _packb("queue") + _packb(queue) + _packb("args")
    kwargs_key = _packb("kwargs")
    tail = b"".join(_packb(k) + _packb(sample[k]) for k in keys[keys.index("retries") :])
    empty = _packb({})
    out = []
    try:
        for task_id, (args, kwargs) in zip(ids, calls):
            for item in args:
                if type(item) not in _SCALARS:
                    _check_plain(item, 1)
            if kwargs:
                _check_plain(kwargs)
            out.append(
                b"".join(
                    (
                        head,
                        _packb(task_id),
                        middle,
                        _packb(list(args)),
                        kwargs_key,
                        _packb(kwargs) if kwargs else empty,
                        tail,
                    )
                )
            )
        if opts:
            _check_plain(opts)
    except (TypeError, ValueError, OverflowError) as exc:  # DecodeError is a ValueError
        raise _encode_error(exc) from exc
    return out


def pack_envelope(data: dict[str, Any]) -> bytes:
    """:func:`pack` for a dict from :func:`envelope_dict`: only the parts a user
    supplies (arguments and opts) need the plain-data walk."""
    try:
        packed = _packb(data)
        for item in data["args"]:
            if type(item) not in _SCALARS:
                _check_plain(item, 1)
        if data["kwargs"]:
            _check_plain(data["kwargs"])
        if "opts" in data:
            _check_plain(data["opts"])
    except (TypeError, ValueError, OverflowError) as exc:  # DecodeError is a ValueError
        raise _encode_error(exc) from exc
    return packed


def unpack(data: bytes) -> Any:
    """Strictly decode msgpack bytes; any failure is a DecodeError."""
    if type(data) is not bytes and not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"payload must be bytes, not {type(data).__name__}")
    try:
        return _unpackb(data, raw=False, strict_map_key=True, ext_hook=_no_ext, use_list=True)
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises ValueError, ExtraData, FormatError, StackError...
        raise DecodeError(f"payload is not valid msgpack: {exc.__class__.__name__}: {exc}") from exc


_unpackb = msgpack.unpackb


class Task:
    """One invocation of a registered task.

    Attributes users see in hooks: ``task_id``, ``name``, ``queue``,
    ``retries`` (attempts left after this one), ``attempt`` (1 for the first
    run), ``func_args``, ``func_kwargs``, ``options`` and, after a run,
    ``result`` and ``status``.
    """

    version: ClassVar[int] = ENVELOPE_VERSION

    def __init__(
        self,
        name: str = "",
        func_args: tuple[Any, ...] | list[Any] = (),
        func_kwargs: dict[str, Any] | None = None,
        *,
        task_id: str | None = None,
        queue: str = "default",
        retries: int = 0,
        attempt: int = 0,
        on_start: str | None = None,
        on_success: str | None = None,
        on_error: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.task_id: str = task_id or new_task_id()
        self.name = name
        self.queue = queue
        self.func_args: list[Any] = list(func_args)
        self.func_kwargs: dict[str, Any] = dict(func_kwargs or {})
        self.retries = retries
        self.attempt = attempt
        self.on_start = on_start
        self.on_success = on_success
        self.on_error = on_error
        self.options: dict[str, Any] = dict(options or {})
        self.status = WAITING
        self.result: Any = None

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name} id={self.task_id} queue={self.queue} "
            f"attempt={self.attempt} retries={self.retries}>"
        )

    # -- envelope -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The envelope as a plain dict (msgpack-encodable when the arguments are)."""
        return envelope_dict(
            self.task_id,
            self.name,
            self.queue,
            self.func_args,
            self.func_kwargs,
            self.retries,
            self.attempt,
            {h: getattr(self, h) for h in HOOK_NAMES if getattr(self, h)},
            self.options,
            self.version,
        )

    @classmethod
    def from_dict(cls, data: Any) -> Task:
        """Build a task from a decoded envelope, validating its shape."""
        if type(data) is not dict:
            raise DecodeError(f"envelope must be a map, not {type(data).__name__}")
        get = data.get
        task_id, name = get("id"), get("name")
        if type(task_id) is not str or not task_id:
            raise DecodeError("envelope has no task id")
        if type(name) is not str or not name:
            raise DecodeError(f"envelope {task_id} has no task name")
        args, kwargs = get("args", _NO_ARGS), get("kwargs", _EMPTY)
        if type(args) is not list:
            if args is not _NO_ARGS:
                raise DecodeError(f"envelope {task_id}: args must be a list")
            args = []
        if type(kwargs) is not dict or (kwargs and not all(type(k) is str for k in kwargs)):
            raise DecodeError(f"envelope {task_id}: kwargs must be a map with string keys")
        retries, attempt = get("retries", 0), get("attempt", 0)
        if type(retries) is not int or type(attempt) is not int or retries < 0 or attempt < 0:
            raise DecodeError(f"envelope {task_id}: retries and attempt must be integers >= 0")
        hooks = get("hooks") or _EMPTY
        opts = get("opts") or _EMPTY
        if type(hooks) is not dict or type(opts) is not dict:
            raise DecodeError(f"envelope {task_id}: hooks and opts must be maps")
        if hooks:
            for value in hooks.values():
                if type(value) is not str:
                    raise DecodeError(f"envelope {task_id}: hook names must be strings")
        # The walk skips scalars at once: no-argument and scalar calls cost little.
        for item in args:
            if type(item) not in _SCALARS:
                _check_plain(item, 1)
        if kwargs:
            _check_plain(kwargs)
        elif kwargs is _EMPTY:
            kwargs = {}  # (a fresh one: hooks may change it)
        if opts:
            for key, value in opts.items():  # (mostly one scalar: {"result": ttl})
                if type(key) is not str or type(value) not in _SCALARS:
                    _check_plain(opts)
                    break
        queue = get("queue")
        if type(queue) is not str or not queue:
            queue = "default"
        if cls.__init__ is not _TASK_INIT:
            # A subclass with its own constructor gets it called, as always.
            return cls(
                name,
                args,
                kwargs,
                task_id=task_id,
                queue=queue,
                retries=retries,
                attempt=attempt,
                on_start=hooks.get("on_start"),
                on_success=hooks.get("on_success"),
                on_error=hooks.get("on_error"),
                options=opts,
            )
        # The decoder made fresh containers: no copies needed (the hot path).
        task = cls.__new__(cls)
        task.task_id = task_id
        task.name = name
        task.queue = queue
        task.func_args = args
        task.func_kwargs = kwargs
        task.retries = retries
        task.attempt = attempt
        if hooks:
            task.on_start = hooks.get("on_start")
            task.on_success = hooks.get("on_success")
            task.on_error = hooks.get("on_error")
        else:
            task.on_start = task.on_success = task.on_error = None
        task.options = dict(opts) if opts else {}
        task.status = WAITING
        task.result = None
        return task

    def serialize(self) -> bytes:
        """Encode this task as bytes. Override together with :meth:`deserialize`."""
        return pack(self.to_dict())

    @classmethod
    def deserialize(cls, data: bytes) -> Task:
        """Decode bytes written by :meth:`serialize`. Raises DecodeError."""
        return cls.from_dict(unpack(data))


_TASK_INIT = Task.__init__
