"""``redis://``: Redis through redis-py (hiredis is used when installed).

URLs::

    redis://[[user]:password@]host[:port][/db][?option=value&...]
    rediss://...                     TLS (ssl_* options as in redis-py)
    unix:///path/to/redis.sock?db=N

Query options are redis-py's (``socket_timeout``, ``socket_connect_timeout``,
``max_connections``, ``health_check_interval``, ``ssl_cert_reqs``, ...) plus
``prefix`` (default ``gatorapp``), which namespaces every key so several apps
can share one Redis. Nothing connects until the first call.

Delivery is at-least-once. Every state change of a task is one Lua script
(see ``redis.lua``), so a client or server crash between two commands cannot
lose or duplicate a task. Scripts are idempotent where redis-py's automatic
retry could run them twice after a lost reply: enqueue adds an id only once;
reserve, take, ack, retry, release and bury keep a short-lived record of
what each call did, so the call sent again returns the same. Due times and
lease expiries come from Redis ``TIME``, so worker clocks do not matter.

All keys of one queue share the hash tag ``{prefix:queue}``, so each script
touches one slot; see docs/redis.md for what Redis Cluster needs.

Idle workers block on a pub/sub channel per queue, with a timeout cut to the
next due task or lease expiry: a new task wakes them at once and a delayed
one is taken within milliseconds of its due time. (A blocking list pop would
do too, but Redis enforces blocking-command timeouts only on its ``hz`` tick,
100 ms by default, and wakes a single waiter.)
"""

from __future__ import annotations

import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.client import PubSub
from redis.commands.core import Script
from redis.connection import URL_QUERY_ARGUMENT_PARSERS, ConnectionPool
from redis.connection import parse_url as redis_parse_url
from redis.exceptions import NoScriptError
from redis.retry import Retry

from ..errors import BackendError, ConfigurationError
from .base import (
    DEFAULT_MAX_PAYLOAD,
    Backend,
    DeadLetter,
    Message,
    QueueStats,
    Reservation,
    truncate,
)

DEFAULT_PREFIX = "gatorapp"
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")

# Query options passed on to redis-py besides those it parses itself.
_STRING_OPTIONS = {
    "client_name",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_ca_path",
    "ssl_ca_data",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_password",
}

# The per-queue keys, in the order every script receives them (see redis.lua).
_SUFFIXES = (
    "data",
    "wait",
    "lease",
    "tok",
    "dlv",
    "pos",
    "due",
    "ctr",
    "dead",
    "ddata",
    "dwhy",
    "wake",
)
_WAKE = _SUFFIXES.index("wake")

# Tasks per script call: large batches are split so one call never blocks
# Redis for long. Each chunk is atomic; enqueue and ack are idempotent, so a
# caller that retries after a failure part-way is safe.
_CHUNK = 500

# Records of calls whose replies came, kept per queue until the next call on
# that queue deletes them; more than this are left to their time to live.
_MAX_SPENT = 200

# Numbers redis-py takes as given and fails on only when it uses them (a
# zero socket timeout makes every call fail, a negative one raises at the
# first call).
_POSITIVE = {"socket_timeout", "socket_connect_timeout", "socket_read_size", "max_connections"}
_NONNEGATIVE = {"health_check_interval", "db"}

_T = TypeVar("_T")


def _load_scripts() -> dict[str, str]:
    text = resources.files("gatorapp.backends").joinpath("redis.lua").read_text("utf-8")
    parts = re.split(r"^-- @@ (\w+)\s*$", text, flags=re.MULTILINE)
    sections = dict(zip(parts[1::2], parts[2::2]))
    common = sections.pop("common")
    return {name: common + body for name, body in sections.items()}


_SCRIPTS = _load_scripts()


def _default_options(scheme: str) -> dict[str, Any]:
    # redis-py retries ConnectionError/TimeoutError 10 times by default, which
    # keeps a call hanging for seconds while Redis is down. A few quick tries
    # ride out a dropped connection; after that the error reaches the worker,
    # which logs once and backs off (tenacity) instead of blocking here.
    options: dict[str, Any] = {
        "socket_connect_timeout": 5.0,
        "socket_timeout": 10.0,
        "retry": Retry(ExponentialWithJitterBackoff(cap=0.25, base=0.02), 3),
    }
    if scheme != "unix":
        options["socket_keepalive"] = True  # notice a peer that vanished
    return options


def parse_redis_url(url: str, options: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """Split a backend URL into (key prefix, redis-py URL, client options).

    Validates what redis-py would only reject at the first connection (or
    silently ignore, like a non-numeric db), so a bad URL fails at once.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigurationError(f"bad Redis URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()  # redis-py takes only lower case
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError(f"not a Redis URL: {url!r}")
    prefix = DEFAULT_PREFIX
    query = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "prefix":
            prefix = value
        elif name in URL_QUERY_ARGUMENT_PARSERS or name in _STRING_OPTIONS:
            query.append((name, value))
        else:
            known = sorted({"prefix", *URL_QUERY_ARGUMENT_PARSERS, *_STRING_OPTIONS})
            raise ConfigurationError(
                f"unknown option {name!r} in Redis URL {url!r}; known: {', '.join(known)}"
            )
    prefix = options.pop("prefix", None) or prefix
    if not _PREFIX_RE.match(prefix):
        raise ConfigurationError(
            f"bad Redis key prefix {prefix!r}: use 1-100 letters, digits, '_', '.' or '-'"
        )
    db = parts.path.strip("/")
    if scheme != "unix" and db and not db.isdigit():
        raise ConfigurationError(f"bad database number {db!r} in Redis URL {url!r}")
    if scheme != "unix" and db and any(n == "db" and v != db for n, v in query):
        raise ConfigurationError(f"Redis URL {url!r} names two databases, in path and ?db=")
    if scheme == "unix" and not parts.path:
        raise ConfigurationError(f"Redis URL {url!r} names no socket: unix:///path/to.sock")
    if scheme == "unix" and any(n.startswith("socket_keepalive") for n, _ in query):
        raise ConfigurationError(f"socket_keepalive is for TCP, not unix:// sockets: {url!r}")
    if scheme != "rediss" and any(n.startswith("ssl_") for n, _ in query):
        raise ConfigurationError(f"ssl_* options need a rediss:// URL: {url!r}")
    # (urlunsplit would turn unix:///path into unix:/path)
    rest = url.partition("://")[2].partition("?")[0]
    client_url = f"{scheme}://{rest}" + (f"?{urlencode(query)}" if query else "")
    options = {**_default_options(scheme), **options}
    _check_client(url, client_url, options)
    return prefix, client_url, options


def _check_client(url: str, client_url: str, options: dict[str, Any]) -> None:
    """Build, but never connect, what redis-py would build at the first call,
    so values it only checks then (a bad ``protocol`` or ``ssl_cert_reqs``,
    an unknown keyword) fail now; and check the numbers it takes as given."""
    try:
        given = {**options, **redis_parse_url(client_url)}  # (URL options win)
        for name in sorted(_POSITIVE | _NONNEGATIVE):
            value, zero_ok = given.get(name), name in _NONNEGATIVE
            # (written so that NaN fails too)
            if value is not None and not (value >= 0 if zero_ok else value > 0):
                raise ValueError(f"{name} must be {'>= 0' if zero_ok else '> 0'}, not {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, not {value!r}")
        pool = ConnectionPool.from_url(client_url, **options)
        pool.connection_class(**pool.connection_kwargs)  # no I/O until its first use
    except (TypeError, ValueError, redis.RedisError) as exc:
        raise ConfigurationError(f"bad Redis URL or option {url!r}: {exc}") from None


def _record_ttl(options: dict[str, Any]) -> float:
    """Seconds the record of a call must last: redis-py's retry window for it.

    A lost reply shows after up to ``socket_timeout``; each retry then waits
    its backoff (allowed 1 s) and up to ``socket_connect_timeout`` for a new
    connection before the call is sent again. A timeout of None counts 60 s.
    """
    retry = options.get("retry")
    retries = retry.get_retries() if isinstance(retry, Retry) else 0
    read = options.get("socket_timeout") or 60.0
    per_try = read + (options.get("socket_connect_timeout") or read) + 1.0
    return 1.0 + retries * per_try


def _chunks(items: Sequence[_T], size: int = _CHUNK) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _drain(ps: PubSub, limit: int = 10_000) -> None:
    """Discard wake-ups that came while the worker was busy: the look that
    follows covers them. Bounded, so a flood cannot keep the worker here."""
    for _ in range(limit):
        if ps.get_message(timeout=0.0) is None:
            return


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


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
        self.record_ttl = _record_ttl(given)  #: seconds a call's record lasts (docs/redis.md)
        self._record_ms = math.ceil(self.record_ttl * 1000)
        self._registry = f"{{{self.prefix}}}:queues"
        self._client: redis.Redis | None = None
        self._scripts: dict[str, Script] = {}
        self._lock = threading.Lock()
        self._keys_of: dict[str, list[str]] = {}
        self._spent: dict[str, list[str]] = {}  # queue -> records no retry needs any more
        self._local = threading.local()  # each thread's pub/sub listener for wait()
        self._listeners: list[PubSub] = []

    def __repr__(self) -> str:
        return f"<RedisBackend {self.url!r} prefix={self.prefix!r}>"

    # -- connection ------------------------------------------------------------
    @property
    def client(self) -> redis.Redis:
        """The redis-py client, built (not connected) on first use."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    made = redis.Redis.from_url(self._client_url, **self._client_options)
                    # Script objects reload themselves after NOSCRIPT (a restarted
                    # or failed-over server has an empty script cache).
                    self._scripts = {n: made.register_script(s) for n, s in _SCRIPTS.items()}
                    self._client = made
                client = self._client
        return client

    def close(self) -> None:
        with self._lock:
            listeners, self._listeners = self._listeners, []
            client, self._client = self._client, None
            self._local = threading.local()
        for ps in listeners:
            try:
                ps.close()
            except redis.RedisError:
                pass
        if client is not None:
            client.close()

    @contextmanager
    def _io(self, what: str) -> Iterator[None]:
        """Turn redis-py errors into BackendError, which the CLI reports in one line."""
        try:
            yield
        except redis.RedisError as exc:
            hint = ""
            # A plain-text server never answers the TLS handshake: all redis-py
            # says is that connecting timed out (or, from a server that
            # replied in plain text, that the TLS record was not one).
            text = str(exc).lower()
            handshake = isinstance(exc, redis.TimeoutError) and "connecting" in text
            if self._tls and (handshake or "wrong version number" in text):
                hint = " (rediss:// speaks TLS: is the port a TLS one? redis:// if not)"
            raise BackendError(f"Redis {what} failed: {exc}{hint}") from exc

    def _tag(self, queue: str) -> str:
        return "{" + f"{self.prefix}:{queue}" + "}"

    def _keys(self, queue: str) -> list[str]:
        keys = self._keys_of.get(queue)
        if keys is None:
            keys = self._keys_of[queue] = [f"{self._tag(queue)}:{s}" for s in _SUFFIXES]
        return keys

    def _run(self, name: str, queue: str, args: Sequence[Any], extra: Sequence[str] = ()) -> Any:
        keys = self._keys(queue)
        client = self.client
        with self._io(name):
            return self._scripts[name](keys=[*keys, *extra], args=args, client=client)

    def _recorded(self, name: str, queue: str, args: Sequence[Any]) -> Any:
        """Run a script that keeps a record of what it did, so that redis-py's
        retry of this call after a lost reply returns the same (see redis.lua).

        The record lasts ``record_ttl``; sooner, the next recorded call on the
        queue deletes it, since a call whose reply came is never sent again.
        """
        record = f"{self._tag(queue)}:rec:{uuid.uuid4().hex}"
        with self._lock:
            spent = self._spent.pop(queue, [])
        try:
            result = self._run(name, queue, [self._record_ms, *args], [record, *spent])
        except BackendError:
            self._spend(queue, [*spent, record])  # perhaps not deleted yet
            raise
        self._spend(queue, [record])
        return result

    def _spend(self, queue: str, records: list[str]) -> None:
        with self._lock:
            spent = self._spent.setdefault(queue, [])
            spent += records
            del spent[:-_MAX_SPENT]

    def _registered_run(self, name: str, queue: str, args: Sequence[Any]) -> Any:
        """Run a script that adds tasks, registering the queue in the same
        round trip: a registration cached in this process would miss a Redis
        that restarted empty, since redis-py reconnects without telling us.

        The registry is outside the queue's slot, so it cannot be in the
        script; SADD goes first, so a crash in between leaves a known, empty
        queue, never an unknown one. Both commands are idempotent, so sending
        both again (redis-py's retry, or after NOSCRIPT) is safe.
        """
        client = self.client  # (first: building it loads the scripts)
        script, keys = self._scripts[name], self._keys(queue)

        def send() -> Any:
            pipe = client.pipeline(transaction=False)
            pipe.sadd(self._registry, queue)
            # EVALSHA itself: a Script object in a pipeline costs a SCRIPT
            # EXISTS round trip on every call.
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            return pipe.execute()[1]

        with self._io(name):
            try:
                return send()
            except NoScriptError:
                client.script_load(script.script)  # a restarted server forgot it
                return send()

    # -- primitives ----------------------------------------------------------
    def _enqueue(self, messages: Sequence[Message]) -> None:
        by_queue: dict[str, list[Message]] = {}
        for m in messages:
            by_queue.setdefault(m.queue, []).append(m)
        for queue, msgs in by_queue.items():
            for chunk in _chunks(msgs):
                args: list[Any] = []
                for m in chunk:
                    args += [m.task_id, m.data, f"{m.run_at:.6f}" if m.run_at else ""]
                self._registered_run("enqueue", queue, args)

    def _reserve(self, queue: str, limit: int, lease: float, worker_id: str) -> list[Reservation]:
        token = uuid.uuid4().hex
        # The call's record lets redis-py's retry of this very call return the
        # same tasks instead of leasing a second batch.
        flat = self._recorded("reserve", queue, [limit, f"{lease:.6f}", token])
        return [
            Reservation(queue, _text(flat[i]), bytes(flat[i + 1]), token, int(flat[i + 2]), lease)
            for i in range(0, len(flat), 3)
        ]

    def _batch(
        self,
        name: str,
        items: Sequence[_T],
        reservation: Callable[[_T], Reservation],
        args: Callable[[_T], list[Any]],
    ) -> list[bool]:
        """Run a token-checked script over items, grouped by queue; one bool per item."""
        out = [False] * len(items)
        by_queue: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            by_queue.setdefault(reservation(item).queue, []).append(i)
        for queue, indexes in by_queue.items():
            for chunk in _chunks(indexes):
                flat = [a for i in chunk for a in args(items[i])]
                # An extension is harmless to repeat; the others keep a record.
                run = self._run if name == "extend" else self._recorded
                for i, ok in zip(chunk, run(name, queue, flat)):
                    out[i] = bool(ok)
        return out

    def _ack(self, reservations: Sequence[Reservation]) -> list[bool]:
        return self._batch("ack", reservations, lambda r: r, lambda r: [r.task_id, r.token])

    def _retry(self, items: Sequence[tuple[Reservation, bytes, float]]) -> list[bool]:
        return self._batch(
            "retry",
            items,
            lambda i: i[0],
            lambda i: [i[0].task_id, i[0].token, i[1], f"{i[2]:.6f}"],
        )

    def _release(self, reservations: Sequence[Reservation]) -> list[bool]:
        return self._batch("release", reservations, lambda r: r, lambda r: [r.task_id, r.token])

    def _extend(self, reservations: Sequence[Reservation]) -> list[bool]:
        return self._batch(
            "extend",
            reservations,
            lambda r: r,
            lambda r: [r.task_id, r.token, f"{r.lease:.6f}"],
        )

    def _bury(self, items: Sequence[tuple[Reservation, str, str]]) -> list[bool]:
        return self._batch(
            "bury",
            items,
            lambda i: i[0],
            lambda i: [i[0].task_id, i[0].token, i[1], truncate(i[2])],
        )

    def _take(self, queue: str, task_id: str) -> bytes | None:
        data = self._recorded("take", queue, [task_id])
        if data is None:
            return None
        # get() and cancel() are seldom followed by another call on the queue
        # from this process: delete the record now. Best effort: the task is
        # out of Redis already and must reach the caller; the record expires.
        with self._lock:
            spent = self._spent.pop(queue, [])
        try:
            self.client.delete(*spent)
        except redis.RedisError:
            pass
        return bytes(data)

    # -- waiting -------------------------------------------------------------
    def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Block until a task may be ready in ``queues`` or ``timeout`` passes.

        Listens first, then looks: a task enqueued after the look publishes a
        wake-up this listener already receives, so none is missed.
        """
        if not queues:
            return
        with self._io("wait"):
            try:
                ps = self._listener(queues)
                _drain(ps)
                soonest = self._next_due(queues)
                if soonest is not None and soonest <= 0:
                    return
                ps.get_message(timeout=timeout if soonest is None else min(timeout, soonest))
            except (redis.ConnectionError, redis.TimeoutError):
                # The listener's connection broke: Redis restarted, or it cut
                # off a subscriber that fell behind while this worker was busy.
                # Listen afresh next time; if Redis is down, the caller's next
                # call says so. The pause keeps a listener that keeps failing
                # from turning the worker's loop into a busy one.
                self._drop_listener()
                time.sleep(min(timeout, self.poll_interval))
            except redis.RedisError:
                self._drop_listener()
                raise

    def _next_due(self, queues: Sequence[str]) -> float | None:
        soonest: float | None = None
        for queue in queues:
            value = _text(self._run("next_due", queue, []))
            if value:
                seconds = float(value)
                soonest = seconds if soonest is None else min(soonest, seconds)
                if soonest <= 0:
                    break
        return soonest

    def _listener(self, queues: Sequence[str]) -> PubSub:
        ps: PubSub | None = getattr(self._local, "pubsub", None)
        if ps is None:
            ps = self.client.pubsub()
            with self._lock:
                self._listeners.append(ps)
            self._local.pubsub = ps
            self._local.channels = set()
        channels: set[str] = self._local.channels
        want = {self._keys(q)[_WAKE] for q in queues}
        if want - channels:
            new = sorted(want - channels)
            ps.subscribe(*new)
            self._confirm(ps, set(new))
            channels |= want
        return ps

    def _confirm(self, ps: PubSub, pending: set[str]) -> None:
        # Subscribing is asynchronous: wait for Redis to confirm, or a task
        # published between our look and the subscription would be missed.
        limit = self._client_options.get("socket_timeout") or 10.0
        deadline = time.monotonic() + limit
        while pending:
            left = deadline - time.monotonic()
            msg = ps.get_message(timeout=left) if left > 0 else None
            if msg is None:
                raise redis.TimeoutError(f"no confirmation of SUBSCRIBE {sorted(pending)}")
            if msg["type"] == "subscribe":
                pending.discard(_text(msg["channel"]))

    def _drop_listener(self) -> None:
        ps: PubSub | None = getattr(self._local, "pubsub", None)
        self._local.pubsub = None
        if ps is not None:
            with self._lock:
                if ps in self._listeners:
                    self._listeners.remove(ps)
            try:
                ps.close()
            except redis.RedisError:
                pass

    # -- dead letters ----------------------------------------------------------
    def dead_add(self, queue: str, task_id: str, data: bytes, reason: str, error: str) -> None:
        self._registered_run("dead_add", queue, [task_id, data, reason, truncate(error)])

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
        client = self.client
        with self._io("known_queues"):
            names = sorted(_text(n) for n in client.smembers(self._registry))
            if not names:
                return []
            # A queue stays in the registry after it empties; list only those
            # that hold tasks or dead letters, as the other backends do.
            pipe = client.pipeline(transaction=False)
            for name in names:
                keys = self._keys(name)
                pipe.exists(keys[0], keys[_SUFFIXES.index("dead")])
            return [n for n, count in zip(names, pipe.execute()) if count]

    def drop_all(self, queue_name: str) -> None:
        self._run("drop", queue_name, [])
