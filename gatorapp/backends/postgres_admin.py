"""The PostgreSQL backend's administration: take by id, results, the list of
workers, periodic ticks, dead letters and counts (the optional protocols of
:mod:`gatorapp.backends.protocols`), over the connection its delivery part
gives (:attr:`PostgresAdmin.conn`)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from .base import check_queue_name
from .postgres_listen import channel
from .postgres_sql import DEAD_INSERT, NOW, insert
from .records import DeadLetter, Located, Message, QueueStats, ResultItem


class _Conflict(Exception):
    pass


class PostgresAdmin:
    """The administration methods (a mixin: it comes before ``Backend``
    among the backend's bases, so these replace the base's defaults)."""

    #: whether enqueues notify idle workers (see PostgresBackend)
    notify: bool

    @property
    @abstractmethod
    def conn(self) -> Any:
        """The calling thread's connection, made on first use."""

    # (The delivery part's own checks, the base backend's.)
    check_queue: Callable[[str], str]
    check_size: Callable[[bytes], None]
    #: counts rows deleted from the tasks table (for the vacuum it starts)
    deleted: Callable[[int], None]

    def take(self, queue: str, task_id: str) -> bytes | None:
        queue = check_queue_name(queue)
        row = self.conn.execute(
            "DELETE FROM gatorapp_tasks WHERE queue = %s AND task_id = %s "
            f"AND (token IS NULL OR lease_until <= {NOW}) RETURNING data",
            (queue, task_id),
        ).fetchone()
        if row is None:
            return None
        self.deleted(1)
        return bytes(row[0])

    # -- results, workers, ticks -------------------------------------------------
    def put_results(self, items: Sequence[ResultItem]) -> None:
        if not items:
            return
        self.conn.execute(
            "INSERT INTO gatorapp_results (task_id, record, expires_at) "
            f"SELECT i, r, {NOW} + t FROM unnest(%s::text[], %s::bytea[], %s::float8[]) "
            "AS m(i, r, t) ON CONFLICT (task_id) DO UPDATE "
            "SET record = excluded.record, expires_at = excluded.expires_at",
            ([i for i, _, _ in items], [r for _, r, _ in items], [t for _, _, t in items]),
        )

    def get_result(self, task_id: str) -> bytes | None:
        row = self.conn.execute(
            f"SELECT record FROM gatorapp_results WHERE task_id = %s AND expires_at > {NOW}",
            (task_id,),
        ).fetchone()
        return bytes(row[0]) if row else None

    def forget_result(self, task_id: str) -> None:
        self.conn.execute("DELETE FROM gatorapp_results WHERE task_id = %s", (task_id,))

    def locate(self, queue: str, task_id: str) -> Located | None:
        row = self.conn.execute(
            f"SELECT data, run_at <= {NOW}, token IS NOT NULL AND lease_until > {NOW} "
            "FROM gatorapp_tasks WHERE queue = %s AND task_id = %s",
            (queue, task_id),
        ).fetchone()
        if row is None:
            return None
        return ("running" if row[2] else "ready" if row[1] else "delayed"), bytes(row[0])

    def put_worker(self, worker_id: str, record: bytes, ttl: float) -> None:
        conn = self.conn
        with conn.transaction():
            conn.execute(f"DELETE FROM gatorapp_workers WHERE expires_at <= {NOW}")
            conn.execute(
                "INSERT INTO gatorapp_workers (worker_id, record, expires_at) "
                f"VALUES (%s, %s, {NOW} + %s) ON CONFLICT (worker_id) DO UPDATE "
                "SET record = excluded.record, expires_at = excluded.expires_at",
                (worker_id, record, ttl),
            )

    def remove_worker(self, worker_id: str) -> None:
        self.conn.execute("DELETE FROM gatorapp_workers WHERE worker_id = %s", (worker_id,))

    def list_workers(self) -> list[bytes]:
        rows = self.conn.execute(
            f"SELECT record FROM gatorapp_workers WHERE expires_at > {NOW} ORDER BY worker_id"
        ).fetchall()
        return [bytes(r[0]) for r in rows]

    def enqueue_tick(
        self, message: Message, schedule: str, tick: float
    ) -> tuple[bool, float | None]:
        self.check_queue(message.queue)
        self.check_size(message.data)
        conn = self.conn
        with conn.transaction():
            row = conn.execute(
                "SELECT last_tick FROM gatorapp_schedules WHERE name = %s FOR UPDATE",
                (schedule,),
            ).fetchone()
            last = None if row is None else float(row[0])
            if last is not None and last >= tick:
                return False, last
            conn.execute(
                "INSERT INTO gatorapp_schedules (name, last_tick) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET last_tick = "
                "greatest(gatorapp_schedules.last_tick, excluded.last_tick)",
                (schedule, tick),
            )
            insert(conn, [message], self.notify)
            return True, last

    def last_tick(self, schedule: str, queue: str) -> float | None:
        row = self.conn.execute(
            "SELECT last_tick FROM gatorapp_schedules WHERE name = %s", (schedule,)
        ).fetchone()
        return None if row is None else float(row[0])

    # -- dead letters ----------------------------------------------------------
    def _dead_add(self, queue: str, task_id: str, data: bytes, reason: str, error: str) -> None:
        self.conn.execute(DEAD_INSERT, (queue, task_id, data, reason, error))

    _LETTER = "SELECT queue, task_id, data, reason, error, failed_at FROM gatorapp_dead "

    def dead_list(self, queue: str, limit: int = 1000) -> list[DeadLetter]:
        rows = self.conn.execute(
            self._LETTER + "WHERE queue = %s ORDER BY failed_at, seq LIMIT %s", (queue, limit)
        ).fetchall()
        return [DeadLetter(r[0], r[1], bytes(r[2]), r[3], r[4], r[5]) for r in rows]

    def dead_get(self, queue: str, task_id: str) -> DeadLetter | None:
        r = self.conn.execute(
            self._LETTER + "WHERE queue = %s AND task_id = %s ORDER BY seq DESC LIMIT 1",
            (queue, task_id),
        ).fetchone()
        return DeadLetter(r[0], r[1], bytes(r[2]), r[3], r[4], r[5]) if r else None

    def dead_requeue(self, queue: str, task_id: str, data: bytes | None = None) -> bool:
        conn = self.conn
        try:
            with conn.transaction():
                row = conn.execute(
                    "DELETE FROM gatorapp_dead WHERE seq = (SELECT max(seq) FROM gatorapp_dead "
                    "WHERE queue = %s AND task_id = %s) RETURNING data",
                    (queue, task_id),
                ).fetchone()
                if row is None:
                    return False
                cur = conn.execute(
                    "INSERT INTO gatorapp_tasks (queue, task_id, data, run_at) "
                    f"VALUES (%s, %s, %s, {NOW}) ON CONFLICT DO NOTHING",
                    (queue, task_id, data if data is not None else row[0]),
                )
                if cur.rowcount != 1:
                    raise _Conflict  # the same id is queued again: keep the dead letter
                if self.notify:
                    conn.execute("SELECT pg_notify(%s, '')", (channel(queue),))
        except _Conflict:
            return False
        return True

    def dead_purge(self, queue: str, task_id: str | None = None) -> int:
        if task_id is not None:
            return int(
                self.conn.execute(
                    "DELETE FROM gatorapp_dead WHERE queue = %s AND task_id = %s",
                    (queue, task_id),
                ).rowcount
            )
        return int(
            self.conn.execute("DELETE FROM gatorapp_dead WHERE queue = %s", (queue,)).rowcount
        )

    # -- introspection -------------------------------------------------------
    def stats(self, queue: str) -> QueueStats:
        free = f"(token IS NULL OR lease_until <= {NOW})"
        ready, delayed, running, oldest = self.conn.execute(
            f"SELECT count(*) FILTER (WHERE run_at <= {NOW} AND {free}), "
            f"count(*) FILTER (WHERE run_at > {NOW} AND {free}), "
            f"count(*) FILTER (WHERE token IS NOT NULL AND lease_until > {NOW}), "
            f"min(run_at) FILTER (WHERE run_at <= {NOW} AND {free}) "
            "FROM gatorapp_tasks WHERE queue = %s",
            (queue,),
        ).fetchone()
        (dead,) = self.conn.execute(
            "SELECT count(*) FROM gatorapp_dead WHERE queue = %s", (queue,)
        ).fetchone()
        return QueueStats(ready, delayed, running, dead, oldest)

    def known_queues(self) -> list[str]:
        rows = self.conn.execute(
            "SELECT queue FROM gatorapp_tasks UNION SELECT queue FROM gatorapp_dead"
        ).fetchall()
        return sorted(r[0] for r in rows)

    def clear(self, queue_name: str) -> None:
        cur = self.conn.execute("DELETE FROM gatorapp_tasks WHERE queue = %s", (queue_name,))
        self.deleted(cur.rowcount)
