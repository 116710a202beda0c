"""``redis://``: Redis through redis-py (hiredis is used when installed).

URLs::

    redis://[[user]:password@]host[:port][/db][?option=value&...]
    rediss://...                     TLS (ssl_* options as in redis-py)
    unix:///path/to/redis.sock?db=N

Query options are redis-py's (``socket_timeout``, ``socket_connect_timeout``,
``max_connections``, ``health_check_interval``, ``ssl_cert_reqs``, ...) plus
``prefix`` (default ``gatorapp``), which namespaces every key so several apps
can share one Redis. Nothing connects until the first call.

Delivery is at-least-once. Every state change of a batch of tasks is one Lua
script (see ``redis.lua``), so a client or server crash between two commands
cannot lose or duplicate a task. A reserve leases its whole batch under one
token; settling a batch (acknowledgements, retries and dead letters together)
is one script per queue, and a worker sends it in the same round trip as its
next reserve. Scripts are idempotent where a retry after a lost reply could
run them twice: enqueue adds an id only once, a reserve sent again hands out
the batch its token already leased, and settle, release and take keep a
short-lived record of what they did. Due times and lease expiries come from
Redis ``TIME``, so worker clocks do not matter.

All keys of one queue share the hash tag ``{prefix:queue}``, so each script
touches one slot; see docs/redis.md for what Redis Cluster needs.

Idle workers register as waiters on their queues (a sorted set per queue)
and block on an inbox list of their own, with a timeout cut to the next due
task or lease expiry. Enqueueing a task that is due now hands it straight to
a waiting worker's inbox under a lease, so it starts at once; the reserve
that found nothing has already registered, so going idle costs no extra round
trip. See ``redis_wait.py``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis
from redis.connection import parse_url as redis_parse_url
from redis.exceptions import ResponseError

from ..errors import BackendError
from . import redis_results
from .base import DEFAULT_MAX_PAYLOAD, Backend, chunked, running_error
from .protocols import DeadLetterAdmin, QueueAdmin, TakeById
from .records import (
    Burial,
    Message,
    Reservation,
    ResultItem,
    RetryItem,
    Settled,
)
from .redis_admin import RedisAdmin
from .redis_aio import AsyncLink
from .redis_config import parse_redis_url, record_ttl
from .redis_link import Link
from .redis_scripts import (
    CHUNK,
    META,
    SCRIPTS,
    Calls,
    new_token,
    pack_args,
    text,
)
from .redis_settle import count, settle_plan, settled
from .redis_wait import WAIT_TTL, Waiters, WaitState, handed

log = logging.getLogger("gatorapp.backends")


class RedisBackend(RedisAdmin, Backend, QueueAdmin, TakeById, DeadLetterAdmin):
    """The delivery contract of :class:`~gatorapp.backends.base.Backend` on Redis.

    :param url: see the module docstring.
    :param prefix: key prefix; overrides ``?prefix=`` in the URL.
    :param client_options: passed to ``redis.Redis`` (URL query options win).
    """

    supports_results = True
    supports_workers = True
    ticks_once = True

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        prefix: str | None = None,
        **client_options: Any,
    ) -> None:
        super().__init__(url, max_payload=max_payload)
        if prefix is not None:
            client_options["prefix"] = prefix
        self.prefix, self._client_url, self._client_options = parse_redis_url(url, client_options)
        self._tls = self._client_url.startswith("rediss:")
        given = {**self._client_options, **redis_parse_url(self._client_url)}  # type: ignore[no-untyped-call]
        self.record_ttl = record_ttl(given)  #: seconds a call's record lasts (docs/redis.md)
        self._record_ms = math.ceil(self.record_ttl * 1000)
        self._client: redis.Redis | None = None
        self._link: Link | None = None
        self._alink: AsyncLink | None = None
        self._lock = threading.Lock()
        self.calls = Calls(self.prefix)
        # Each thread's waiting state, and all of them, so a worker that stops
        # at once can hand back what any thread was handed.
        self.waiters = Waiters(
            self.calls,
            self.pipeline,
            lambda: self.link,
            self.release,
            self.error,
            self.poll_interval,
        )

    def __repr__(self) -> str:
        return f"<RedisBackend {self.url!r} prefix={self.prefix!r}>"

    # -- connection ------------------------------------------------------------
    @property
    def client(self) -> redis.Redis:
        """The redis-py client (pub/sub, administration), built, not connected, on first use."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    made = redis.Redis.from_url(self._client_url, **self._client_options)
                    pool = made.connection_pool
                    link = Link(pool, pool.connection_kwargs.get("retry"))
                    link.on_noscript = self._load_scripts
                    self._link, self._client = link, made
                client = self._client
        return client

    @property
    def alink(self) -> AsyncLink:
        """The asyncio link for producers in async code (made on first use)."""
        alink = self._alink
        if alink is None:
            sources = [*(source for source, _ in SCRIPTS.values()), redis_results.PUT]
            alink = self._alink = AsyncLink(self._client_url, self._client_options, sources)
        return alink

    @property
    def link(self) -> Link:
        link = self._link
        if link is None:
            self.client  # noqa: B018 (builds both)
            link = self._link
            assert link is not None
        return link

    def after_fork(self) -> None:
        # Locks another thread held at the fork would stay held here; the
        # parent's waiting state (its inboxes, its handed tasks) is the parent's.
        self._lock = threading.Lock()
        if self._link is not None:
            self._link.after_fork()
        self.calls.after_fork()
        self.waiters.reset()

    @staticmethod
    def _load_scripts(conn: Any) -> None:
        for source in [*(source for source, _ in SCRIPTS.values()), redis_results.PUT]:
            conn.send_command("SCRIPT", "LOAD", source)
            conn.read_response()

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            link, self._link = self._link, None
        self.waiters.reset()
        if link is not None:
            link.close()
        if client is not None:
            client.close()

    def error(self, what: str, exc: redis.RedisError) -> BackendError:
        """A redis-py error as the BackendError the CLI reports in one line."""
        hint = ""
        # A plain-text server never answers the TLS handshake: all redis-py
        # says is that connecting timed out (or, from a server that replied
        # in plain text, that the TLS record was not one).
        text = str(exc).lower()
        handshake = isinstance(exc, redis.TimeoutError) and "connecting" in text
        if self._tls and (handshake or "wrong version number" in text):
            hint = " (rediss:// speaks TLS: is the port a TLS one? redis:// if not)"
        return BackendError(f"Redis {what} failed: {exc}{hint}")

    @contextmanager
    def io(self, what: str) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as exc:
            raise self.error(what, exc) from exc

    def pipeline(self, what: str, commands: Sequence[Sequence[Any] | bytes]) -> list[Any]:
        """Send commands in one round trip; an error reply is raised."""
        try:
            replies = self.link.pipeline(commands)
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise reply
        except redis.RedisError as exc:
            raise self.error(what, exc) from exc
        return replies

    def run(self, name: str, queue: str, args: Sequence[Any]) -> Any:
        return self.pipeline(name, [self.calls.command(name, queue, args)])[0]

    def recorded(self, what: str, calls: list[tuple[str, str, list[Any]]]) -> list[Any]:
        """Run recorded scripts, ``(name, queue, args)`` each, in one round trip.

        Each call's record lasts ``record_ttl``; sooner, the next recorded call
        on the queue deletes it, since a call whose reply came is never sent again.
        """
        keys = [(queue, self.calls.record(queue)) for _, queue, _ in calls]
        commands = [
            self.calls.command(name, queue, [self._record_ms, *args], ks)
            for (name, queue, args), (_, ks) in zip(calls, keys)
        ]
        try:
            return self.pipeline(what, commands)
        finally:
            for queue, ks in keys:
                self.calls.spend(queue, ks)  # (on failure the record may still be there)

    # -- registry ------------------------------------------------------------------
    def _register_commands(self, queues: set[str]) -> list[tuple[Any, ...]]:
        """Add queues to the registry, which lives outside their slots, then mark
        each as registered in its own slot (so this happens once per queue, and
        again after a Redis that restarted empty)."""
        commands: list[tuple[Any, ...]] = [("SADD", self.calls.registry, *sorted(queues))]
        commands += [("HSET", self.calls.keys(q)[META], "reg", 1) for q in sorted(queues)]
        return commands

    # -- primitives ----------------------------------------------------------
    def _enqueue_commands(self, messages: Sequence[Message]) -> tuple[list[bytes], list[str]]:
        """The script calls that store ``messages``, and the queue of each."""
        if len(messages) == 1:  # .delay(): the common case, kept short
            m = messages[0]
            args = (m.task_id, m.data, f"{m.run_at:.6f}" if m.run_at else "")
            return [self.calls.command("enqueue_one", m.queue, args)], [m.queue]
        by_queue: dict[str, dict[str, Message]] = {}
        for m in messages:
            # Each id once per queue (the first one wins), as the script expects.
            by_queue.setdefault(m.queue, {}).setdefault(m.task_id, m)
        commands, queues = [], []
        for queue, by_id in by_queue.items():
            for chunk in chunked(list(by_id.values()), CHUNK):
                flat: list[Any] = []
                for m in chunk:
                    flat += (m.task_id, m.data, f"{m.run_at:.6f}" if m.run_at else "")
                commands.append(self.calls.command("enqueue", queue, [pack_args(flat)]))
                queues.append(queue)
        return commands, queues

    @staticmethod
    def _unregistered(queues: list[str], replies: list[Any]) -> set[str]:
        return {q for q, (_, registered, *_) in zip(queues, replies) if not registered}

    @staticmethod
    def _refused(messages: Sequence[Message], queues: list[str], replies: list[Any]) -> None:
        """Raise for an id refused because that task is running now."""
        for queue, (added, _, *refused) in zip(queues, replies):
            if added == -1:
                # (Calls of more than CHUNK tasks: the other chunks are stored.)
                raise running_error(queue, text(refused[0]) if refused else messages[0].task_id)

    def register(self, queues: set[str]) -> None:
        self.pipeline("enqueue", self._register_commands(queues))

    def _enqueue(self, messages: Sequence[Message]) -> None:
        commands, queues = self._enqueue_commands(messages)
        replies = self.pipeline("enqueue", commands)
        missing = self._unregistered(queues, replies)
        if missing:
            self.register(missing)
        self._refused(messages, queues, replies)

    async def aenqueue(self, messages: Sequence[Message]) -> None:
        """:meth:`enqueue` through redis-py's asyncio client (see redis_aio)."""
        self.check_messages(messages)
        if not messages:
            return
        commands, queues = self._enqueue_commands(messages)
        link = self.alink
        try:
            replies = await link.pipeline(commands)
            missing = self._unregistered(queues, replies)
            if missing:
                await link.pipeline(self._register_commands(missing))
        except redis.RedisError as exc:
            raise self.error("enqueue", exc) from exc
        self._refused(messages, queues, replies)

    def _reserve(self, queue: str, limit: int, lease: float, worker_id: str) -> list[Reservation]:
        return self.reserve([queue], limit, lease, worker_id)

    def reserve(
        self, queues: Sequence[str], limit: int, lease: float, worker_id: str
    ) -> list[Reservation]:
        return self._settle_and_reserve([], queues, limit, lease)[1]

    def settle(
        self,
        acks: Sequence[Reservation],
        retries: Sequence[RetryItem] = (),
        buries: Sequence[Burial] = (),
    ) -> Settled:
        if not (acks or retries or buries):
            return Settled([], [], [])
        plan = settle_plan(acks, retries, buries)
        replies = self.recorded("settle", [call for call, _ in plan])
        return settled(plan, replies, len(acks), len(retries), len(buries))

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
        plan = settle_plan(acks, retries, buries)
        replies, got = self._settle_and_reserve(plan, queues, limit, lease)
        return settled(plan, replies, len(acks), len(retries), len(buries)), got

    def _settle_and_reserve(
        self,
        plan: list[tuple[tuple[str, str, list[Any]], list[tuple[int, int]]]],
        queues: Sequence[str],
        limit: int,
        lease: float,
    ) -> tuple[list[Any], list[Reservation]]:
        return self._begin(plan, queues, limit, lease)()

    def _begin(
        self,
        plan: list[tuple[tuple[str, str, list[Any]], list[tuple[int, int]]]],
        queues: Sequence[str],
        limit: int,
        lease: float,
        pre: Sequence[bytes] = (),
    ) -> Callable[[], tuple[list[Any], list[Reservation]]]:
        """Send ``pre`` (result writes), the settle calls of ``plan`` and the
        first queue's reserve (one round trip) now; the function returned reads
        the replies, then reserves from later queues while ``limit`` is not
        reached."""
        calls = [call for call, _ in plan]
        local = self.waiters.state()
        if (
            not calls
            and not pre
            and local.stash
            and limit > 0
            and set(local.listened) <= {r.queue for r in local.stash}
        ):
            # Tasks were handed to this thread while it waited: they are
            # leased already, so they start now, without a round trip. Its
            # waiter entry went with the hand-over; one on another queue would
            # still take tasks for a busy thread, so then the call is made.
            stashed = local.stashed(limit)
            return lambda: ([], stashed)
        records = [(queue, self.calls.record(queue)) for _, queue, _ in calls]
        commands = [*pre] + [
            self.calls.command(name, queue, [self._record_ms, *args], keys)
            for (name, queue, args), (_, keys) in zip(calls, records)
        ]
        local.lease = lease  # what a task handed to this thread is leased for
        # Awake again after a wait: stop waiting on every queue, and take what
        # was handed over meanwhile (the first queue's reserve does it for its own).
        listened = local.listened
        member = local.member if listened else ""
        # A thread that waits when it finds nothing (it has waited before)
        # registers as a waiter with the look itself: its wait then needs no
        # call of its own. Only on a single queue: with several, one queue's
        # reserve cannot know whether a later one finds tasks, and a busy
        # thread must not stay registered (its wait registers instead).
        waits = local.member if local.waits and len(queues) == 1 else ""
        first = (
            self._reserve_call(
                queues[0], limit, lease, member if queues[0] in listened else "", waits
            )
            if limit > 0 and queues
            else None
        )
        collect = [q for q in listened if first is None or q != first[1]]
        commands += [self.calls.command("unlisten", q, [member]) for q in collect]
        if first is not None:
            commands.append(first[0])
        sent = None
        try:
            if commands:
                sent = self.link.send(commands)
        except redis.RedisError as exc:
            self._spent_after(records, first, failed=True)
            self._maybe_listening(local, queues, waits)
            raise self.error("reserve", exc) from exc

        def finish() -> tuple[list[Any], list[Reservation]]:
            replies: list[Any] = []
            try:
                if sent is not None:
                    replies = sent.read()
                    for reply in replies[len(pre) :]:
                        if isinstance(reply, ResponseError):
                            raise reply
                    for reply in replies[: len(pre)]:
                        # The tasks ran and their settle went through; failing
                        # it would only run them again, so results that could
                        # not be stored are logged instead.
                        if isinstance(reply, ResponseError):
                            log.error("results of finished tasks not stored: %s", reply)
                    del replies[: len(pre)]
            except redis.RedisError as exc:
                self._spent_after(records, first, failed=True)
                self._maybe_listening(local, queues, waits)
                raise self.error("settle" if calls else "reserve", exc) from exc
            self._spent_after(records, first, failed=False)
            local.listened = []  # (kept until now: a failed call leaves them registered)
            out: list[Reservation] = local.stashed(limit)
            for q, blobs in zip(collect, replies[len(calls) : len(calls) + len(collect)]):
                out += [handed(q, blob) for blob in blobs]
            later = list(queues[1:]) if first is not None else []
            reply = replies[-1] if first is not None else None
            queue, token = (first[1], first[2]) if first is not None else ("", "")
            soonest: float | None = None
            while reply is not None:
                ids, datas, dlvs, next_due, given = reply
                out += [handed(queue, blob) for blob in given]
                if next_due and not ids:
                    seconds = float(text(next_due))
                    soonest = seconds if soonest is None else min(soonest, seconds)
                for task_id, data, dlv in zip(ids, datas, dlvs or [None] * len(ids)):
                    deliveries = 1 + count(dlv) if dlv else 1
                    out.append(
                        Reservation(queue, text(task_id), data or b"", token, deliveries, lease)
                    )
                reply = None
                if later and len(out) < limit:
                    queue = later.pop(0)
                    command, _, token, spent = self._reserve_call(
                        queue, limit - len(out), lease, "", waits
                    )
                    try:
                        reply = self.pipeline("reserve", [command])[0]
                    except BaseException:
                        self.calls.spend(queue, spent)
                        # What earlier queues leased is this thread's: its next
                        # reserve returns it (or stop_waiting hands it back).
                        local.stash[:0] = out
                        raise
            # Found nothing anywhere, and registered as a waiter on every queue:
            # the look a wait would make is made.
            local.look = (
                (tuple(queues), soonest, time.monotonic())
                if waits and not out and limit > 0 and not later
                else None
            )
            if local.look is not None:
                local.listened = list(queues)
            if len(out) > limit:
                # Inboxes held more than asked for: the rest waits in the stash
                # for the next reserve, so a worker never holds beyond its
                # limit (its max_tasks budget, its lease bound).
                local.stash[:0] = out[limit:]
                del out[limit:]
            return replies[: len(calls)], out

        return finish

    @staticmethod
    def _maybe_listening(local: WaitState, queues: Sequence[str], waits: str) -> None:
        """A reserve that registers this thread failed: it may have registered,
        so stopping unregisters it (its entry expires anyway, see WAIT_TTL)."""
        if waits and queues:
            local.listened = list(dict.fromkeys([*local.listened, queues[0]]))

    def _reserve_call(
        self, queue: str, limit: int, lease: float, member: str, waits: str = ""
    ) -> tuple[bytes, str, str, list[str]]:
        """A reserve of ``queue``: (command, queue, token, records it deletes);
        ``member``: this thread's waiter entry, when it waited on ``queue``;
        ``waits``: the same, when it will wait if the reserve finds nothing."""
        token = new_token()
        # The batch's key, then the records the reserve deletes in passing.
        spent = self.calls.take_spent(queue)
        extra = [f"{self.calls.tag(queue)}:b:{token}", *spent]
        ttl = f"{WAIT_TTL:.3f}" if waits else ""
        command = self.calls.command(
            "reserve", queue, [limit, f"{lease:.6f}", token, member or waits, ttl], extra
        )
        return command, queue, token, spent

    def _spent_after(
        self,
        records: list[tuple[str, list[str]]],
        first: tuple[bytes, str, str, list[str]] | None,
        *,
        failed: bool,
    ) -> None:
        """Records to delete with later calls: those of the settle calls (their
        replies came, or they may exist), and, after a failure, those the
        reserve was to delete."""
        for queue, keys in records:
            self.calls.spend(queue, keys)
        if failed and first is not None:
            self.calls.spend(first[1], first[3])

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
        plan = settle_plan(acks, retries, buries)
        pre = [redis_results.put_command(self.prefix, results)] if results else []
        finish = self._begin(plan, queues, limit, lease, pre)
        n = (len(acks), len(retries), len(buries))

        def done() -> tuple[Settled, list[Reservation]]:
            replies, got = finish()
            return settled(plan, replies, *n), got

        return done

    def _ack(self, reservations: Sequence[Reservation]) -> list[bool]:
        return self.settle(reservations).acked

    def _retry(self, items: Sequence[RetryItem]) -> list[bool]:
        return self.settle((), items).retried

    def _bury(self, items: Sequence[Burial]) -> list[bool]:
        return self.settle((), (), items).buried

    def _release(self, reservations: Sequence[Reservation]) -> list[bool]:
        calls: list[tuple[str, str, list[Any]]] = []
        places: list[list[int]] = []
        by_queue: dict[str, list[int]] = {}
        for i, r in enumerate(reservations):
            by_queue.setdefault(r.queue, []).append(i)
        for queue, indexes in by_queue.items():
            for chunk in chunked(indexes, CHUNK):
                flat: list[Any] = []
                for i in chunk:
                    flat += (reservations[i].task_id, reservations[i].token)
                calls.append(("release", queue, [pack_args(flat)]))
                places.append(list(chunk))
        out = [False] * len(reservations)
        for chunk, reply in zip(places, self.recorded("release", calls)):
            for i, flag in zip(chunk, text(reply)):
                out[i] = flag == "1"
        return out

    def _extend(self, reservations: Sequence[Reservation]) -> list[bool]:
        # One lease per batch: renewed for the shortest lease among its tasks.
        groups: dict[str, dict[str, list[int]]] = {}
        for i, r in enumerate(reservations):
            groups.setdefault(r.queue, {}).setdefault(r.token, []).append(i)
        commands, places = [], []
        for queue, tokens in groups.items():
            flat: list[Any] = []
            order: list[int] = []
            for token, indexes in tokens.items():
                lease = min(reservations[i].lease for i in indexes)
                flat += (token, f"{lease:.6f}", [reservations[i].task_id for i in indexes])
                order += indexes
            commands.append(self.calls.command("extend", queue, [pack_args(flat)]))
            places.append(order)
        out = [False] * len(reservations)
        for order, reply in zip(places, self.pipeline("extend", commands)):
            for i, flag in zip(order, text(reply)):
                out[i] = flag == "1"
        return out

    # -- waiting -------------------------------------------------------------
    def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Block until a task may be ready in ``queues`` or ``timeout`` passes
        (see :mod:`gatorapp.backends.redis_wait`)."""
        self.waiters.wait(queues, timeout)

    def stop_waiting(self) -> None:
        self.waiters.stop()
