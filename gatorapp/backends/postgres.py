"""``postgresql://``: tasks in PostgreSQL tables, through psycopg 3 (``gatorapp[postgres]``).

Each thread gets its own connection, in autocommit mode: every state change
is one statement or one transaction. A reserve takes due tasks with ``FOR
UPDATE SKIP LOCKED``, so concurrent workers never lease one task twice and
never wait for each other. Leases, due times and expiries are compared with
the server's clock (``clock_timestamp()``), so workers' clocks do not
matter. A connection that fails is dropped, and the next call makes a new
one: a worker goes on by itself after the server restarts.
"""

from __future__ import annotations

import threading
import time
import uuid
import weakref
from collections.abc import Sequence
from typing import Any, TypeVar

import psycopg  # (missing: load_backend says which extra to install)

from ..errors import BackendError, ConfigurationError
from .base import Backend, check_queue_name, masked_url, running_error, truncate
from .postgres_schema import create_tables
from .protocols import DeadLetterAdmin, QueueAdmin, TakeById
from .records import (
    Burial,
    DeadLetter,
    Located,
    Message,
    QueueStats,
    Reservation,
    ResultItem,
    RetryItem,
    Settled,
)

_R = TypeVar("_R")

# The server's time, in epoch seconds, for leases, due times and expiries.
NOW = "extract(epoch from clock_timestamp())"
# A task is available to reserve when it is due and nobody holds a live lease.
_AVAILABLE = "queue = %s AND run_at <= {now} AND (token IS NULL OR lease_until <= {now})"

_DEAD_INSERT = (
    "INSERT INTO gatorapp_dead (queue, task_id, data, reason, error, failed_at) "
    f"VALUES (%s, %s, %s, %s, %s, {NOW})"
)


class _Conflict(Exception):
    pass


class PostgresBackend(Backend, QueueAdmin, TakeById, DeadLetterAdmin):
    driver_errors = (psycopg.Error,)
    store_name = "PostgreSQL"
    supports_results = True
    supports_workers = True
    ticks_once = True

    def __init__(self, url: str = "postgresql:///gatorapp", **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._dsn = url.replace("postgres://", "postgresql://", 1)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._ready = False
        self._conns: weakref.WeakSet[Any] = weakref.WeakSet()

    # -- connections -----------------------------------------------------------
    @property
    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            # (application_name: what pg_stat_activity shows for it)
            conn = psycopg.connect(self._dsn, autocommit=True, application_name="gatorapp")
            if not self._ready:
                with self._lock:
                    if not self._ready:
                        create_tables(conn)
                        self._ready = True
            self._local.conn = conn
            self._conns.add(conn)
        return conn

    def driver_failed(self, what: str, exc: BaseException) -> BackendError:
        # The connection may be broken (a restart, a terminated backend): the
        # next call of this thread connects again.
        self._drop()
        return super().driver_failed(what, exc)

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass

    def close(self) -> None:
        for conn in list(self._conns):
            try:
                conn.close()
            except psycopg.Error:
                pass
        self._local = threading.local()

    def after_fork(self) -> None:
        # The parent's connections are its own: forget them, never close them
        # (a close would end the parent's session), and connect anew here.
        self._conns = weakref.WeakSet()
        self._local = threading.local()
        self._lock = threading.Lock()

    def describe(self) -> str:
        return masked_url(self.url)

    # -- primitives ----------------------------------------------------------
    def _enqueue(self, messages: Sequence[Message]) -> None:
        conn = self._conn
        if len(messages) == 1:
            # One task (.delay()): one statement, one round trip; nothing to
            # undo if its id turns out to run now as another task.
            self._enqueue_in(conn, messages)
            return
        with conn.transaction():
            self._enqueue_in(conn, messages)

    def enqueue_in_transaction(self, connection: object, messages: Sequence[Message]) -> None:
        if not isinstance(connection, psycopg.Connection):
            raise ConfigurationError(
                "connection= takes a psycopg 3 Connection (psycopg.connect(...), or the one "
                f"under your ORM's session), not {type(connection).__name__}"
            )
        self.check_messages(messages)
        if not messages:
            return
        self._conn  # noqa: B018 (the tables exist: made on this backend's first connection)
        try:
            # A savepoint inside the caller's transaction: a refused id undoes
            # this enqueue only, and leaves their transaction usable.
            with connection.transaction():
                self._enqueue_in(connection, messages)
        except psycopg.Error as exc:
            raise BackendError(f"PostgreSQL enqueue in your transaction failed: {exc}") from exc

    @staticmethod
    def _enqueue_in(conn: Any, messages: Sequence[Message]) -> None:
        inserted = {
            (q, i)
            for q, i in conn.execute(
                "INSERT INTO gatorapp_tasks (queue, task_id, data, run_at) "
                f"SELECT q, i, d, coalesce(r, {NOW}) "
                "FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::float8[]) "
                "AS m(q, i, d, r) "
                "ON CONFLICT (queue, task_id) DO NOTHING RETURNING queue, task_id",
                (
                    [m.queue for m in messages],
                    [m.task_id for m in messages],
                    [m.data for m in messages],
                    [m.run_at for m in messages],
                ),
            ).fetchall()
        }
        if len(inserted) == len(messages):
            return
        # Some ids are in the queue already: fine while they wait, refused
        # (the transaction undone) where one runs now as another task.
        for m in messages:
            if (m.queue, m.task_id) in inserted:
                continue
            held = conn.execute(
                "SELECT data FROM gatorapp_tasks WHERE queue = %s AND task_id = %s "
                f"AND token IS NOT NULL AND lease_until > {NOW}",
                (m.queue, m.task_id),
            ).fetchone()
            if held is not None and bytes(held[0]) != m.data:
                raise running_error(m.queue, m.task_id)

    def _reserve(self, queue: str, limit: int, lease: float, worker_id: str) -> list[Reservation]:
        token = uuid.uuid4().hex
        rows = self._conn.execute(
            f"UPDATE gatorapp_tasks t SET token = %s, lease_until = {NOW} + %s, "
            "deliveries = t.deliveries + 1 "
            "FROM (SELECT seq FROM gatorapp_tasks WHERE "
            + _AVAILABLE.format(now=NOW)
            + " ORDER BY run_at, seq LIMIT %s FOR UPDATE SKIP LOCKED) s "
            "WHERE t.seq = s.seq RETURNING t.seq, t.run_at, t.task_id, t.data, t.deliveries",
            (token, lease, queue, limit),
        ).fetchall()
        rows.sort(key=lambda r: (r[1], r[0]))
        return [Reservation(queue, r[2], bytes(r[3]), token, r[4], lease) for r in rows]

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            row = self._conn.execute(
                "SELECT 1 FROM gatorapp_tasks WHERE queue = ANY(%s) AND run_at <= "
                f"{NOW} AND (token IS NULL OR lease_until <= {NOW}) LIMIT 1",
                (list(queues),),
            ).fetchone()
            left = deadline - time.monotonic()
            if row is not None or left <= 0:
                return
            time.sleep(min(self.poll_interval, left))

    def _ack(self, reservations: Sequence[Reservation]) -> list[bool]:
        conn = self._conn
        with conn.transaction():
            return self._delete_held(conn, reservations)

    @staticmethod
    def _delete_held(conn: Any, reservations: Sequence[Reservation]) -> list[bool]:
        """Delete the tasks whose lease is still held, a statement per batch
        (queue and token); True for each one deleted."""
        groups: dict[tuple[str, str], list[int]] = {}
        for i, r in enumerate(reservations):
            groups.setdefault((r.queue, r.token), []).append(i)
        out = [False] * len(reservations)
        for (queue, token), indexes in groups.items():
            ids = [reservations[i].task_id for i in indexes]
            gone = {
                row[0]
                for row in conn.execute(
                    "DELETE FROM gatorapp_tasks WHERE queue = %s AND token = %s "
                    "AND task_id = ANY(%s) RETURNING task_id",
                    (queue, token, ids),
                )
            }
            for i, task_id in zip(indexes, ids):
                out[i] = task_id in gone
        return out

    def settle(
        self,
        acks: Sequence[Reservation],
        retries: Sequence[RetryItem] = (),
        buries: Sequence[Burial] = (),
    ) -> Settled:
        # One transaction, one commit, for all three.
        if not (acks or retries or buries):
            return Settled([], [], [])
        conn = self._conn
        with conn.transaction():
            return Settled(
                self._delete_held(conn, acks),
                self._retry_in(conn, retries),
                self._bury_in(conn, buries),
            )

    def _retry(self, items: Sequence[RetryItem]) -> list[bool]:
        conn = self._conn
        with conn.transaction():
            return self._retry_in(conn, items)

    @staticmethod
    def _retry_in(conn: Any, items: Sequence[RetryItem]) -> list[bool]:
        return [
            conn.execute(
                "UPDATE gatorapp_tasks SET data = %s, run_at = %s, token = NULL, "
                "lease_until = NULL, deliveries = 0 "
                "WHERE queue = %s AND task_id = %s AND token = %s",
                (data, run_at, r.queue, r.task_id, r.token),
            ).rowcount
            == 1
            for r, data, run_at in items
        ]

    def _release(self, reservations: Sequence[Reservation]) -> list[bool]:
        conn = self._conn
        with conn.transaction():
            return [
                conn.execute(
                    "UPDATE gatorapp_tasks SET token = NULL, lease_until = NULL, "
                    "deliveries = greatest(deliveries - 1, 0) "
                    "WHERE queue = %s AND task_id = %s AND token = %s",
                    (r.queue, r.task_id, r.token),
                ).rowcount
                == 1
                for r in reservations
            ]

    def _extend(self, reservations: Sequence[Reservation]) -> list[bool]:
        conn = self._conn
        with conn.transaction():
            return [
                conn.execute(
                    f"UPDATE gatorapp_tasks SET lease_until = {NOW} + %s "
                    "WHERE queue = %s AND task_id = %s AND token = %s",
                    (r.lease, r.queue, r.task_id, r.token),
                ).rowcount
                == 1
                for r in reservations
            ]

    def _bury(self, items: Sequence[Burial]) -> list[bool]:
        conn = self._conn
        with conn.transaction():
            return self._bury_in(conn, items)

    @staticmethod
    def _bury_in(conn: Any, items: Sequence[Burial]) -> list[bool]:
        out = []
        for r, reason, error in items:
            row = conn.execute(
                "DELETE FROM gatorapp_tasks WHERE queue = %s AND task_id = %s AND token = %s "
                "RETURNING data",
                (r.queue, r.task_id, r.token),
            ).fetchone()
            if row is not None:
                conn.execute(_DEAD_INSERT, (r.queue, r.task_id, row[0], reason, truncate(error)))
            out.append(row is not None)
        return out

    def take(self, queue: str, task_id: str) -> bytes | None:
        queue = check_queue_name(queue)
        row = self._conn.execute(
            "DELETE FROM gatorapp_tasks WHERE queue = %s AND task_id = %s "
            f"AND (token IS NULL OR lease_until <= {NOW}) RETURNING data",
            (queue, task_id),
        ).fetchone()
        return bytes(row[0]) if row else None

    # -- results, workers, ticks -------------------------------------------------
    def put_results(self, items: Sequence[ResultItem]) -> None:
        if not items:
            return
        self._conn.execute(
            "INSERT INTO gatorapp_results (task_id, record, expires_at) "
            f"SELECT i, r, {NOW} + t FROM unnest(%s::text[], %s::bytea[], %s::float8[]) "
            "AS m(i, r, t) ON CONFLICT (task_id) DO UPDATE "
            "SET record = excluded.record, expires_at = excluded.expires_at",
            ([i for i, _, _ in items], [r for _, r, _ in items], [t for _, _, t in items]),
        )

    def get_result(self, task_id: str) -> bytes | None:
        row = self._conn.execute(
            f"SELECT record FROM gatorapp_results WHERE task_id = %s AND expires_at > {NOW}",
            (task_id,),
        ).fetchone()
        return bytes(row[0]) if row else None

    def forget_result(self, task_id: str) -> None:
        self._conn.execute("DELETE FROM gatorapp_results WHERE task_id = %s", (task_id,))

    def locate(self, queue: str, task_id: str) -> Located | None:
        row = self._conn.execute(
            f"SELECT data, run_at <= {NOW}, token IS NOT NULL AND lease_until > {NOW} "
            "FROM gatorapp_tasks WHERE queue = %s AND task_id = %s",
            (queue, task_id),
        ).fetchone()
        if row is None:
            return None
        return ("running" if row[2] else "ready" if row[1] else "delayed"), bytes(row[0])

    def put_worker(self, worker_id: str, record: bytes, ttl: float) -> None:
        conn = self._conn
        with conn.transaction():
            conn.execute(f"DELETE FROM gatorapp_workers WHERE expires_at <= {NOW}")
            conn.execute(
                "INSERT INTO gatorapp_workers (worker_id, record, expires_at) "
                f"VALUES (%s, %s, {NOW} + %s) ON CONFLICT (worker_id) DO UPDATE "
                "SET record = excluded.record, expires_at = excluded.expires_at",
                (worker_id, record, ttl),
            )

    def remove_worker(self, worker_id: str) -> None:
        self._conn.execute("DELETE FROM gatorapp_workers WHERE worker_id = %s", (worker_id,))

    def list_workers(self) -> list[bytes]:
        rows = self._conn.execute(
            f"SELECT record FROM gatorapp_workers WHERE expires_at > {NOW} ORDER BY worker_id"
        ).fetchall()
        return [bytes(r[0]) for r in rows]

    def enqueue_tick(
        self, message: Message, schedule: str, tick: float
    ) -> tuple[bool, float | None]:
        self.check_queue(message.queue)
        self.check_size(message.data)
        conn = self._conn
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
            conn.execute(
                "INSERT INTO gatorapp_tasks (queue, task_id, data, run_at) "
                f"VALUES (%s, %s, %s, coalesce(%s, {NOW})) ON CONFLICT DO NOTHING",
                (message.queue, message.task_id, message.data, message.run_at),
            )
            return True, last

    def last_tick(self, schedule: str, queue: str) -> float | None:
        row = self._conn.execute(
            "SELECT last_tick FROM gatorapp_schedules WHERE name = %s", (schedule,)
        ).fetchone()
        return None if row is None else float(row[0])

    # -- dead letters ----------------------------------------------------------
    def _dead_add(self, queue: str, task_id: str, data: bytes, reason: str, error: str) -> None:
        self._conn.execute(_DEAD_INSERT, (queue, task_id, data, reason, error))

    _LETTER = "SELECT queue, task_id, data, reason, error, failed_at FROM gatorapp_dead "

    def dead_list(self, queue: str, limit: int = 1000) -> list[DeadLetter]:
        rows = self._conn.execute(
            self._LETTER + "WHERE queue = %s ORDER BY failed_at, seq LIMIT %s", (queue, limit)
        ).fetchall()
        return [DeadLetter(r[0], r[1], bytes(r[2]), r[3], r[4], r[5]) for r in rows]

    def dead_get(self, queue: str, task_id: str) -> DeadLetter | None:
        r = self._conn.execute(
            self._LETTER + "WHERE queue = %s AND task_id = %s ORDER BY seq DESC LIMIT 1",
            (queue, task_id),
        ).fetchone()
        return DeadLetter(r[0], r[1], bytes(r[2]), r[3], r[4], r[5]) if r else None

    def dead_requeue(self, queue: str, task_id: str, data: bytes | None = None) -> bool:
        conn = self._conn
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
        except _Conflict:
            return False
        return True

    def dead_purge(self, queue: str, task_id: str | None = None) -> int:
        if task_id is not None:
            return int(
                self._conn.execute(
                    "DELETE FROM gatorapp_dead WHERE queue = %s AND task_id = %s",
                    (queue, task_id),
                ).rowcount
            )
        return int(
            self._conn.execute("DELETE FROM gatorapp_dead WHERE queue = %s", (queue,)).rowcount
        )

    # -- introspection -------------------------------------------------------
    def stats(self, queue: str) -> QueueStats:
        free = f"(token IS NULL OR lease_until <= {NOW})"
        ready, delayed, running, oldest = self._conn.execute(
            f"SELECT count(*) FILTER (WHERE run_at <= {NOW} AND {free}), "
            f"count(*) FILTER (WHERE run_at > {NOW} AND {free}), "
            f"count(*) FILTER (WHERE token IS NOT NULL AND lease_until > {NOW}), "
            f"min(run_at) FILTER (WHERE run_at <= {NOW} AND {free}) "
            "FROM gatorapp_tasks WHERE queue = %s",
            (queue,),
        ).fetchone()
        (dead,) = self._conn.execute(
            "SELECT count(*) FROM gatorapp_dead WHERE queue = %s", (queue,)
        ).fetchone()
        return QueueStats(ready, delayed, running, dead, oldest)

    def known_queues(self) -> list[str]:
        rows = self._conn.execute(
            "SELECT queue FROM gatorapp_tasks UNION SELECT queue FROM gatorapp_dead"
        ).fetchall()
        return sorted(r[0] for r in rows)

    def clear(self, queue_name: str) -> None:
        self._conn.execute("DELETE FROM gatorapp_tasks WHERE queue = %s", (queue_name,))
