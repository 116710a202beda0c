"""``sqlite://``: the embedded default, safe for several worker processes on one file.

URLs follow SQLAlchemy's convention: ``sqlite:///relative.db``,
``sqlite:////absolute/path.db``, and ``sqlite://`` or ``sqlite:///:memory:``
for a private database of this backend object (one process only), kept in a
temporary folder that is removed when the backend is garbage-collected or the
process exits.

Each thread gets its own connection. The file runs in WAL mode, so readers
never block the one writer; every state change is a single statement or an
``IMMEDIATE`` transaction, so two workers can never lease the same task and a
process killed mid-write leaves the database as it was before the write.
Leases and due times are columns: a task is ready when its ``run_at`` has
passed and it has no live lease.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

from ..errors import ConfigurationError
from .base import Backend, chunked, grouped, running_error, truncate
from .protocols import DeadLetterAdmin, QueueAdmin, TakeById
from .records import (
    Burial,
    Message,
    Reservation,
    RetryItem,
    Settled,
)
from .sqlite_admin import SQLiteAdmin
from .sqlite_schema import DEAD_INSERT, blob, create_tables

# Ids per statement (SQLite allows 32,766 parameters; a statement this size is quick).
_CHUNK = 500

# A task is available to reserve when it is due and nobody holds a live lease.
_AVAILABLE = "queue = ? AND run_at <= ? AND (token IS NULL OR lease_until <= ?)"


_R = TypeVar("_R")
log = logging.getLogger("gatorapp.sqlite")


def _remove_folder(folder: str, owner_pid: int) -> None:
    if os.getpid() == owner_pid:
        shutil.rmtree(folder, True)


class _Holder:
    """One thread's connection; closed when the thread's locals are dropped."""

    __slots__ = ("__weakref__", "conn", "generation")

    def __init__(self, conn: sqlite3.Connection, generation: int) -> None:
        self.conn = conn
        self.generation = generation  # of the file it was opened on

    def close(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error:
            pass

    def __del__(self) -> None:
        self.close()


# Connections a forked child inherited: kept alive (unclosed) for good.
_INHERITED: list[_Holder] = []


def sqlite_path(url: str) -> str | None:
    """The database path of a ``sqlite://`` URL, or None for an in-memory database."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise ConfigurationError(f"not a sqlite URL: {url!r}")
    if parts.netloc:
        raise ConfigurationError(
            f"bad sqlite URL {url!r}: use sqlite:///relative.db or sqlite:////absolute/path.db"
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if path in ("", ":memory:"):
        return None
    return path


class SQLiteBackend(SQLiteAdmin, Backend, QueueAdmin, TakeById, DeadLetterAdmin):
    driver_errors = (sqlite3.Error,)
    store_name = "SQLite"
    supports_results = True
    supports_workers = True
    ticks_once = True

    def __init__(self, url: str = "sqlite:///gatorapp.db", **kwargs: object) -> None:
        super().__init__(url, **kwargs)  # type: ignore[arg-type]
        path = sqlite_path(url)
        query = parse_qs(urlsplit(url).query)
        unknown = sorted(set(query) - {"timeout"})
        if unknown:
            raise ConfigurationError(
                f"unknown option(s) {', '.join(unknown)} in {url!r}; known: timeout (seconds)"
            )
        try:
            self.busy_timeout = float(query.get("timeout", ["30"])[0])
        except ValueError:
            raise ConfigurationError(f"bad timeout in {url!r}") from None
        if path is None:
            # A private file rather than a shared-cache memory database: shared
            # cache answers concurrent threads with "database table is locked"
            # (SQLITE_LOCKED), which the busy timeout does not wait out. Its
            # folder is made on first use, not here: building does no I/O.
            self.target = ""
        else:
            self.target = os.path.abspath(path)
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._ready = False
        self._holders: weakref.WeakSet[_Holder] = weakref.WeakSet()
        # The database file's identity when it was set up, and how many times
        # it was found deleted or replaced since (connections of an earlier
        # generation are reopened).
        self._identity: tuple[int, int] | None = None
        self._generation = 0
        self._checked = 0.0

    # -- connections -----------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        folder = os.path.dirname(self.target)
        if folder and not os.path.isdir(folder):
            raise ConfigurationError(
                f"sqlite database folder {folder!r} does not exist (from {self.url!r})"
            )
        conn = sqlite3.connect(
            self.target,
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        holder: _Holder | None = getattr(self._local, "holder", None)
        if holder is None or holder.generation != self._generation:
            if holder is not None:
                holder.close()  # (on a file deleted or replaced: see _check_file)
            with self._lock:
                if not self._ready:
                    self._setup()
                holder = _Holder(self._connect(), self._generation)
                self._holders.add(holder)
            # Only the thread keeps it: when the thread ends, the connection is
            # closed (a thread-per-request web server must not leak them).
            self._local.holder = holder
        return holder.conn

    def _setup(self) -> None:
        if not self.target:
            folder = tempfile.mkdtemp(prefix="gatorapp-sqlite-")
            # Deleted by the process that made it only: a forked child that
            # exits must not take its parent's database with it.
            weakref.finalize(self, _remove_folder, folder, os.getpid())
            self.target = os.path.join(folder, "queue.db")
        conn = self._connect()
        try:
            # WAL persists in the file; switching needs no other writer, so retry briefly.
            mode = ""
            for _ in range(50):
                try:
                    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                    break
                except sqlite3.OperationalError:
                    time.sleep(0.1)
            if str(mode).lower() != "wal":
                log.warning(
                    "%s could not switch to WAL mode (journal mode %r): readers will block "
                    "writers; is it on a network filesystem?",
                    self.target,
                    mode,
                )
            create_tables(conn)
        finally:
            conn.close()
        self._identity = self._file_identity()
        self._ready = True

    def describe(self) -> str:
        if not self.target:
            return "sqlite:// (a temporary file, made on first use)"
        return f"sqlite:///{self.target}"

    def missing_store(self) -> str | None:
        if self.target and not os.path.exists(self.target):
            return f"no database at {self.target} (nothing was enqueued there yet?)"
        return None

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.target)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _check_file(self) -> None:
        """The database file deleted or replaced while in use (a deploy that
        recreated it, a cleanup job): this process would go on with the old,
        unlinked file, and never see a task enqueued into the new one. Say so
        loudly and reopen. Called on idle polls and at most once a second
        from reserve."""
        known = self._identity
        if known is None:
            return
        found = self._file_identity()
        if found == known:
            return
        with self._lock:
            if self._identity != known:
                return  # another thread saw it first
            log.error(
                "sqlite database %s was %s while in use; reopening it (tasks left in the "
                "old file are not seen any more)",
                self.target,
                "deleted" if found is None else "replaced",
            )
            self._identity = None
            self._ready = False  # a deleted file is made again, with its tables
            self._generation += 1

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            # Also after a failed COMMIT: a connection left inside a transaction
            # would hold its lock and refuse every later BEGIN.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close this thread's connection now; any other thread's is closed by
        that thread, on its next call (which opens a new one) or when it ends.
        (Closing a connection while another thread runs a statement on it can
        crash the interpreter inside sqlite3.)"""
        mine: _Holder | None = getattr(self._local, "holder", None)
        with self._lock:
            if mine is not None:
                mine.close()
                self._holders.discard(mine)
                self._local.holder = None
            # The others see a new generation and close their own; the
            # thread-local is kept, since dropping it would free (and close)
            # their connections from this thread.
            self._generation += 1
            self._ready = False

    def after_fork(self) -> None:
        # SQLite forbids using (or closing: a close can checkpoint the WAL) a
        # connection opened before fork(). The parent's are kept referenced,
        # never touched again, and this process opens its own.
        _INHERITED.extend(self._holders)
        self._holders = weakref.WeakSet()
        self._local = threading.local()
        self._lock = threading.Lock()

    # -- primitives ----------------------------------------------------------
    def _enqueue(self, messages: Sequence[Message]) -> None:
        now = time.time()
        rows = [(m.queue, m.task_id, m.data, m.run_at or now) for m in messages]
        with self.tx() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO gatorapp_tasks (queue, task_id, data, run_at) "
                "VALUES (?, ?, ?, ?)",
                rows,
            )
            if conn.total_changes - before < len(rows):
                # Some ids are in the queue already: fine while they wait, refused
                # (the transaction undone) where one runs now as another task.
                for m in messages:
                    held = conn.execute(
                        "SELECT data FROM gatorapp_tasks WHERE queue = ? AND task_id = ? "
                        "AND token IS NOT NULL AND lease_until > ?",
                        (m.queue, m.task_id, now),
                    ).fetchone()
                    if held is not None and blob(held[0]) != m.data:
                        raise running_error(m.queue, m.task_id)

    def _reserve(self, queue: str, limit: int, lease: float, worker_id: str) -> list[Reservation]:
        now = time.time()
        if now - self._checked > 1.0:
            self._checked = now
            self._check_file()
        conn = self.conn
        # A read first: idle workers polling must not take the write lock.
        if (
            conn.execute(
                f"SELECT 1 FROM gatorapp_tasks WHERE {_AVAILABLE} LIMIT 1", (queue, now, now)
            ).fetchone()
            is None
        ):
            return []
        token = uuid.uuid4().hex
        rows = conn.execute(
            "UPDATE gatorapp_tasks SET token = ?, lease_until = ?, deliveries = deliveries + 1 "
            f"WHERE seq IN (SELECT seq FROM gatorapp_tasks WHERE {_AVAILABLE} "
            "ORDER BY run_at, seq LIMIT ?) "
            "RETURNING seq, run_at, task_id, data, deliveries",
            (token, now + lease, queue, now, now, limit),
        ).fetchall()
        rows.sort(key=lambda r: (r[1], r[0]))
        return [Reservation(queue, r[2], blob(r[3]), token, r[4], lease) for r in rows]

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        deadline = time.time() + timeout
        while True:
            self._check_file()
            conn = self.conn
            now = time.time()
            for queue in queues:
                if conn.execute(
                    f"SELECT 1 FROM gatorapp_tasks WHERE {_AVAILABLE} LIMIT 1", (queue, now, now)
                ).fetchone():
                    return
            if now >= deadline:
                return
            time.sleep(min(self.poll_interval, max(0.0, deadline - now)))

    def _ack(self, reservations: Sequence[Reservation]) -> list[bool]:
        with self.tx() as conn:
            return self._delete_held(conn, reservations)

    @staticmethod
    def _delete_held(conn: sqlite3.Connection, reservations: Sequence[Reservation]) -> list[bool]:
        """Delete the tasks whose lease is still held: one statement per batch
        (queue and token) and 500 ids; True for each one deleted."""

        def delete(key: tuple[str, str], indexes: list[int]) -> list[bool]:
            queue, token = key
            ids = [reservations[i].task_id for i in indexes]
            gone: set[str] = set()
            for chunk in chunked(ids, _CHUNK):
                marks = ",".join("?" * len(chunk))
                gone.update(
                    row[0]
                    for row in conn.execute(
                        "DELETE FROM gatorapp_tasks WHERE queue = ? AND token = ? "
                        f"AND task_id IN ({marks}) RETURNING task_id",
                        (queue, token, *chunk),
                    )
                )
            return [task_id in gone for task_id in ids]

        return grouped([(r.queue, r.token) for r in reservations], delete)

    def settle(
        self,
        acks: Sequence[Reservation],
        retries: Sequence[RetryItem] = (),
        buries: Sequence[Burial] = (),
    ) -> Settled:
        # One transaction, one commit, for all three.
        if not (acks or retries or buries):
            return Settled([], [], [])
        with self.tx() as conn:
            return Settled(
                self._delete_held(conn, acks),
                self._retry_in(conn, retries),
                self._bury_in(conn, buries),
            )

    def _retry(self, items: Sequence[RetryItem]) -> list[bool]:
        with self.tx() as conn:
            return self._retry_in(conn, items)

    @staticmethod
    def _retry_in(conn: sqlite3.Connection, items: Sequence[RetryItem]) -> list[bool]:
        return [
            conn.execute(
                "UPDATE gatorapp_tasks SET data = ?, run_at = ?, token = NULL, "
                "lease_until = NULL, deliveries = 0 "
                "WHERE queue = ? AND task_id = ? AND token = ?",
                (data, run_at, r.queue, r.task_id, r.token),
            ).rowcount
            == 1
            for r, data, run_at in items
        ]

    def _release(self, reservations: Sequence[Reservation]) -> list[bool]:
        with self.tx() as conn:
            return [
                conn.execute(
                    "UPDATE gatorapp_tasks SET token = NULL, lease_until = NULL, "
                    "deliveries = MAX(deliveries - 1, 0) "
                    "WHERE queue = ? AND task_id = ? AND token = ?",
                    (r.queue, r.task_id, r.token),
                ).rowcount
                == 1
                for r in reservations
            ]

    def _extend(self, reservations: Sequence[Reservation]) -> list[bool]:
        now = time.time()
        with self.tx() as conn:
            return [
                conn.execute(
                    "UPDATE gatorapp_tasks SET lease_until = ? "
                    "WHERE queue = ? AND task_id = ? AND token = ?",
                    (now + r.lease, r.queue, r.task_id, r.token),
                ).rowcount
                == 1
                for r in reservations
            ]

    def _bury(self, items: Sequence[Burial]) -> list[bool]:
        with self.tx() as conn:
            return self._bury_in(conn, items)

    @staticmethod
    def _bury_in(conn: sqlite3.Connection, items: Sequence[Burial]) -> list[bool]:
        now = time.time()
        out = []
        for r, reason, error in items:
            row = conn.execute(
                "DELETE FROM gatorapp_tasks WHERE queue = ? AND task_id = ? AND token = ? "
                "RETURNING data",
                (r.queue, r.task_id, r.token),
            ).fetchone()
            if row is not None:
                letter = (r.queue, r.task_id, row[0], reason, truncate(error), now)
                conn.execute(DEAD_INSERT, letter)
            out.append(row is not None)
        return out

    def clear(self, queue_name: str) -> None:
        with self.tx() as conn:
            conn.execute("DELETE FROM gatorapp_tasks WHERE queue = ?", (queue_name,))
