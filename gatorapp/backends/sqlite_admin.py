"""The SQLite backend's administration: take by id, results, the list of
workers, periodic ticks, dead letters and counts (the optional protocols of
:mod:`gatorapp.backends.protocols`), over the connection and transactions
its delivery part gives."""

from __future__ import annotations

import sqlite3
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

from . import sqlite_results
from .base import check_queue_name
from .records import DeadLetter, Located, Message, QueueStats, ResultItem
from .sqlite_schema import DEAD_INSERT, blob


class _Conflict(Exception):
    pass


class SQLiteAdmin:
    """The administration methods (a mixin: it comes before ``Backend``
    among the backend's bases, so these replace the base's defaults)."""

    #: the database file's absolute path ("" for a temporary one)
    target: str
    # (The delivery part's own checks, the base backend's.)
    check_queue: Callable[[str], str]
    check_size: Callable[[bytes], None]

    @property
    @abstractmethod
    def conn(self) -> sqlite3.Connection:
        """The calling thread's connection, made on first use."""

    @abstractmethod
    def tx(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE), committed on leaving."""

    def take(self, queue: str, task_id: str) -> bytes | None:
        queue = check_queue_name(queue)
        now = time.time()
        with self.tx() as conn:
            row = conn.execute(
                "DELETE FROM gatorapp_tasks WHERE queue = ? AND task_id = ? "
                "AND (token IS NULL OR lease_until <= ?) RETURNING data",
                (queue, task_id, now),
            ).fetchone()
        return blob(row[0]) if row else None

    # -- results (see sqlite_results) ----------------------------------------------
    def put_results(self, items: Sequence[ResultItem]) -> None:
        if not items:
            return
        with self.tx() as conn:
            sqlite_results.put(conn, self.target, items)
        sqlite_results.notify(self.target)

    def get_result(self, task_id: str) -> bytes | None:
        return sqlite_results.get(self.conn, task_id)

    def wait_result(self, task_id: str, timeout: float) -> bytes | None:
        self.conn  # noqa: B018 (made, so the path of a temporary file is known)
        return sqlite_results.wait(lambda: self.get_result(task_id), self.target, timeout)

    def forget_result(self, task_id: str) -> None:
        with self.tx() as conn:
            conn.execute("DELETE FROM gatorapp_results WHERE task_id = ?", (task_id,))

    def put_worker(self, worker_id: str, record: bytes, ttl: float) -> None:
        with self.tx() as conn:
            sqlite_results.put_worker(conn, worker_id, record, ttl)

    def remove_worker(self, worker_id: str) -> None:
        with self.tx() as conn:
            conn.execute("DELETE FROM gatorapp_workers WHERE worker_id = ?", (worker_id,))

    def list_workers(self) -> list[bytes]:
        return sqlite_results.list_workers(self.conn)

    def locate(self, queue: str, task_id: str) -> Located | None:
        return sqlite_results.locate(self.conn, queue, task_id)

    def enqueue_tick(
        self, message: Message, schedule: str, tick: float
    ) -> tuple[bool, float | None]:
        self.check_queue(message.queue)
        self.check_size(message.data)
        with self.tx() as conn:
            return sqlite_results.enqueue_tick(conn, message, schedule, tick)

    def last_tick(self, schedule: str, queue: str) -> float | None:
        return sqlite_results.last_tick(self.conn, schedule)

    # -- dead letters ----------------------------------------------------------
    def _dead_add(self, queue: str, task_id: str, data: bytes, reason: str, error: str) -> None:
        with self.tx() as conn:
            conn.execute(DEAD_INSERT, (queue, task_id, data, reason, error, time.time()))

    def dead_list(self, queue: str, limit: int = 1000) -> list[DeadLetter]:
        rows = self.conn.execute(
            "SELECT queue, task_id, data, reason, error, failed_at FROM gatorapp_dead "
            "WHERE queue = ? ORDER BY failed_at, seq LIMIT ?",
            (queue, limit),
        ).fetchall()
        return [DeadLetter(r[0], r[1], blob(r[2]), r[3], r[4], r[5]) for r in rows]

    def dead_get(self, queue: str, task_id: str) -> DeadLetter | None:
        r = self.conn.execute(
            "SELECT queue, task_id, data, reason, error, failed_at FROM gatorapp_dead "
            "WHERE queue = ? AND task_id = ? ORDER BY seq DESC LIMIT 1",
            (queue, task_id),
        ).fetchone()
        return DeadLetter(r[0], r[1], blob(r[2]), r[3], r[4], r[5]) if r else None

    def dead_requeue(self, queue: str, task_id: str, data: bytes | None = None) -> bool:
        try:
            with self.tx() as conn:
                row = conn.execute(
                    "DELETE FROM gatorapp_dead WHERE seq = (SELECT MAX(seq) FROM gatorapp_dead "
                    "WHERE queue = ? AND task_id = ?) RETURNING data",
                    (queue, task_id),
                ).fetchone()
                if row is None:
                    return False
                cur = conn.execute(
                    "INSERT OR IGNORE INTO gatorapp_tasks (queue, task_id, data, run_at) "
                    "VALUES (?, ?, ?, ?)",
                    (queue, task_id, data if data is not None else row[0], time.time()),
                )
                if cur.rowcount != 1:
                    raise _Conflict  # the same id is queued again already: keep the dead letter
        except _Conflict:
            return False
        return True

    def dead_purge(self, queue: str, task_id: str | None = None) -> int:
        with self.tx() as conn:
            if task_id is not None:
                return conn.execute(
                    "DELETE FROM gatorapp_dead WHERE queue = ? AND task_id = ?", (queue, task_id)
                ).rowcount
            return conn.execute("DELETE FROM gatorapp_dead WHERE queue = ?", (queue,)).rowcount

    # -- introspection -------------------------------------------------------
    def stats(self, queue: str) -> QueueStats:
        now = time.time()
        conn = self.conn
        ready, delayed, running, oldest = conn.execute(
            "SELECT "
            "COALESCE(SUM(run_at <= ?1 AND (token IS NULL OR lease_until <= ?1)), 0), "
            "COALESCE(SUM(run_at > ?1 AND (token IS NULL OR lease_until <= ?1)), 0), "
            "COALESCE(SUM(token IS NOT NULL AND lease_until > ?1), 0), "
            "MIN(CASE WHEN run_at <= ?1 AND (token IS NULL OR lease_until <= ?1) "
            "THEN run_at END) "
            "FROM gatorapp_tasks WHERE queue = ?2",
            (now, queue),
        ).fetchone()
        (dead,) = conn.execute(
            "SELECT COUNT(*) FROM gatorapp_dead WHERE queue = ?", (queue,)
        ).fetchone()
        return QueueStats(ready, delayed, running, dead, oldest)

    def known_queues(self) -> list[str]:
        rows = self.conn.execute(
            "SELECT queue FROM gatorapp_tasks UNION SELECT queue FROM gatorapp_dead"
        ).fetchall()
        return sorted(r[0] for r in rows)
