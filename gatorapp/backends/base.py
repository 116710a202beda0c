"""The delivery contract every storage implements.

Storage sees only bytes: a task id, an opaque payload, a due time and, while a
worker holds it, a lease. Delivery is reserve, then acknowledge:

* :meth:`Backend.reserve` leases up to ``limit`` ready tasks to a worker. A
  lease carries a fresh token and expires unless :meth:`Backend.extend`
  renews it; an expired lease makes the task ready again (at-least-once).
* :meth:`Backend.ack` deletes finished tasks, :meth:`Backend.retry` puts a
  failed one back with a new payload and due time, :meth:`Backend.release`
  hands back tasks that never started, :meth:`Backend.bury` moves a task to
  the queue's dead letters. Each of these checks the token: a worker whose
  lease was taken over is refused, and the call returns ``False`` for it.

Every call takes a batch (a one-task call is the batch of one), so a backend
can fetch and acknowledge many tasks per round trip. A worker settles what
finished (acknowledgements, retries, dead letters) with :meth:`Backend.settle`
and refills with :meth:`Backend.settle_and_reserve`, one call per batch; a
backend that can do either in one round trip overrides it.

Public methods here do the shared bookkeeping (validation, size limits,
error texts cut to length, the driver's errors reported as BackendError) and
call the eight small abstract ``_primitives`` a backend implements, as SAQ's
Queue does. Subclasses must be safe to call from several threads unless they
set ``thread_safe = False``.

Administration (counts, take by id, dead letters) is not part of this class:
it is optional, in :mod:`gatorapp.backends.protocols`. What a backend cannot
keep of this contract it says in ``capabilities``
(:mod:`gatorapp.backends.capabilities`). The contract suite every backend
runs is :mod:`gatorapp.testing.contract`; docs/extending.md walks through
writing one.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..errors import BackendError, ConfigurationError, GatorError, PayloadTooLarge, TaskRunning
from ..options import check_text
from .capabilities import Capabilities
from .five import FiveMethods
from .records import (
    NOTHING_SETTLED,
    Burial,
    Located,
    Message,
    Reservation,
    ResultItem,
    RetryItem,
    Settled,
)

DEFAULT_MAX_PAYLOAD = 1024 * 1024  # 1 MiB, measured on the encoded payload


def running_error(queue: str, task_id: str) -> TaskRunning:
    return TaskRunning(
        f"task {task_id!r} on queue {queue!r} is running now: an enqueue of its id with "
        "other arguments or options is refused while it runs (nothing of this call was "
        "stored); enqueue it again once it has finished, or give it another id"
    )


def masked_url(url: str) -> str:
    """``url`` with the password of its user part shown as ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


def check_message(m: Message) -> None:
    """Refuse what no worker could run or settle: a payload that is not bytes
    (a str is not an envelope), an empty or non-string task id."""
    if not isinstance(m.data, bytes):
        raise ConfigurationError(
            f"task {m.task_id!r}: payload must be bytes (an encoded task), "
            f"not {type(m.data).__name__}"
        )
    if not isinstance(m.task_id, str) or not m.task_id:
        raise ConfigurationError(f"task id must be a non-empty string, not {m.task_id!r}")


def check_queue_name(queue: str) -> str:
    if not isinstance(queue, str) or not queue or len(queue) > 200:
        raise ConfigurationError(
            f"queue name must be a non-empty string of at most 200 chars: {queue!r}"
        )
    return queue if queue.isascii() else check_text("queue name", queue)


class Backend(FiveMethods, ABC):
    """Base class of every backend (memory, SQLite, Redis, SQS, PostgreSQL, a
    five-method client's adapter, and those written elsewhere).

    ``supports_leases`` is True when the backend keeps reserved tasks until they
    are acknowledged (the at-least-once contract above). ``thread_safe`` is
    True when any thread may call it; the worker then renews leases from a
    heartbeat thread of its own.
    """

    supports_leases: bool = True
    thread_safe: bool = True
    #: What of the delivery contract this backend keeps (see
    #: :class:`~gatorapp.backends.capabilities.Capabilities`); the shared
    #: contract suite skips what it lacks, with the reason given here.
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: how long an idle worker waits in :meth:`wait` before polling again
    poll_interval: float = 0.05

    #: The driver's own exception types. Every method of the contract a
    #: subclass defines (delivery, its primitives, administration, results,
    #: workers, ticks) reports them as :class:`~gatorapp.errors.BackendError`
    #: (see :meth:`driver_failed`): one error type for callers (the worker
    #: backs off on it, the CLI prints it in one line), written once here.
    driver_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    #: the store's name in those errors' messages
    store_name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "unsupported" in cls.__dict__:  # the string-keyed form this replaced
            raise TypeError(
                f"{cls.__name__}.unsupported: say what the backend lacks with "
                "capabilities = Capabilities.lacking(name=reason, ...) instead"
            )
        if cls.driver_errors:
            # The class's own methods, and those of its mixins that are not
            # backends themselves (a backend's administration, written apart).
            for name in CONTRACT:
                owner = next((k for k in cls.__mro__ if name in vars(k)), None)
                if owner is None or (owner is not cls and issubclass(owner, Backend)):
                    continue
                value = vars(owner)[name]
                if callable(value) and not getattr(value, "translated", False):
                    setattr(cls, name, _translating(name.lstrip("_"), value))

    def driver_failed(self, what: str, exc: BaseException) -> BackendError:
        """The error to raise for a driver error in ``what``. A backend whose
        connection may be broken by it (a server restart) drops it here, so the
        next call connects again."""
        name = self.store_name or type(self).__name__
        return BackendError(f"{name} {what} failed on {self.describe()}: {exc}")

    def __init__(self, url: str, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.url = url
        self.max_payload = max_payload
        _LIVE.add(self)

    def after_fork(self) -> None:
        """Called in a child process after ``fork()``: forget the connections the
        parent made (never close them: they are the parent's), so the child
        makes its own on first use. Backends with connections override it."""

    # -- producer side -------------------------------------------------------
    def check_queue(self, queue: str) -> str:
        """Refuse a queue name this backend cannot use (ConfigurationError).

        The app calls it when a task or an enqueue names a queue, so a bad name
        fails at decoration or ``.delay()``, not in a worker. Backends with
        stricter naming rules (SQS) override it.
        """
        return check_queue_name(queue)

    def check_size(self, data: bytes) -> None:
        """Raise PayloadTooLarge when ``data`` would not fit; called before any I/O."""
        if len(data) > self.max_payload:
            raise PayloadTooLarge(
                f"encoded task is {len(data)} bytes; this backend takes at most "
                f"{self.max_payload} (App(max_payload=...) changes the limit)"
            )

    def enqueue(self, messages: Sequence[Message]) -> None:
        """Store tasks. Idempotent by (queue, task_id): a second enqueue of an
        id still in the queue changes nothing."""
        self.check_messages(messages)
        if messages:
            self._enqueue(messages)

    def enqueue_in_transaction(self, connection: object, messages: Sequence[Message]) -> None:
        """:meth:`enqueue` in the caller's open transaction on ``connection``
        (its database driver's own): the tasks become visible when the caller
        commits, and are gone if they roll back. Only a backend that stores
        tasks in the caller's database can (PostgreSQL)."""
        raise ConfigurationError(
            f"{type(self).__name__} cannot enqueue in your database transaction (connection=): "
            "enqueue after your transaction commits instead (see docs/postgres.md)"
        )

    async def aenqueue(self, messages: Sequence[Message]) -> None:
        """:meth:`enqueue` for async code: it never blocks the event loop. By
        default the call runs on a thread; Redis uses its asyncio client."""
        await asyncio.to_thread(self.enqueue, messages)

    def check_messages(self, messages: Sequence[Message]) -> None:
        """What :meth:`enqueue` refuses before any I/O."""
        for queue in {m.queue for m in messages}:
            self.check_queue(queue)
        limit = self.max_payload
        for m in messages:
            if type(m.data) is not bytes or type(m.task_id) is not str or not m.task_id:
                check_message(m)
            if len(m.data) > limit:
                self.check_size(m.data)  # (says why, in the backend's words)

    # -- worker side ---------------------------------------------------------
    def reserve(
        self, queues: Sequence[str], limit: int, lease: float, worker_id: str
    ) -> list[Reservation]:
        """Lease up to ``limit`` ready tasks, taking earlier queues first.

        Within a queue, tasks come in due-time order, then enqueue order.
        Never blocks; see :meth:`wait`.
        """
        out: list[Reservation] = []
        for queue in queues:
            if len(out) >= limit:
                break
            out.extend(self._reserve(queue, limit - len(out), lease, worker_id))
        return out

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Block up to ``timeout`` seconds or until a task may be ready.

        The default sleeps for the poll interval; backends that can be woken
        (a condition variable, a Redis blocking pop) return sooner.
        """
        time.sleep(min(timeout, self.poll_interval))

    def stop_waiting(self) -> None:
        """A worker is stopping: hand back anything :meth:`wait` received for
        it that no reserve took (backends whose wait only watches keep nothing)."""

    def ack(self, reservations: Sequence[Reservation]) -> list[bool]:
        """Delete finished tasks. False where the lease was lost."""
        return self._ack(reservations) if reservations else []

    def retry(self, items: Sequence[RetryItem]) -> list[bool]:
        """Put failed tasks back with a new payload, ready at the given time."""
        return self._retry(items) if items else []

    def settle(
        self,
        acks: Sequence[Reservation],
        retries: Sequence[RetryItem] = (),
        buries: Sequence[Burial] = (),
    ) -> Settled:
        """Acknowledge, retry and bury together: what a worker's outbox sends.

        Backends that can do it in one round trip (Redis: one pipeline) override
        this; the default makes the three calls.
        """
        if not (acks or retries or buries):
            return NOTHING_SETTLED
        return Settled(self.ack(acks), self.retry(retries), self.bury(buries))

    def settle_and_reserve(
        self,
        acks: Sequence[Reservation],
        retries: Sequence[RetryItem],
        buries: Sequence[Burial],
        queues: Sequence[str],
        limit: int,
        lease: float,
        worker_id: str,
    ) -> tuple[Settled, list[Reservation]]:
        """:meth:`settle`, then :meth:`reserve` up to ``limit`` (0: reserve nothing).

        A worker calls this once per batch: a backend that can send both in one
        round trip overrides it. If it raises, the caller may send the same
        settlements again (a backend must answer a repeat as it did the first).
        """
        settled = self.settle(acks, retries, buries)
        return settled, self.reserve(queues, limit, lease, worker_id) if limit > 0 else []

    def begin_settle_and_reserve(
        self,
        acks: Sequence[Reservation],
        retries: Sequence[RetryItem],
        buries: Sequence[Burial],
        queues: Sequence[str],
        limit: int,
        lease: float,
        worker_id: str,
        results: Sequence[ResultItem] = (),
    ) -> Callable[[], tuple[Settled, list[Reservation]]]:
        """Start :meth:`settle_and_reserve`; the function returned finishes it
        (its result, or its error raised). ``results`` are stored first
        (:meth:`put_results`), so a task is never gone from its queue without
        its result.

        A worker runs tasks between the two: a backend that can send the
        request now and read the reply then (Redis) overrides this, so the
        round trip and the backend's own work overlap the worker's. By default
        the call is made when it is finished.
        """

        def finish() -> tuple[Settled, list[Reservation]]:
            if results:
                self.put_results(results)
            return self.settle_and_reserve(acks, retries, buries, queues, limit, lease, worker_id)

        return finish

    def release(self, reservations: Sequence[Reservation]) -> list[bool]:
        """Give back tasks that were reserved but never started; they keep their
        place and their delivery is not counted."""
        return self._release(reservations) if reservations else []

    def extend(self, reservations: Sequence[Reservation]) -> list[bool]:
        """Renew each lease for its ``lease`` seconds from now. False where lost."""
        return self._extend(reservations) if reservations else []

    def bury(self, items: Sequence[Burial]) -> list[bool]:
        """Move reserved tasks to their queue's dead letters with (reason, error);
        an error text is cut to 4,000 characters."""
        if not items:
            return []
        if any(len(error) > ERROR_LIMIT for _, _, error in items):
            items = [(r, reason, truncate(error)) for r, reason, error in items]
        return self._bury(items)

    # -- what no worker could run (an undecodable ``App.get``) ------------------
    def dead_add(self, queue: str, task_id: str, data: bytes, reason: str, error: str) -> None:
        """Store a task that never was reserved in the queue's dead letters
        (its error text cut to 4,000 characters)."""
        self._dead_add(check_queue_name(queue), task_id, data, reason, truncate(error))

    # -- results (see gatorapp.results; a backend with supports_results) -------
    #: whether this backend can be a result store
    supports_results: ClassVar[bool] = False

    def put_results(self, items: Sequence[ResultItem]) -> None:
        """Store result records (replacing any of the same task id), each
        readable for its ``ttl`` seconds, and wake whoever waits for them."""
        raise NotImplementedError(f"{type(self).__name__} stores no results")

    def get_result(self, task_id: str) -> bytes | None:
        """The task's result record, or None (none stored, or expired)."""
        raise NotImplementedError(f"{type(self).__name__} stores no results")

    def wait_result(self, task_id: str, timeout: float) -> bytes | None:
        """:meth:`get_result`, waiting up to ``timeout`` seconds for one to be
        stored. By default polls with a growing interval (5 ms to 200 ms);
        backends that can be woken override it."""
        deadline = time.monotonic() + timeout
        pause = 0.005
        while True:
            record = self.get_result(task_id)
            left = deadline - time.monotonic()
            if record is not None or left <= 0:
                return record
            time.sleep(min(pause, left))
            pause = min(0.2, pause * 1.5)

    async def aget_result(self, task_id: str) -> bytes | None:
        """:meth:`get_result` for async code (by default on a thread)."""
        return await asyncio.to_thread(self.get_result, task_id)

    async def await_result(self, task_id: str, timeout: float) -> bytes | None:
        """:meth:`wait_result` for async code (by default on a thread, a
        second at a time, so a cancelled wait leaves no thread waiting long)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            record = await asyncio.to_thread(self.wait_result, task_id, max(0.0, min(left, 1.0)))
            if record is not None or left <= 1.0:
                return record

    def forget_result(self, task_id: str) -> None:
        """Delete the task's result record, if any."""
        raise NotImplementedError(f"{type(self).__name__} stores no results")

    def locate(self, queue: str, task_id: str) -> Located | None:
        """Where a task is in ``queue`` (``ready``, ``delayed`` or ``running``)
        with its payload; None when the queue does not hold it. Backends that
        cannot look a task up by id return None (``capabilities.locate``)."""
        return None

    async def alocate(self, queue: str, task_id: str) -> Located | None:
        """:meth:`locate` for async code (by default on a thread)."""
        return await asyncio.to_thread(self.locate, queue, task_id)

    # -- periodic ticks (see gatorapp.schedules) ------------------------------
    #: whether :meth:`enqueue_tick` enqueues each (schedule, tick) once however
    #: many workers call it; when False, one scheduling worker only
    ticks_once: ClassVar[bool] = False

    def enqueue_tick(
        self, message: Message, schedule: str, tick: float
    ) -> tuple[bool, float | None]:
        """Enqueue ``message`` unless ``schedule`` has a tick at or after
        ``tick`` already, and record ``tick`` as its last, in one atomic step.
        Returns whether it enqueued, and the schedule's last tick before (None
        for none). By default (``ticks_once`` False) it just enqueues."""
        self.enqueue([message])
        return True, None

    def last_tick(self, schedule: str, queue: str) -> float | None:
        """The last tick enqueued of ``schedule`` (whose ticks go to ``queue``),
        or None (none, or not recorded)."""
        return None

    # -- workers that report themselves (see gatorapp.workers) ----------------
    #: whether this backend keeps the list of live workers
    supports_workers: ClassVar[bool] = False

    def put_worker(self, worker_id: str, record: bytes, ttl: float) -> None:
        """Store (or replace) a live worker's record; it is listed for ``ttl``
        seconds unless written again (a worker that died vanishes by itself)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no list of workers")

    def remove_worker(self, worker_id: str) -> None:
        """Delete a worker's record (it stopped)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no list of workers")

    def list_workers(self) -> list[bytes]:
        """The records of every worker whose ``ttl`` has not run out."""
        raise NotImplementedError(f"{type(self).__name__} keeps no list of workers")

    # -- introspection -------------------------------------------------------
    def describe(self) -> str:
        """Where the tasks are, for people: the URL with any password masked."""
        return masked_url(self.url)

    def missing_store(self) -> str | None:
        """Why there is nothing to look at yet (a database file that does not
        exist), so that looking does not create it; None when there is a store."""
        return None

    def close(self) -> None:
        """Release connections. The backend reconnects if used again."""

    # -- primitives ----------------------------------------------------------
    @abstractmethod
    def _enqueue(self, messages: Sequence[Message]) -> None: ...

    @abstractmethod
    def _reserve(
        self, queue: str, limit: int, lease: float, worker_id: str
    ) -> list[Reservation]: ...

    @abstractmethod
    def _ack(self, reservations: Sequence[Reservation]) -> list[bool]: ...

    @abstractmethod
    def _retry(self, items: Sequence[tuple[Reservation, bytes, float]]) -> list[bool]: ...

    @abstractmethod
    def _release(self, reservations: Sequence[Reservation]) -> list[bool]: ...

    @abstractmethod
    def _extend(self, reservations: Sequence[Reservation]) -> list[bool]: ...

    @abstractmethod
    def _bury(self, items: Sequence[tuple[Reservation, str, str]]) -> list[bool]: ...

    @abstractmethod
    def _dead_add(self, queue: str, task_id: str, data: bytes, reason: str, error: str) -> None: ...


_R = TypeVar("_R")
_T = TypeVar("_T")

#: The methods :attr:`Backend.driver_errors` applies to.
CONTRACT = frozenset(
    """reserve stop_waiting settle settle_and_reserve enqueue_in_transaction
    _enqueue _reserve _ack _retry _release _extend _bury wait _dead_add
    put_results get_result forget_result locate put_worker remove_worker
    list_workers enqueue_tick last_tick take stats known_queues clear
    dead_list dead_get dead_requeue dead_purge""".split()
)


def _translating(what: str, method: Callable[..., _R]) -> Callable[..., _R]:
    @functools.wraps(method)
    def call(self: Backend, *args: Any, **kwargs: Any) -> _R:
        try:
            return method(self, *args, **kwargs)
        except GatorError:
            raise  # (ours already: a refused id, a payload too large, a BackendError)
        except self.driver_errors as exc:
            raise self.driver_failed(what, exc) from exc

    call.translated = True  # type: ignore[attr-defined]
    return call


# Every backend object of this process, so a forked child can reset them all
# (a web server that forks after importing the app, multiprocessing, ...).
_LIVE: weakref.WeakSet[Backend] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for backend in list(_LIVE):
        backend.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- bookkeeping the backends share ---------------------------------------------
def grouped(keys: Sequence[Hashable], run: Callable[[Any, list[int]], list[bool]]) -> list[bool]:
    """Call ``run(key, indexes)`` once per distinct key (None: skipped, False)
    and scatter its per-item results back into one list, in the items' order:
    a batch of settlements becomes one statement per (queue, token)."""
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        if key is not None:
            groups.setdefault(key, []).append(i)
    ok = [False] * len(keys)
    for key, idx in groups.items():
        for i, good in zip(idx, run(key, idx)):
            ok[i] = good
    return ok


def chunked(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    """``items`` in slices of at most ``size`` (a store's limit on one call)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


ERROR_LIMIT = 4000  # characters of an error text kept with a dead letter


def truncate(text: str, limit: int = ERROR_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 15] + "... (truncated)"


def unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
