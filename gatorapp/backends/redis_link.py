"""Commands to a Redis server over connections the backend keeps itself.

redis-py's client spends more on every call than a loopback round trip takes:
pool bookkeeping, a readiness poll of the socket, retry and telemetry wrappers.
The backend's calls go through a :class:`Link` instead: a small pool of
redis-py ``Connection`` objects (the same sockets, TLS, authentication and
hiredis parsing), one command or one pipeline of commands per round trip,
with redis-py's own ``Retry`` policy for a dropped connection (the backend's
scripts are safe to send twice, see ``redis.lua``). Pub/sub and the rare
administrative calls still use the redis-py client.

A Link is thread-safe: each call takes a connection from the pool and puts it
back. After ``fork()`` a child starts with an empty pool: it never touches the
parent's sockets.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis
from redis.exceptions import NoScriptError, ResponseError
from redis.retry import Retry

Command = Sequence[Any] | bytes


def _arg(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value).encode()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"cannot send a {type(value).__name__} to Redis")


def bulk(value: Any) -> bytes:
    """One argument in the Redis protocol (RESP)."""
    data = value if type(value) is bytes else _arg(value)
    return b"$%d\r\n%b\r\n" % (len(data), data)


def pack(command: Sequence[Any]) -> bytes:
    """A command in the Redis protocol: what redis-py's packers make, without
    their per-call overhead."""
    return b"*%d\r\n" % len(command) + b"".join(map(bulk, command))


class Link:
    """:param pool: a redis-py pool, used only for its connection class and options.
    :param retry: what to do when a connection drops mid-call (None: fail at once).
    """

    def __init__(self, pool: redis.ConnectionPool, retry: Retry | None) -> None:
        self._make: Callable[[], Any] = lambda: pool.connection_class(**pool.connection_kwargs)
        self._retry = retry
        self._lock = threading.Lock()
        self._free: list[Any] = []
        self._pid = os.getpid()
        #: called with the list of commands that met NOSCRIPT; loads the scripts
        self.on_noscript: Callable[[Any], None] | None = None

    def _get(self) -> Any:
        with self._lock:
            if self._pid != os.getpid():
                # A forked child: the parent's connections are the parent's.
                self._pid = os.getpid()
                self._free = []
            if self._free:
                return self._free.pop()
        return self._make()

    def _put(self, conn: Any) -> None:
        with self._lock:
            if self._pid == os.getpid():
                self._free.append(conn)

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A connection of the pool, for a command the caller drives itself (a
        blocking one); disconnected if anything goes wrong, then put back."""
        conn = self._get()
        try:
            yield conn
        except BaseException:
            conn.disconnect()  # a half-read reply must not reach the next caller
            self._put(conn)
            raise
        self._put(conn)

    def after_fork(self) -> None:
        """In a forked child: a lock another thread of the parent held at the
        fork would stay held here for good, and the parent's connections are
        the parent's."""
        self._lock = threading.Lock()
        self._free = []
        self._pid = os.getpid()

    def close(self) -> None:
        with self._lock:
            free, self._free = self._free, []
        for conn in free:
            conn.disconnect()

    def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """Send every command, then read every reply: one round trip. A command
        is its arguments, or bytes already in the protocol (:func:`pack`). An
        error reply is returned in its place, as a ``ResponseError``, not raised."""
        return self.send(commands).read()

    def send(self, commands: Sequence[Command]) -> Sent:
        """Send the commands now; :meth:`Sent.read` reads their replies later,
        so the caller can work while Redis does (a worker runs tasks)."""
        packed = b"".join([c if type(c) is bytes else pack(c) for c in commands])
        conn = self._get()
        sent = Sent(self, conn, packed, len(commands))
        try:
            conn.send_packed_command([packed])
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            conn.disconnect()
            sent.failed = True  # read() sends again, by the retry policy
        except BaseException:
            conn.disconnect()
            self._put(conn)
            raise
        return sent

    def receive(self, sent: Sent) -> list[Any]:
        """The replies to ``sent`` (see :meth:`Sent.read`)."""
        conn, packed, n = sent.conn, sent.packed, sent.n
        try:
            try:
                if sent.failed:
                    raise redis.ConnectionError("the connection dropped while sending")
                out = self._once(conn, packed, n, send=False)
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                # Dropped mid-call: redis-py's retry policy, on a new connection.
                conn.disconnect()
                if self._retry is None:
                    raise
                out = self._retry.call_with_retry(
                    lambda: self._once(conn, packed, n), lambda error: conn.disconnect()
                )
            if self.on_noscript is not None:
                for reply in out:
                    if type(reply) is NoScriptError:
                        # A restarted (or failed-over) server has an empty script
                        # cache: load the scripts and send the whole pipeline again.
                        self.on_noscript(conn)
                        out = self._once(conn, packed, n)
                        break
        except BaseException:
            conn.disconnect()  # a half-read reply must not reach the next caller
            self._put(conn)
            raise
        self._put(conn)
        return out

    def call(self, *command: Any) -> Any:
        """One command; an error reply is raised."""
        (reply,) = self.pipeline([command])
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    @staticmethod
    def _once(conn: Any, packed: bytes, n: int, send: bool = True) -> list[Any]:
        if send:
            conn.send_packed_command([packed])
        read = conn.read_response
        out: list[Any] = []
        for _ in range(n):
            try:
                out.append(read())
            except ResponseError as exc:  # the reply was read whole: stay in step
                out.append(exc)
        return out


class Sent:
    """Commands sent on a connection whose replies are not read yet."""

    __slots__ = ("conn", "failed", "link", "n", "packed")

    def __init__(self, link: Link, conn: Any, packed: bytes, n: int) -> None:
        self.link = link
        self.conn = conn
        self.packed = packed
        self.n = n
        self.failed = False

    def read(self) -> list[Any]:
        """The replies, in order (an error reply as a ``ResponseError`` in its
        place). A connection that dropped is retried by the Link's policy."""
        return self.link.receive(self)
