"""Idle workers on PostgreSQL: LISTEN for the enqueues of their queues.

An enqueue sends ``pg_notify`` on the channel of each queue it put a task due
now into, in its own statement (so in the producer's transaction: delivered
on commit, dropped on rollback, and sent once per queue however many rows,
since PostgreSQL folds identical notifications of one transaction into one).
An idle worker blocks on a connection of its own that LISTENs on the
channels of its queues, and looks again when one arrives, or after the poll
interval at the latest (delayed tasks falling due and expired leases send no
notification). A failed LISTEN connection is dropped and made again on the
next wait; meanwhile a wait polls.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql

#: the prefix of every channel gatorapp notifies on
PREFIX = "gatorapp:"
#: channel names are at most 63 bytes (PostgreSQL's NAMEDATALEN - 1)
_ROOM = 63 - len(PREFIX) - 1


def channel(queue: str) -> str:
    """The channel of ``queue``: ``gatorapp:<queue>``, or for a name too long
    for a channel, ``gatorapp:#`` and the MD5 of the name in hex."""
    if len(queue.encode()) <= _ROOM:
        return PREFIX + queue
    return PREFIX + "#" + hashlib.md5(queue.encode(), usedforsecurity=False).hexdigest()


class Listener:
    """One LISTEN connection of a backend object, used by one waiting thread
    at a time (``lock``; another thread that waits meanwhile polls)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.lock = threading.Lock()
        self.conn: Any = None
        self.channels: set[str] = set()
        #: a channel of this listener's own, that :meth:`wake` notifies
        self.wake_channel = PREFIX + "wake:" + os.urandom(8).hex()
        self.waiting = False

    def listen(self, queues: Iterable[str]) -> None:
        """Connect if need be, LISTEN on the channels of ``queues`` not yet
        listened to, and throw away the notifications received so far (the
        caller looks at the table next: it sees what they were about)."""
        conn = self.conn
        if conn is None or conn.closed:
            conn = self.conn = psycopg.connect(
                self.dsn, autocommit=True, application_name="gatorapp listen"
            )
            self.channels = set()
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.wake_channel)))
        new = {channel(q) for q in queues} - self.channels
        if new:
            conn.execute(
                sql.SQL("; ").join(
                    sql.SQL("LISTEN {}").format(sql.Identifier(c)) for c in sorted(new)
                )
            )
            self.channels |= new
        for _ in conn.notifies(timeout=0):
            pass

    def block(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a notification: True if one came
        (and True at once when :meth:`drop` took the connection meanwhile, as
        ``close()`` does from another thread: the caller looks, then ends)."""
        conn = self.conn
        if conn is None:
            return True
        for _ in conn.notifies(timeout=timeout, stop_after=1):
            return True
        return False

    def drop(self) -> None:
        conn, self.conn = self.conn, None
        self.channels = set()
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass
