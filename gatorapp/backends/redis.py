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

Idle workers block on a pub/sub channel per queue, with a timeout cut to the
next due task or lease expiry: a new task wakes them at once and a delayed
one is taken within milliseconds of its due time. The reserve that found
nothing has already looked, so going idle costs no extra round trip. (A
blocking list pop would do too, but Redis enforces blocking-command timeouts
only on its ``hz`` tick, 100 ms by default, and wakes a single waiter.)
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any

import msgpack
import redis
from redis.connection import parse_url as redis_parse_url
from redis.exceptions import ResponseError

from ..errors import BackendError
from .base import (
    DEFAULT_MAX_PAYLOAD,
    Backend,
    Burial,
    DeadLetter,
    Message,
    QueueStats,
    Reservation,
    RetryItem,
    Settled,
    truncate,
)
from .redis_config import parse_redis_url, record_ttl
from .redis_link import Link, bulk, pack

# The per-queue keys, in the order every script receives them (see redis.lua).
_SUFFIXES = (
    "data",
    "wait",
    "own",
    "dlv",
    "leases",
    "held",
    "meta",
    "dead",
    "ddata",
    "dwhy",
    "waiters",
)
_DEAD = _SUFFIXES.index("dead")

# Seconds an idle worker stays registered as a waiter after its last look:
# longer than any wait (the worker's loop waits at most 0.5 s at a time). A
# task due now is handed to a registered worker; one that died registered
# gets it only within this time, and it comes back when its lease expires.
_WAIT_TTL = 2.0
_META = _SUFFIXES.index("meta")

# Tasks per script call: large batches are split so one call never blocks
# Redis for long (a few milliseconds; Lua's unpack() takes up to about 8,000
# values). A worker's batch (up to 500 plus its threads) fits in one call.
# Each chunk is atomic and safe to send again, and every chunk of one batch
# goes in one pipeline: one round trip.
_CHUNK = 1000

# Records of calls whose replies came, kept per queue until the next call on
# that queue deletes them; more than this are left to their time to live.
_MAX_SPENT = 200


def _load_scripts() -> dict[str, tuple[str, str]]:
    """Script name -> (source, SHA1), from the sections of redis.lua: the
    common prelude, the helpers the script needs, then the script itself."""
    text = resources.files("gatorapp.backends").joinpath("redis.lua").read_text("utf-8")
    parts = re.split(r"^-- @@ (lib )?(\w+)\s*$", text, flags=re.MULTILINE)
    libs: dict[str, str] = {}
    scripts: dict[str, str] = {}
    for is_lib, name, body in zip(parts[1::3], parts[2::3], parts[3::3]):
        (libs if is_lib else scripts)[name] = body

    def needs(body: str) -> list[str]:
        found = re.search(r"^-- needs: (.*)$", body, flags=re.MULTILINE)
        return found.group(1).split() if found else []

    common = scripts.pop("common")
    out = {}
    for name, body in scripts.items():
        want: set[str] = set()
        todo = needs(body)
        while todo:
            lib = todo.pop()
            if lib not in want:
                want.add(lib)
                todo += needs(libs[lib])
        source = common + "".join(b for n, b in libs.items() if n in want) + body
        out[name] = (source, hashlib.sha1(source.encode()).hexdigest())
    return out


_SCRIPTS = _load_scripts()


def _pack(items: Any) -> bytes:
    # Lua's cmsgpack reads msgpack's str type only: bytes go as str, which
    # Lua strings carry unchanged.
    return msgpack.packb(items, use_bin_type=False)  # type: ignore[no-any-return]


def _new_token() -> str:
    """A batch token: 64 characters, so the scripts' own hash is a hash table
    (see redis.lua)."""
    return os.urandom(32).hex()


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class _Waiting:
    """One thread's waiting state: its listener id and waiter entry, the queues
    it waits on, tasks handed to it that no reserve returned yet, and what its
    last reserve saw when it found nothing."""

    __slots__ = ("lease", "listened", "listener", "look", "member", "stash", "waits")

    def __init__(self) -> None:
        self.listener = os.urandom(8).hex()
        self.lease = 30.0
        self.member = ""
        self.listened: list[str] = []
        self.stash: list[Reservation] = []
        self.look: tuple[tuple[str, ...], float | None, float] | None = None
        self.waits = False  # it waits when a reserve finds nothing


class RedisBackend(Backend):
    """The delivery contract of :class:`~gatorapp.backends.base.Backend` on Redis.

    :param url: see the module docstring.
    :param prefix: key prefix; overrides ``?prefix=`` in the URL.
    :param client_options: passed to ``redis.Redis`` (URL query options win).
    """

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
        given = {**self._client_options, **redis_parse_url(self._client_url)}
        self.record_ttl = record_ttl(given)  #: seconds a call's record lasts (docs/redis.md)
        self._record_ms = math.ceil(self.record_ttl * 1000)
        self._registry = f"{{{self.prefix}}}:queues"
        self._client: redis.Redis | None = None
        self._link: Link | None = None
        self._lock = threading.Lock()
        self._keys_of: dict[str, list[str]] = {}
        self._heads: dict[tuple[str, str, int], bytes] = {}
        self._spent: dict[str, list[str]] = {}  # queue -> records no retry needs any more
        # Each thread's waiting state (see _Waiting), and all of them, so a
        # worker that stops at once can hand back what any thread was handed.
        self._local = threading.local()
        self._waiting: list[_Waiting] = []

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
    def link(self) -> Link:
        link = self._link
        if link is None:
            self.client  # noqa: B018 (builds both)
            link = self._link
            assert link is not None
        return link

    def after_fork(self) -> None:
        # The Link and redis-py's pool notice the new pid themselves; the
        # parent's waiting state (its inboxes, its handed tasks) is the parent's.
        self._lock = threading.Lock()
        self._local = threading.local()
        self._waiting = []

    @staticmethod
    def _load_scripts(conn: Any) -> None:
        for source, _ in _SCRIPTS.values():
            conn.send_command("SCRIPT", "LOAD", source)
            conn.read_response()

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            link, self._link = self._link, None
            self._local = threading.local()
            self._waiting = []
        if link is not None:
            link.close()
        if client is not None:
            client.close()

    def _error(self, what: str, exc: redis.RedisError) -> BackendError:
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
    def _io(self, what: str) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as exc:
            raise self._error(what, exc) from exc

    def _tag(self, queue: str) -> str:
        return "{" + f"{self.prefix}:{queue}" + "}"

    def _keys(self, queue: str) -> list[str]:
        keys = self._keys_of.get(queue)
        if keys is None:
            keys = self._keys_of[queue] = [f"{self._tag(queue)}:{s}" for s in _SUFFIXES]
        return keys

    def _command(
        self, name: str, queue: str, args: Sequence[Any], extra: Sequence[str] = ()
    ) -> bytes:
        """EVALSHA of script ``name`` on ``queue``'s keys (then ``extra`` keys),
        packed; what never changes for the queue is packed once."""
        n_keys = len(_SUFFIXES) + len(extra)
        head = self._heads.get((name, queue, n_keys))
        if head is None:
            keys = b"".join(bulk(k) for k in self._keys(queue))
            call = bulk("EVALSHA") + bulk(_SCRIPTS[name][1]) + bulk(n_keys) + keys
            head = self._heads[(name, queue, n_keys)] = call
        parts = [b"*%d\r\n" % (3 + n_keys + len(args)), head]
        for key in extra:
            parts.append(bulk(key))
        for arg in args:
            parts.append(bulk(arg))
        return b"".join(parts)

    def _pipeline(self, what: str, commands: Sequence[Sequence[Any] | bytes]) -> list[Any]:
        """Send commands in one round trip; an error reply is raised."""
        try:
            replies = self.link.pipeline(commands)
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise reply
        except redis.RedisError as exc:
            raise self._error(what, exc) from exc
        return replies

    def _run(self, name: str, queue: str, args: Sequence[Any]) -> Any:
        return self._pipeline(name, [self._command(name, queue, args)])[0]

    # -- records of calls (replayed after a lost reply) ---------------------------------
    def _record(self, queue: str) -> list[str]:
        """Keys for a recorded call: its own record, then the spent ones to delete."""
        record = f"{self._tag(queue)}:rec:{os.urandom(12).hex()}"
        with self._lock:
            spent = self._spent.pop(queue, [])
        return [record, *spent]

    def _spend(self, queue: str, records: Sequence[str]) -> None:
        with self._lock:
            spent = self._spent.setdefault(queue, [])
            spent += records
            del spent[:-_MAX_SPENT]

    def _recorded(self, what: str, calls: list[tuple[str, str, list[Any]]]) -> list[Any]:
        """Run recorded scripts, ``(name, queue, args)`` each, in one round trip.

        Each call's record lasts ``record_ttl``; sooner, the next recorded call
        on the queue deletes it, since a call whose reply came is never sent again.
        """
        keys = [(queue, self._record(queue)) for _, queue, _ in calls]
        commands = [
            self._command(name, queue, [self._record_ms, *args], ks)
            for (name, queue, args), (_, ks) in zip(calls, keys)
        ]
        try:
            return self._pipeline(what, commands)
        finally:
            for queue, ks in keys:
                self._spend(queue, ks)  # (on failure the record may still be there)

    # -- registry ------------------------------------------------------------------
    def _register(self, queues: set[str]) -> None:
        """Add queues to the registry, which lives outside their slots, then mark
        each as registered in its own slot (so this happens once per queue, and
        again after a Redis that restarted empty)."""
        commands: list[tuple[Any, ...]] = [("SADD", self._registry, *sorted(queues))]
        commands += [("HSET", self._keys(q)[_META], "reg", 1) for q in sorted(queues)]
        self._pipeline("enqueue", commands)

    # -- primitives ----------------------------------------------------------
    def _enqueue(self, messages: Sequence[Message]) -> None:
        if len(messages) == 1:  # .delay(): the common case, kept short
            m = messages[0]
            args = (m.task_id, m.data, f"{m.run_at:.6f}" if m.run_at else "")
            _, registered = self._pipeline(
                "enqueue", [self._command("enqueue_one", m.queue, args)]
            )[0]
            if not registered:
                self._register({m.queue})
            return
        by_queue: dict[str, dict[str, Message]] = {}
        for m in messages:
            # Each id once per queue (the first one wins), as the script expects.
            by_queue.setdefault(m.queue, {}).setdefault(m.task_id, m)
        commands, queues = [], []
        for queue, by_id in by_queue.items():
            for chunk in _chunks(list(by_id.values())):
                flat: list[Any] = []
                for m in chunk:
                    flat += (m.task_id, m.data, f"{m.run_at:.6f}" if m.run_at else "")
                commands.append(self._command("enqueue", queue, [_pack(flat)]))
                queues.append(queue)
        replies = self._pipeline("enqueue", commands)
        unregistered = {q for q, (_, registered) in zip(queues, replies) if not registered}
        if unregistered:
            self._register(unregistered)

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
        plan = self._settle_plan(acks, retries, buries)
        replies = self._recorded("settle", [call for call, _ in plan])
        return self._settled(plan, replies, len(acks), len(retries), len(buries))

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
        plan = self._settle_plan(acks, retries, buries)
        replies, got = self._settle_and_reserve(plan, queues, limit, lease)
        return self._settled(plan, replies, len(acks), len(retries), len(buries)), got

    def _settle_plan(
        self, acks: Sequence[Reservation], retries: Sequence[RetryItem], buries: Sequence[Burial]
    ) -> list[tuple[tuple[str, str, list[Any]], list[tuple[int, int]]]]:
        """One settle call per queue and chunk: ((name, queue, args), where each
        answer goes: (0 ack | 1 retry | 2 bury, index))."""
        by_queue: dict[str, list[tuple[int, int]]] = {}
        for i, r in enumerate(acks):
            by_queue.setdefault(r.queue, []).append((0, i))
        for i, item in enumerate(retries):
            by_queue.setdefault(item[0].queue, []).append((1, i))
        for i, item in enumerate(buries):
            by_queue.setdefault(item[0].queue, []).append((2, i))
        plan = []
        for queue, places in by_queue.items():
            for chunk in _chunks(places):
                groups: dict[str, list[str]] = {}  # acks by batch token
                t: list[Any] = []
                b: list[Any] = []
                order: list[tuple[int, int]] = []
                ack_order: dict[str, list[tuple[int, int]]] = {}
                for k, i in chunk:
                    if k == 0:
                        r = acks[i]
                        groups.setdefault(r.token, []).append(r.task_id)
                        ack_order.setdefault(r.token, []).append((0, i))
                for token_order in ack_order.values():  # the script answers acks first
                    order += token_order
                for k, i in chunk:
                    if k == 1:
                        r, data, run_at = retries[i]
                        t += (r.task_id, r.token, data, run_at)
                        order.append((1, i))
                for k, i in chunk:
                    if k == 2:
                        r, reason, error = buries[i]
                        b += (r.task_id, r.token, reason, truncate(error))
                        order.append((2, i))
                a = [x for token, task_ids in groups.items() for x in (token, task_ids)]
                plan.append((("settle", queue, [_pack([a, t, b])]), order))
        return plan

    @staticmethod
    def _settled(
        plan: list[tuple[Any, list[tuple[int, int]]]],
        replies: Sequence[Any],
        n_acks: int,
        n_retries: int,
        n_buries: int,
    ) -> Settled:
        out = ([False] * n_acks, [False] * n_retries, [False] * n_buries)
        for (_, order), reply in zip(plan, replies):
            flags = _text(reply)
            for (kind, i), flag in zip(order, flags):
                out[kind][i] = flag == "1"
        return Settled(*out)

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
    ) -> Callable[[], tuple[list[Any], list[Reservation]]]:
        """Send the settle calls of ``plan`` and the first queue's reserve (one
        round trip) now; the function returned reads the replies, then reserves
        from later queues while ``limit`` is not reached."""
        calls = [call for call, _ in plan]
        local = self._state()
        if not calls and local.stash and limit > 0:
            # Tasks were handed to this thread while it waited: they are
            # leased already, so they start now, without a round trip. (Its
            # waiter entries go with its next call.)
            handed = self._stashed(limit)
            return lambda: ([], handed)
        records = [(queue, self._record(queue)) for _, queue, _ in calls]
        commands = [
            self._command(name, queue, [self._record_ms, *args], keys)
            for (name, queue, args), (_, keys) in zip(calls, records)
        ]
        local.lease = lease  # what a task handed to this thread is leased for
        # Awake again after a wait: stop waiting on every queue, and take what
        # was handed over meanwhile (the first queue's reserve does it for its own).
        listened = local.listened
        member = local.member if listened else ""
        local.listened = []
        # A thread that waits when it finds nothing (it has waited before)
        # registers as a waiter with the look itself: its wait then needs no
        # call of its own.
        waits = local.member if local.waits else ""
        first = (
            self._reserve_call(
                queues[0], limit, lease, member if queues[0] in listened else "", waits
            )
            if limit > 0 and queues
            else None
        )
        collect = [q for q in listened if first is None or q != first[1]]
        commands += [self._command("unlisten", q, [member]) for q in collect]
        if first is not None:
            commands.append(first[0])
        sent = None
        try:
            if commands:
                sent = self.link.send(commands)
        except redis.RedisError as exc:
            self._spent_after(records, first, failed=True)
            raise self._error("reserve", exc) from exc

        def finish() -> tuple[list[Any], list[Reservation]]:
            replies: list[Any] = []
            try:
                if sent is not None:
                    replies = sent.read()
                    for reply in replies:
                        if isinstance(reply, ResponseError):
                            raise reply
            except redis.RedisError as exc:
                self._spent_after(records, first, failed=True)
                raise self._error("settle" if calls else "reserve", exc) from exc
            self._spent_after(records, first, failed=False)
            out: list[Reservation] = self._stashed(limit)
            for q, blobs in zip(collect, replies[len(calls) : len(calls) + len(collect)]):
                out += [self._handed(q, blob) for blob in blobs]
            later = list(queues[1:]) if first is not None else []
            reply = replies[-1] if first is not None else None
            queue, token = (first[1], first[2]) if first is not None else ("", "")
            soonest: float | None = None
            while reply is not None:
                ids, datas, dlvs, next_due, handed = reply
                out += [self._handed(queue, blob) for blob in handed]
                if next_due and not ids:
                    seconds = float(_text(next_due))
                    soonest = seconds if soonest is None else min(soonest, seconds)
                for task_id, data, dlv in zip(ids, datas, dlvs or [None] * len(ids)):
                    deliveries = 1 + int(dlv) if dlv else 1
                    out.append(
                        Reservation(queue, _text(task_id), data or b"", token, deliveries, lease)
                    )
                reply = None
                if later and len(out) < limit:
                    queue = later.pop(0)
                    command, _, token, spent = self._reserve_call(
                        queue, limit - len(out), lease, "", waits
                    )
                    try:
                        reply = self._pipeline("reserve", [command])[0]
                    except BaseException:
                        self._spend(queue, spent)
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
            return replies[: len(calls)], out

        return finish

    def _reserve_call(
        self, queue: str, limit: int, lease: float, member: str, waits: str = ""
    ) -> tuple[bytes, str, str, list[str]]:
        """A reserve of ``queue``: (command, queue, token, records it deletes);
        ``member``: this thread's waiter entry, when it waited on ``queue``;
        ``waits``: the same, when it will wait if the reserve finds nothing."""
        token = _new_token()
        # The batch's key, then the records the reserve deletes in passing.
        with self._lock:
            spent = self._spent.pop(queue, [])
        extra = [f"{self._tag(queue)}:b:{token}", *spent]
        ttl = f"{_WAIT_TTL:.3f}" if waits else ""
        command = self._command(
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
            self._spend(queue, keys)
        if failed and first is not None:
            self._spend(first[1], first[3])

    def begin_settle_and_reserve(
        self,
        acks: Sequence[Reservation],
        retries: Sequence[RetryItem],
        buries: Sequence[Burial],
        queues: Sequence[str],
        limit: int,
        lease: float,
        worker_id: str,
    ) -> Callable[[], tuple[Settled, list[Reservation]]]:
        plan = self._settle_plan(acks, retries, buries)
        finish = self._begin(plan, queues, limit, lease)
        n = (len(acks), len(retries), len(buries))

        def settled() -> tuple[Settled, list[Reservation]]:
            replies, got = finish()
            return self._settled(plan, replies, *n), got

        return settled

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
            for chunk in _chunks(indexes):
                flat: list[Any] = []
                for i in chunk:
                    flat += (reservations[i].task_id, reservations[i].token)
                calls.append(("release", queue, [_pack(flat)]))
                places.append(list(chunk))
        out = [False] * len(reservations)
        for chunk, reply in zip(places, self._recorded("release", calls)):
            for i, flag in zip(chunk, _text(reply)):
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
            commands.append(self._command("extend", queue, [_pack(flat)]))
            places.append(order)
        out = [False] * len(reservations)
        for order, reply in zip(places, self._pipeline("extend", commands)):
            for i, flag in zip(order, _text(reply)):
                out[i] = flag == "1"
        return out

    def _take(self, queue: str, task_id: str) -> bytes | None:
        (data,) = self._recorded("take", [("take", queue, [task_id])])
        if data is None:
            return None
        # get() and cancel() are seldom followed by another call on the queue
        # from this process: delete the record now. Best effort: the task is
        # out of Redis already and must reach the caller; the record expires.
        with self._lock:
            spent = self._spent.pop(queue, [])
        try:
            self.link.call("DEL", *spent)
        except redis.RedisError:
            pass
        return bytes(data)

    # -- waiting -------------------------------------------------------------
    def _handed(self, queue: str, blob: bytes) -> Reservation:
        """A task a waiting worker was handed: msgpack [token, lease, id, payload]."""
        token, lease, task_id, data = msgpack.unpackb(blob, raw=True)
        return Reservation(queue, _text(task_id), data, _text(token), 1, float(lease))

    def _stashed(self, limit: int) -> list[Reservation]:
        """Handed tasks a wait received, up to ``limit`` (the rest stay)."""
        local = self._state()
        if not local.stash:
            return []
        out, local.stash = local.stash[:limit], local.stash[limit:]
        return out

    def _state(self) -> _Waiting:
        state: _Waiting | None = getattr(self._local, "state", None)
        if state is None:
            state = self._local.state = _Waiting()
            with self._lock:
                self._waiting.append(state)
        return state

    def _member(self) -> str:
        """This thread's waiter entry, "<listener>|<lease>"."""
        local = self._state()
        local.member = f"{local.listener}|{local.lease:.6f}"
        return local.member

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Block until a task may be ready in ``queues`` or ``timeout`` passes.

        Registers this thread as a waiter and looks, in one call per queue: a
        task enqueued after the look is handed to it (already leased, kept
        for the next reserve) or wakes it through its inbox, so none is
        missed. The block is a BLPOP on its inboxes, cut short from this side
        (Redis applies blocking timeouts on its own clock tick, 100 ms).
        """
        local = self._state()
        if not queues or local.stash:
            return
        member = self._member()
        local.waits = True  # from now on, an empty reserve registers it too
        look = local.look
        local.look = None
        if look is not None and look[0] == tuple(queues) and look[1] != 0:
            # The reserve that found nothing registered it and looked.
            soonest = None if look[1] is None else look[1] - (time.monotonic() - look[2])
        else:
            ttl = f"{_WAIT_TTL:.3f}"
            replies = self._pipeline(
                "wait", [self._command("listen", q, [member, ttl]) for q in queues]
            )
            local.listened = list(queues)
            handed: list[Reservation] = []
            soonest = None
            for queue, (blobs, next_due) in zip(queues, replies):
                handed += [self._handed(queue, blob) for blob in blobs]
                if next_due:
                    seconds = float(_text(next_due))
                    soonest = seconds if soonest is None else min(soonest, seconds)
            if handed:
                local.stash = handed
                return
        if soonest is not None and soonest <= 0:
            return
        block = timeout if soonest is None else min(timeout, soonest)
        listener = member.partition("|")[0]
        boxes = [f"{self._tag(q)}:in:{listener}" for q in queues]
        try:
            reply = self._block(boxes, block)
        except (redis.ConnectionError, redis.TimeoutError):
            # The connection broke (Redis restarted?): if Redis is down, the
            # caller's next call says so. The pause keeps a failing wait from
            # turning the worker's loop into a busy one.
            time.sleep(min(timeout, self.poll_interval))
            return
        except redis.RedisError as exc:
            raise self._error("wait", exc) from exc
        if reply:
            box, value = _text(reply[0]), reply[1]
            if value:
                local.stash = [self._handed(queues[boxes.index(box)], value)]

    def _block(self, boxes: list[str], seconds: float) -> Any:
        """BLPOP on ``boxes`` for ``seconds`` at most, timed here."""
        with self.link.connection() as conn:
            conn.send_packed_command([pack(("BLPOP", *boxes, math.ceil(seconds) + 1))])
            if not conn.can_read(timeout=seconds):
                # Time's up: end the BLPOP with a wake-up of our own; a task
                # handed over meanwhile comes first, the wake-up is dropped later.
                self.link.call("RPUSH", boxes[0], "")
            return conn.read_response()

    def stop_waiting(self) -> None:
        """The worker stops waiting: the waiter entries of its threads go, and
        the tasks handed to them that no reserve returned go back to their
        queues. (Called from any thread: a worker stopping at once calls it
        from a thread of its own.)"""
        with self._lock:
            states = list(self._waiting)
        handed: list[Reservation] = []
        commands = []
        for state in states:
            listened, state.listened = state.listened, []
            handed += state.stash
            state.stash = []
            state.waits = False
            if listened and state.member:
                commands += [(q, self._command("unlisten", q, [state.member])) for q in listened]
        if commands:
            replies = self._pipeline("stop_waiting", [c for _, c in commands])
            for (queue, _), blobs in zip(commands, replies):
                handed += [self._handed(queue, blob) for blob in blobs]
        if handed:
            self.release(handed)

    def _next_due(self, queues: Sequence[str]) -> float | None:
        soonest: float | None = None
        replies = self._pipeline("next_due", [self._command("next_due", q, []) for q in queues])
        for reply in replies:
            value = _text(reply)
            if value:
                seconds = float(value)
                soonest = seconds if soonest is None else min(soonest, seconds)
        return soonest

    # -- dead letters ----------------------------------------------------------
    def dead_add(self, queue: str, task_id: str, data: bytes, reason: str, error: str) -> None:
        _, registered = self._run("dead_add", queue, [task_id, data, reason, truncate(error)])
        if not registered:
            self._register({queue})

    def _dead_read(self, queue: str, args: list[Any]) -> list[DeadLetter]:
        flat = self._run("dead_read", queue, args)
        out = []
        for i in range(0, len(flat), 4):
            reason, _, error = _text(flat[i + 2] or b"").partition("\n")
            data, failed_at = bytes(flat[i + 1] or b""), float(flat[i + 3])
            out.append(DeadLetter(queue, _text(flat[i]), data, reason, error, failed_at))
        return out

    def dead_list(self, queue: str, limit: int = 1000) -> list[DeadLetter]:
        return self._dead_read(queue, ["list", limit]) if limit > 0 else []

    def dead_get(self, queue: str, task_id: str) -> DeadLetter | None:
        found = self._dead_read(queue, ["get", task_id])
        return found[0] if found else None

    def dead_requeue(self, queue: str, task_id: str, data: bytes | None = None) -> bool:
        args = [task_id, "0"] if data is None else [task_id, "1", data]
        return bool(self._run("dead_requeue", queue, args))

    def dead_purge(self, queue: str) -> int:
        return int(self._run("dead_purge", queue, []))

    # -- introspection -------------------------------------------------------
    def stats(self, queue: str) -> QueueStats:
        ready, delayed, running, dead = self._run("stats", queue, [])
        return QueueStats(int(ready), int(delayed), int(running), int(dead))

    def known_queues(self) -> list[str]:
        names = sorted(
            _text(n) for n in self._pipeline("known_queues", [("SMEMBERS", self._registry)])[0]
        )
        if not names:
            return []
        # A queue stays in the registry after it empties; list only those
        # that hold tasks or dead letters, as the other backends do.
        counts = self._pipeline(
            "known_queues",
            [("EXISTS", self._keys(n)[0], self._keys(n)[_DEAD]) for n in names],
        )
        return [n for n, count in zip(names, counts) if count]

    def drop_all(self, queue_name: str) -> None:
        self._run("drop", queue_name, [])
