"""Redis for producers in async code.

``adelay``, ``amap`` and ``aget`` on a Redis app send the same commands as
their sync forms without blocking the caller's event loop and without a
thread. Enqueueing goes over a connection of gatorapp's own per event loop:
an asyncio protocol that writes each call at once and parses replies with
hiredis as they arrive, so many coroutines enqueueing at once share one
connection, pipelined, and one call costs one wake-up of the loop (redis-py's
asyncio client costs several, which made ``adelay`` half as fast as
``delay``). Without hiredis, over TLS, and for pub/sub (``aget``), redis-py's
asyncio client is used.

Enqueue scripts are idempotent by task id, so a call whose connection drops
is sent again (three tries), as the sync link does.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

try:
    import hiredis
except ImportError:  # (the redis extra installs it)
    hiredis = None  # type: ignore[assignment]

import redis
import redis.asyncio
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import NoScriptError, ResponseError

from .redis_link import Command, pack
from .redis_results import ENTER, LEAVE, waiters_key

TRIES = 3


def _noscript(reply: Any) -> bool:
    return isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT")


class _Protocol(asyncio.Protocol):
    """One connection: calls go out in order, their replies are matched in order."""

    def __init__(self, reader: Any, timeout: float | None) -> None:
        self.loop = asyncio.get_running_loop()  # (made inside the loop it serves)
        self.reader = reader
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        # (future, replies expected, replies so far, when sent)
        self.waiting: deque[tuple[asyncio.Future[list[Any]], int, list[Any], float]] = deque()
        self.lost: BaseException | None = None
        # One timer watches the oldest call, not one timer per call.
        self._watch: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses)
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        while waiting:
            fut, n, out, _ = waiting[0]
            while len(out) < n:
                reply = self.reader.gets()
                if reply is False:
                    return
                out.append(reply)
            waiting.popleft()
            if not fut.done():
                fut.set_result(out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(redis.ConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    def _fail(self, error: BaseException) -> None:
        self.lost = self.lost or error
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        while self.waiting:
            fut = self.waiting.popleft()[0]
            if not fut.done():
                fut.set_exception(error)

    def call(self, packed: bytes, n: int) -> asyncio.Future[list[Any]]:
        loop = self.loop
        fut: asyncio.Future[list[Any]] = loop.create_future()
        if self.lost is not None or self.transport is None:
            fut.set_exception(self.lost or redis.ConnectionError("not connected"))
            return fut
        now = loop.time()
        self.waiting.append((fut, n, [], now))
        self.transport.write(packed)
        if self.timeout is not None and self._watch is None:
            self._watch = loop.call_at(now + self.timeout, self._check)
        return fut

    def _check(self) -> None:
        """The oldest call has had ``timeout`` seconds: fail it (the connection
        is out of step then, so it is dropped), or look again when it has."""
        self._watch = None
        if not self.waiting or self.timeout is None:
            return
        due = self.waiting[0][3] + self.timeout
        if self.loop.time() < due:
            self._watch = self.loop.call_at(due, self._check)
            return
        if self.transport is not None:
            self.transport.abort()
        self._fail(redis.TimeoutError(f"Redis did not answer within {self.timeout} s"))


class _Fast:
    """A connection of gatorapp's own per event loop (plain TCP or a Unix socket)."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.kwargs = kwargs
        #: called (awaited) before a loop's first connection (see AsyncLink)
        self.on_new_loop: Callable[[asyncio.AbstractEventLoop], Awaitable[None]] = _nothing
        self.timeout = kwargs.get("socket_timeout") or None
        self._conns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Protocol] = (
            weakref.WeakKeyDictionary()
        )
        self._opening: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Protocol:
        kw = self.kwargs
        reader = hiredis.Reader(replyError=ResponseError)
        made = (
            loop.create_unix_connection(lambda: _Protocol(reader, self.timeout), kw["path"])
            if "path" in kw
            else loop.create_connection(
                lambda: _Protocol(reader, self.timeout), kw["host"], kw["port"]
            )
        )
        _, proto = await asyncio.wait_for(made, kw.get("socket_connect_timeout") or 5.0)
        setup: list[tuple[Any, ...]] = []
        if kw.get("password"):
            user = kw.get("username")
            setup.append(("AUTH", user, kw["password"]) if user else ("AUTH", kw["password"]))
        if kw.get("db"):
            setup.append(("SELECT", kw["db"]))
        if setup:
            for reply in await self._wait(proto, pack_all(setup), len(setup)):
                if isinstance(reply, ResponseError):
                    if proto.transport is not None:
                        proto.transport.close()
                    raise reply
        return proto

    def ready(self) -> _Protocol | None:
        """The running loop's connection, if it is open."""
        proto = self._conns.get(asyncio.get_running_loop())
        return proto if proto is not None and proto.lost is None else None

    async def conn(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        proto = self._conns.get(loop)
        if proto is not None and proto.lost is None:
            return proto
        lock = self._opening.setdefault(loop, asyncio.Lock())
        async with lock:
            proto = self._conns.get(loop)
            if proto is None or proto.lost is not None:
                await self.on_new_loop(loop)
                proto = self._conns[loop] = await self._connect(loop)
        return proto

    async def _wait(self, proto: _Protocol, packed: bytes, n: int) -> list[Any]:
        return await proto.call(packed, n)

    async def pipeline(self, packed: bytes, n: int) -> list[Any]:
        return await self._wait(await self.conn(), packed, n)

    def drop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close ``loop``'s connection (the loop is shutting down)."""
        proto = self._conns.pop(loop, None)
        if proto is not None and proto.transport is not None:
            proto.transport.close()

    def close(self) -> None:
        for proto in list(self._conns.values()):
            if proto.transport is not None:
                proto.transport.close()
        self._conns.clear()


async def _nothing(loop: asyncio.AbstractEventLoop) -> None:
    return None


def pack_all(commands: Sequence[Command]) -> bytes:
    return b"".join([c if type(c) is bytes else pack(c) for c in commands])


class AsyncLink:
    """Packed commands for async producers; see the module.

    :param sources: the Lua scripts to load when Redis has forgotten them.
    """

    def __init__(self, client_url: str, options: dict[str, Any], sources: list[str]) -> None:
        kwargs = redis.ConnectionPool.from_url(client_url, **options).connection_kwargs
        tls = client_url.startswith("rediss:")
        self._fast = _Fast(kwargs) if hiredis is not None and not tls else None
        self._url = client_url
        # (redis-py's sync Retry does not drive asyncio connections; tries are
        # made here instead)
        self._options = {k: v for k, v in options.items() if k != "retry"}
        self._sources = sources
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._closers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncIterator[None]] = (
            weakref.WeakKeyDictionary()
        )
        if self._fast is not None:
            self._fast.on_new_loop = self._closing_with
        self._backoff = ExponentialWithJitterBackoff(cap=0.25, base=0.02)

    async def client(self) -> Any:
        """The asyncio client of the running loop (made on first use)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            await self._closing_with(loop)
            client = redis.asyncio.Redis.from_url(self._url, **self._options)
            self._clients[loop] = client
        return client

    async def _closing_with(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close this loop's connections when the loop shuts down.

        asyncio has no hook for a loop's end, but ``asyncio.run`` (and every
        server built on it) closes the loop's async generators first: one
        waiting here closes the connections then, so a finished loop leaves
        no socket open."""
        if loop in self._closers:
            return
        closer = self._closer(loop)
        self._closers[loop] = closer
        await closer.__anext__()

    async def _closer(self, loop: asyncio.AbstractEventLoop) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if self._fast is not None:
                self._fast.drop(loop)
            client = self._clients.pop(loop, None)
            if client is not None:
                await client.aclose()

    async def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """Send every command, read every reply (one round trip); an error
        reply is raised."""
        packed = pack_all(commands)
        fast = self._fast
        if fast is not None:
            proto = fast.ready()
            if proto is not None:
                # The common case, written out: an open connection, no error.
                try:
                    out = await proto.call(packed, len(commands))
                except (redis.ConnectionError, redis.TimeoutError, OSError):
                    out = None  # (tried again below: enqueue is idempotent)
                if out is not None and not any(isinstance(r, ResponseError) for r in out):
                    return out
            return await self._fast_pipeline(packed, len(commands))
        pool = (await self.client()).connection_pool
        for attempt in range(TRIES):
            conn = await pool.get_connection()
            try:
                out = await self._once(conn, packed, len(commands))
                if any(type(r) is NoScriptError for r in out):
                    for source in self._sources:
                        await conn.send_command("SCRIPT", "LOAD", source)
                        await conn.read_response()
                    out = await self._once(conn, packed, len(commands))
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                await conn.disconnect()
                if attempt + 1 == TRIES:
                    raise
                await asyncio.sleep(self._backoff.compute(attempt + 1))
                continue
            except BaseException:
                await conn.disconnect()  # a half-read reply must not reach the next caller
                raise
            finally:
                await pool.release(conn)
            for reply in out:
                if isinstance(reply, ResponseError):
                    raise reply
            return out
        raise AssertionError("unreachable")

    async def _fast_pipeline(self, packed: bytes, n: int) -> list[Any]:
        fast = self._fast
        assert fast is not None
        for attempt in range(TRIES):
            try:
                out = await fast.pipeline(packed, n)
                if any(_noscript(r) for r in out):
                    await fast.pipeline(
                        pack_all([("SCRIPT", "LOAD", s) for s in self._sources]), len(self._sources)
                    )
                    out = await fast.pipeline(packed, n)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                if attempt + 1 < TRIES:
                    await asyncio.sleep(self._backoff.compute(attempt + 1))
                    continue
                if isinstance(exc, redis.RedisError):
                    raise
                # (a refused or timed-out connect: the same error redis-py gives)
                raise redis.ConnectionError(f"cannot reach Redis: {exc}") from exc
            for reply in out:
                if isinstance(reply, ResponseError):
                    raise reply
            return out
        raise AssertionError("unreachable")

    @staticmethod
    async def _once(conn: Any, packed: bytes, n: int) -> list[Any]:
        await conn.send_packed_command(packed)
        out: list[Any] = []
        for _ in range(n):
            try:
                out.append(await conn.read_response())
            except ResponseError as exc:  # the reply was read whole: stay in step
                out.append(exc)
        return out

    async def wait(self, prefix: str, key: str, timeout: float) -> bytes | None:
        """:func:`gatorapp.backends.redis_results.wait`, awaited."""
        client = await self.client()
        value = await client.get(key)
        if value is not None or timeout <= 0:
            return None if value is None else bytes(value)
        deadline = time.monotonic() + timeout
        counter = waiters_key(prefix)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await client.eval(ENTER, 1, counter, int((timeout + 60) * 1000))
            await pubsub.subscribe(key)
            value = await client.get(key)
            while value is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                message = await pubsub.get_message(timeout=min(left, 1.0))
                value = message["data"] if message is not None else await client.get(key)
            return bytes(value)
        finally:
            await pubsub.aclose()
            await client.eval(LEAVE, 1, counter)

    async def close(self) -> None:
        """Close the running loop's client (others close with their loops)."""
        if self._fast is not None:
            self._fast.close()
        loop = asyncio.get_running_loop()
        client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()
