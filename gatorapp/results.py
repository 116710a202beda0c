"""Task results: what a finished task leaves behind, and how a handle reads it.

A result is a small msgpack record in the app's result store (its task
backend, or another one named by ``App(results=URL)``), kept for a time to
live and never deleted by reading. A worker writes it in the same call that
acknowledges the task (on Redis, the same round trip), before the
acknowledgement, so a task is never gone from its queue without its result.

Only the end of a task is written: ``succeeded``, ``failed`` (it ran, but its
return value could not be stored), ``dead`` (dead letters after its retries)
and ``cancelled``. Before that, the status comes from the task's queue, read
when asked (:meth:`Backend.locate`): ``queued``, ``delayed``, ``running`` or
``retrying`` (waiting for its next attempt). So results cost nothing per task
but the final write, and nothing at all for a task that stores none.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from .backends import Backend
from .backends.records import Located
from .envelope import Task, pack, unpack
from .errors import ConfigurationError, DecodeError, GatorError, ResultTimeout, TaskFailed

QUEUED = "queued"
DELAYED = "delayed"
RUNNING = "running"
RETRYING = "retrying"
SUCCEEDED = "succeeded"
FAILED = "failed"
DEAD = "dead"
CANCELLED = "cancelled"
UNKNOWN = "unknown"
#: statuses that do not change any more
FINAL = frozenset({SUCCEEDED, FAILED, DEAD, CANCELLED})

DEFAULT_TTL = 86400.0  # one day
#: the largest record stored: a bigger return value fails the task's result
MAX_RECORD = 512 * 1024

#: the envelope option of an enqueue that keeps its result for other than the
#: task's default: that many seconds, 0 for not at all. Absent, the worker
#: keeps it as the task's definition says (TaskDef.keep), so the common case
#: adds nothing to the envelope.
OPTION = "result"


@dataclass(frozen=True, slots=True)
class Result:
    """A stored result record, decoded."""

    status: str
    value: Any = None
    reason: str = ""
    summary: str = ""
    traceback: str = ""
    name: str = ""
    attempts: int = 0
    finished_at: float = 0.0


def _record(fields: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb(fields, use_bin_type=True, datetime=False)
    return data


# A success record is the marker 0xc1 (a byte msgpack never uses), the time
# it was stored as a msgpack float, then the value as packed: the cheapest
# record to make, and every task that keeps a result makes one.
_SUCCESS = struct.Struct(">BBd")
_MARK = 0xC1


def success(value: Any, name: str, attempts: int, limit: int = MAX_RECORD) -> bytes:
    """The record of a success; a return value that cannot be stored makes a
    ``failed`` record that says why (the task itself is done: it is not run
    again)."""
    try:
        packed = pack(value)
    except GatorError as exc:
        why = exc.__cause__ or exc
        return failure(
            FAILED,
            "result_not_encodable",
            f"the return value cannot be stored: {why} (results are msgpack: str, bytes, "
            "int, float, bool, None, and lists and dicts with str keys of them)",
            "",
            name,
            attempts,
        )
    if len(packed) > limit - 10:
        return failure(
            FAILED,
            "result_too_large",
            f"the return value is {len(packed)} bytes encoded, over the result limit of {limit}",
            "",
            name,
            attempts,
        )
    return _SUCCESS.pack(_MARK, 0xCB, time.time()) + packed


def failure(
    status: str, reason: str, summary: str, traceback: str, name: str, attempts: int
) -> bytes:
    """The record of a task that ended without a value."""
    return _record(
        {
            "s": status,
            "r": reason,
            "x": summary,
            "e": traceback[-20000:],
            "n": name,
            "a": attempts,
            "t": time.time(),
        }
    )


def read(record: bytes) -> Result:
    """Decode a stored record (one that is not ours reads as ``unknown``)."""
    try:
        if record[:1] == b"\xc1":
            _, _, at = _SUCCESS.unpack_from(record)
            return Result(SUCCEEDED, unpack(record[_SUCCESS.size :]), finished_at=at)
        d = unpack(record)
        return Result(
            str(d["s"]),
            d.get("v"),
            str(d.get("r", "")),
            str(d.get("x", "")),
            str(d.get("e", "")),
            str(d.get("n", "")),
            int(d.get("a", 0)),
            float(d.get("t", 0.0)),
        )
    except (DecodeError, KeyError, TypeError, ValueError, AttributeError, struct.error):
        return Result(UNKNOWN, reason="unreadable", summary="the stored result is not readable")


def store_final(results: Results | None, task: Task, default: float | None, record: bytes) -> None:
    """Store a record for ``task`` when the app keeps results and the task stores one."""
    ttl = ttl_of(task.options, default)
    if results is not None and results.store is not None and ttl:
        results.store().put_results([(task.task_id, record, ttl)])


def ttl_of(options: dict[str, Any] | None, default: float | None) -> float | None:
    """Seconds to keep a task's result (its enqueue's ``options``, else the
    task's ``default``), or None when it keeps none."""
    ttl = options.get(OPTION, default) if options else default
    return float(ttl) if isinstance(ttl, (int, float)) and ttl > 0 else None


def check_ttl(ttl: Any, what: str = "result_ttl") -> float:
    number = isinstance(ttl, (int, float)) and not isinstance(ttl, bool)
    if not number or not 0 < ttl <= 10 * 365 * 86400:
        raise ConfigurationError(f"{what} must be seconds between 0 and 10 years, not {ttl!r}")
    return float(ttl)


class Results:
    """What a handle asks: a task's status, and its value once it has one.

    :param store: the result store (None: the app keeps no results).
    :param backend: the task backend (where a task that has not ended is).
    :param decode: a payload to its Task (for the attempt of a waiting task).
    :param queues: every queue to look in when a handle knows none.
    """

    def __init__(
        self,
        store: Callable[[], Backend] | None,
        backend: Callable[[], Backend],
        decode: Callable[[bytes], Task],
        queues: Callable[[], Sequence[str]],
    ) -> None:
        self.store = store
        self.backend = backend
        self.decode = decode
        self.queues = queues

    def _store(self) -> Backend:
        if self.store is None:
            raise ConfigurationError(
                "this app keeps no results: App(..., results=True) stores them in its "
                "backend, App(..., results=URL) in another store"
            )
        return self.store()

    def stored(self, task_id: str) -> Result | None:
        record = self._store().get_result(task_id)
        return None if record is None else read(record)

    def status(self, task_id: str, queue: str | None) -> str:
        """The task's status now (see the module)."""
        found = self.stored(task_id)
        if found is not None and found.status in FINAL:
            return found.status
        backend = self.backend()
        for q in [queue] if queue else list(self.queues()):
            where = self._where(backend.locate(q, task_id))
            if where is not None:
                return where
        # In no queue: it may have ended since the first look (a worker
        # stores the result before it acknowledges), so look again.
        found = found or self.stored(task_id)
        return found.status if found is not None else UNKNOWN

    async def astatus(self, task_id: str, queue: str | None) -> str:
        """:meth:`status` for async code: the same looks, awaited."""
        store = self._store()
        record = await store.aget_result(task_id)
        if record is not None and (found := read(record)).status in FINAL:
            return found.status
        backend = self.backend()
        for q in [queue] if queue else list(self.queues()):
            where = self._where(await backend.alocate(q, task_id))
            if where is not None:
                return where
        record = record or await store.aget_result(task_id)
        return read(record).status if record is not None else UNKNOWN

    def _where(self, located: Located | None) -> str | None:
        """The status of a task found in a queue (None: not there)."""
        if located is None:
            return None
        state, data = located
        if state == "running":
            return RUNNING
        try:
            attempt = self.decode(data).attempt
        except Exception:
            attempt = 0
        if attempt:
            return RETRYING
        return QUEUED if state == "ready" else DELAYED

    def wait(self, task_id: str, timeout: float | None) -> Result:
        """The task's final result, waiting up to ``timeout`` seconds (None:
        for as long as it takes)."""
        store = self._store()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 3600.0 if deadline is None else deadline - time.monotonic()
            record = store.wait_result(task_id, max(0.0, left))
            if record is not None:
                return read(record)  # (only final records are ever stored)
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(f"task {task_id} did not finish within {timeout} s")

    async def await_(self, task_id: str, timeout: float | None) -> Result:
        """:meth:`wait` for async code: the event loop is never blocked."""
        store = self._store()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 3600.0 if deadline is None else deadline - time.monotonic()
            record = await store.await_result(task_id, max(0.0, left))
            if record is not None:
                return read(record)
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(f"task {task_id} did not finish within {timeout} s")

    @staticmethod
    def value(task_id: str, found: Result) -> Any:
        """The value of a final result, or its failure raised."""
        if found.status == SUCCEEDED:
            return found.value
        raise TaskFailed(task_id, found.status, found.reason, found.summary, found.traceback)
