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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg  # (missing: load_backend says which extra to install)

from ..errors import BackendError, ConfigurationError
from .base import Backend, check_queue_name, masked_url, running_error, truncate
from .postgres_listen import Listener, channel
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
# The same, read once per statement: comparable with an index (run_at <= it
# is an index condition, so a reserve stops at the first task not yet due).
NOW1 = f"(SELECT {NOW})"

_DEAD_INSERT = (
    "INSERT INTO gatorapp_dead (queue, task_id, data, reason, error, failed_at) "
    f"VALUES (%s, %s, %s, %s, %s, {NOW})"
)

# Tasks go in with one statement per batch: four arrays, sent in binary.
_INSERT = (
    "INSERT INTO gatorapp_tasks (queue, task_id, data, run_at) "
    f"SELECT q, i, d, coalesce(r, {NOW}) "
    "FROM unnest(%b::text[], %b::text[], %b::bytea[], %b::float8[]) AS m(q, i, d, r) "
    "ON CONFLICT (queue, task_id) DO NOTHING"
)
# ... and the same statement notifies each queue that got a task due now:
# once per queue (two more arrays: the batch's queues and their channels).
_INSERT_NOTIFY = (
    f"WITH ins AS ({_INSERT} RETURNING queue, run_at) "
    "SELECT count(*), (SELECT count(pg_notify(c.ch, '')) "
    "FROM unnest(%b::text[], %b::text[]) AS c(q, ch) WHERE EXISTS "
    f"(SELECT 1 FROM ins WHERE ins.queue = c.q AND ins.run_at <= {NOW1})) FROM ins"
)
# One task (.delay()): the same, without arrays.
_INSERT_ONE = (
    "INSERT INTO gatorapp_tasks (queue, task_id, data, run_at) "
    f"VALUES (%s, %s, %s, coalesce(%s::float8, {NOW})) ON CONFLICT (queue, task_id) DO NOTHING"
)
_INSERT_ONE_NOTIFY = (
    f"WITH ins AS ({_INSERT_ONE} RETURNING run_at) "
    f"SELECT count(*), count(pg_notify(%s, '')) FILTER (WHERE run_at <= {NOW1}) FROM ins"
)
# Which of a batch's ids run now as a task (an enqueue of them is refused
# when its payload differs): those inserted just now have no token.
_RUNNING = (
    "SELECT t.queue, t.task_id, t.data FROM gatorapp_tasks t "
    "JOIN unnest(%b::text[], %b::text[]) AS m(q, i) ON t.queue = m.q AND t.task_id = m.i "
    f"WHERE t.token IS NOT NULL AND t.lease_until > {NOW}"
)

# A reserve: up to %s due, unleased tasks of the queues, earlier queues
# first, then by due time, then in enqueue order, each queue's read in the
# order of its index; rows another reserve holds are skipped, not waited
# for. The LIMIT outside stops the scans as soon as it has enough: a later
# queue is not even looked at when the first one fills the batch.
_RESERVE = (
    f"UPDATE gatorapp_tasks t SET token = %s, lease_until = {NOW} + %s, "
    "deliveries = t.deliveries + 1 "
    "FROM (SELECT q.pos, s.seq FROM unnest(%b::text[]) WITH ORDINALITY AS q(name, pos) "
    "CROSS JOIN LATERAL (SELECT seq FROM gatorapp_tasks WHERE queue = q.name "
    f"AND run_at <= {NOW1} AND (token IS NULL OR lease_until <= {NOW1}) "
    "ORDER BY run_at, seq LIMIT %s FOR UPDATE SKIP LOCKED) s LIMIT %s) s "
    "WHERE t.seq = s.seq "
    "RETURNING s.pos, t.run_at, t.seq, t.task_id, t.data, t.deliveries"
)

# A lease is named by the row's seq and the reserve's token, and so is each
# task a settle names: ``Reservation.token`` is "<seq>.<token>". Every
# statement below joins the rows by primary key, whatever the table's
# statistics say, and checks the token.
_HELD = "unnest(%b::int8[], %b::text[]"
_ACK = (
    f"DELETE FROM gatorapp_tasks t USING {_HELD}) AS u(seq, token) "
    "WHERE t.seq = u.seq AND t.token = u.token RETURNING t.seq"
)
_RETRY = (
    "UPDATE gatorapp_tasks t SET data = u.data, run_at = u.run_at, token = NULL, "
    f"lease_until = NULL, deliveries = 0 FROM {_HELD}, %b::bytea[], %b::float8[]) "
    "AS u(seq, token, data, run_at) WHERE t.seq = u.seq AND t.token = u.token RETURNING t.seq"
)
_RELEASE = (
    "UPDATE gatorapp_tasks t SET token = NULL, lease_until = NULL, "
    f"deliveries = greatest(t.deliveries - 1, 0) FROM {_HELD}) AS u(seq, token) "
    "WHERE t.seq = u.seq AND t.token = u.token RETURNING t.seq, t.queue"
)
_EXTEND = (
    f"UPDATE gatorapp_tasks t SET lease_until = {NOW} + u.lease "
    f"FROM {_HELD}, %b::float8[]) AS u(seq, token, lease) "
    "WHERE t.seq = u.seq AND t.token = u.token RETURNING t.seq"
)
_BURY = (
    f"WITH b AS (DELETE FROM gatorapp_tasks t USING {_HELD}, %b::text[], %b::text[]) "
    "WITH ORDINALITY AS u(seq, token, reason, error, n) "
    "WHERE t.seq = u.seq AND t.token = u.token "
    "RETURNING t.seq, t.queue, t.task_id, t.data, u.reason, u.error, u.n), "
    "d AS (INSERT INTO gatorapp_dead (queue, task_id, data, reason, error, failed_at) "
    f"SELECT queue, task_id, data, reason, error, {NOW} FROM b ORDER BY n) "
    "SELECT seq FROM b"
)
# An idle worker's look: is anything due and unleased in these queues?
_READY = (
    "SELECT 1 FROM unnest(%b::text[]) AS q(name) WHERE EXISTS (SELECT 1 FROM gatorapp_tasks "
    f"WHERE queue = q.name AND run_at <= {NOW1} AND (token IS NULL OR lease_until <= {NOW1})) "
    "LIMIT 1"
)

#: URL options this backend reads (and takes out of what libpq is given)
OPTIONS = ("notify", "poll")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class _Conflict(Exception):
    pass


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """Split a backend URL into the libpq URL and gatorapp's own options."""
    url = url.replace("postgres://", "postgresql://", 1)
    parts = urlsplit(url)
    if not parts.query:
        return url, {}
    ours: dict[str, str] = {}
    rest = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in OPTIONS:
            ours[name] = value
        else:
            rest.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(rest))), ours


_BIGINT = 2**63  # (a row key is a bigint)


def _held(reservations: Sequence[Reservation]) -> tuple[list[int], list[str]]:
    """The rows (each reservation's handle: its row's ``seq``) and the tokens
    of a batch; row 0, which no row has, for a reservation this backend never
    made."""
    seqs = [
        r.handle if type(r.handle) is int and 0 < r.handle < _BIGINT else 0 for r in reservations
    ]
    return seqs, [r.token for r in reservations]


def _done(seqs: list[int], rows: Sequence[tuple[Any, ...]]) -> list[bool]:
    """One bool per item: whether the statement returned its row."""
    if not rows:
        return [False] * len(seqs)
    done = {row[0] for row in rows}
    return [seq in done for seq in seqs]


class PostgresBackend(Backend, QueueAdmin, TakeById, DeadLetterAdmin):
    driver_errors = (psycopg.Error,)
    store_name = "PostgreSQL"
    supports_results = True
    supports_workers = True
    ticks_once = True

    def __init__(self, url: str = "postgresql:///gatorapp", **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._dsn, options = parse_url(url)
        notify = options.get("notify", "1").lower()
        if notify not in _TRUE + _FALSE:
            raise ConfigurationError(
                f"notify= takes 1 or 0 (on or off), not {notify!r}: {masked_url(url)}"
            )
        #: whether enqueues notify, and idle workers LISTEN (``?notify=0``: off)
        self.notify = notify in _TRUE
        if "poll" in options:
            try:
                poll = float(options["poll"])
            except ValueError:
                poll = -1.0
            if not 0.001 <= poll <= 3600:
                raise ConfigurationError(
                    f"poll= takes seconds, 0.001 to 3600, not {options['poll']!r}: "
                    f"{masked_url(url)}"
                )
            self.poll_interval = poll
        self._local = threading.local()
        self._lock = threading.Lock()
        self._ready = False
        self._conns: weakref.WeakSet[Any] = weakref.WeakSet()
        self._listener: Listener | None = None
        self._pool: ThreadPoolExecutor | None = None

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
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        listener = self._listener
        if listener is not None:
            # (a thread blocked on it wakes with an error, and polls)
            listener.drop()
        for conn in list(self._conns):
            try:
                conn.close()
            except psycopg.Error:
                pass
        self._local = threading.local()

    def after_fork(self) -> None:
        # The parent's connections are its own: forget them, never close them
        # (a close would end the parent's session), and connect anew here.
        # The same for its LISTEN connection, and its settling thread (which
        # does not exist in this process).
        self._conns = weakref.WeakSet()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._listener = None
        self._pool = None

    def describe(self) -> str:
        return masked_url(self.url)

    # -- primitives ----------------------------------------------------------
    def _enqueue(self, messages: Sequence[Message]) -> None:
        conn = self._conn
        if len(messages) == 1:
            # One task (.delay()): one statement, one round trip; nothing to
            # undo if its id turns out to run now as another task.
            self._enqueue_in(conn, messages, self.notify)
            return
        with conn.transaction():
            self._enqueue_in(conn, messages, self.notify)

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
            # this enqueue only, and leaves their transaction usable. Its
            # notifications go out when the caller commits.
            with connection.transaction():
                self._enqueue_in(connection, messages, self.notify)
        except psycopg.Error as exc:
            raise BackendError(f"PostgreSQL enqueue in your transaction failed: {exc}") from exc

    @staticmethod
    def _enqueue_in(conn: Any, messages: Sequence[Message], notify: bool) -> None:
        if len(messages) == 1:
            m = messages[0]
            if notify:
                row = conn.execute(
                    _INSERT_ONE_NOTIFY, (m.queue, m.task_id, m.data, m.run_at, channel(m.queue))
                ).fetchone()
                inserted = row[0]
            else:
                inserted = conn.execute(
                    _INSERT_ONE, (m.queue, m.task_id, m.data, m.run_at)
                ).rowcount
            if not inserted:
                PostgresBackend._check_running(conn, messages)
            return
        queues = [m.queue for m in messages]
        ids = [m.task_id for m in messages]
        arrays = (queues, ids, [m.data for m in messages], [m.run_at for m in messages])
        if notify:
            names = list(dict.fromkeys(queues))
            row = conn.execute(
                _INSERT_NOTIFY, (*arrays, names, [channel(q) for q in names])
            ).fetchone()
            inserted = row[0]
        else:
            inserted = conn.execute(_INSERT, arrays).rowcount
        if inserted != len(messages):
            PostgresBackend._check_running(conn, messages)

    @staticmethod
    def _check_running(conn: Any, messages: Sequence[Message]) -> None:
        """Some ids are in the queue already: fine while they wait, refused
        (the transaction undone) where one runs now as another task."""
        queues = [m.queue for m in messages]
        ids = [m.task_id for m in messages]
        held = conn.execute(_RUNNING, (queues, ids)).fetchall()
        if not held:
            return
        given = {(m.queue, m.task_id): m.data for m in messages}
        for queue, task_id, data in held:
            if bytes(data) != given[queue, task_id]:
                raise running_error(queue, task_id)

    def reserve(
        self, queues: Sequence[str], limit: int, lease: float, worker_id: str
    ) -> list[Reservation]:
        """One statement for all of ``queues``, earlier queues first."""
        if limit <= 0 or not queues:
            return []
        return self._reserve_in(self._conn, list(queues), limit, lease)

    def _reserve(self, queue: str, limit: int, lease: float, worker_id: str) -> list[Reservation]:
        return self._reserve_in(self._conn, [queue], limit, lease)

    @staticmethod
    def _reserve_in(conn: Any, queues: list[str], limit: int, lease: float) -> list[Reservation]:
        token = uuid.uuid4().hex
        rows = conn.execute(_RESERVE, (token, lease, queues, limit, limit), binary=True).fetchall()
        if not rows:
            return []
        rows.sort(key=lambda r: (r[0], r[1], r[2]))
        return [
            Reservation(queues[pos - 1], task_id, data, token, deliveries, lease, seq)
            for pos, _, seq, task_id, data, deliveries in rows
        ]

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        listener = self._listening()
        if listener is None or not listener.lock.acquire(blocking=False):
            self._poll(queues, deadline)
            return
        try:
            listener.waiting = True
            self._wait_notified(listener, queues, deadline)
        finally:
            listener.waiting = False
            listener.lock.release()

    def _listening(self) -> Listener | None:
        if not self.notify:
            return None
        listener = self._listener
        if listener is None:
            with self._lock:
                listener = self._listener
                if listener is None:
                    listener = self._listener = Listener(self._dsn)
        return listener

    def _wait_notified(self, listener: Listener, queues: Sequence[str], deadline: float) -> None:
        """Block on the LISTEN connection until one of ``queues`` is notified,
        a look finds a task ready (every poll interval), or the deadline."""
        names = list(queues)
        while True:
            try:
                listener.listen(names)
            except psycopg.Error:
                # (The server may be down: the look below says so, as a
                # BackendError; the next wait connects again.)
                listener.drop()
                self._poll(names, deadline)
                return
            if self._conn.execute(_READY, (names,)).fetchone() is not None:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                if listener.block(min(self.poll_interval, left)):
                    return
            except psycopg.Error:
                listener.drop()

    def _poll(self, queues: Sequence[str], deadline: float) -> None:
        names = list(queues)
        while True:
            row = self._conn.execute(_READY, (names,)).fetchone()
            left = deadline - time.monotonic()
            if row is not None or left <= 0:
                return
            time.sleep(min(self.poll_interval, left))

    def stop_waiting(self) -> None:
        # Nothing is kept for a waiter; a thread blocked in wait() wakes now.
        listener = self._listener
        if listener is not None and listener.waiting:
            self._conn.execute("SELECT pg_notify(%s, '')", (listener.wake_channel,))

    def _ack(self, reservations: Sequence[Reservation]) -> list[bool]:
        return self._delete_held(self._conn, reservations)

    @staticmethod
    def _delete_held(conn: Any, reservations: Sequence[Reservation]) -> list[bool]:
        """Delete the tasks whose lease is still held, in one statement; True
        for each one deleted."""
        seqs, tokens = _held(reservations)
        return _done(seqs, conn.execute(_ACK, (seqs, tokens)).fetchall())

    def settle(
        self,
        acks: Sequence[Reservation],
        retries: Sequence[RetryItem] = (),
        buries: Sequence[Burial] = (),
    ) -> Settled:
        if not (acks or retries or buries):
            return Settled([], [], [])
        return self._settle_in(self._conn, acks, retries, buries)

    def _settle_in(
        self,
        conn: Any,
        acks: Sequence[Reservation],
        retries: Sequence[RetryItem],
        buries: Sequence[Burial],
    ) -> Settled:
        if not (retries or buries):
            # Acknowledgements only (the usual batch): one statement, atomic
            # by itself.
            return Settled(self._delete_held(conn, acks), [], [])
        # All three in one transaction, one commit.
        with conn.transaction():
            return Settled(
                self._delete_held(conn, acks) if acks else [],
                self._retry_in(conn, retries) if retries else [],
                self._bury_in(conn, buries) if buries else [],
            )

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
        conn = self._conn
        settled = (
            self._settle_in(conn, acks, retries, buries)
            if acks or retries or buries
            else Settled([], [], [])
        )
        got = self._reserve_in(conn, list(queues), limit, lease) if limit > 0 and queues else []
        return settled, got

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
        # Sent now from a thread of this backend's own (with a connection of
        # its own), so that the server's work on the batch overlaps the
        # worker's on the tasks it still runs; finish() waits for the reply.
        def call() -> tuple[Settled, list[Reservation]]:
            if results:
                self.put_results(results)
            return self.settle_and_reserve(acks, retries, buries, queues, limit, lease, worker_id)

        pool = self._pool
        if pool is None:
            with self._lock:
                pool = self._pool
                if pool is None:
                    pool = self._pool = ThreadPoolExecutor(1, "gatorapp-postgres")
        future = pool.submit(call)
        return future.result

    def _retry(self, items: Sequence[RetryItem]) -> list[bool]:
        return self._retry_in(self._conn, items)

    @staticmethod
    def _retry_in(conn: Any, items: Sequence[RetryItem]) -> list[bool]:
        seqs, tokens = _held([r for r, _, _ in items])
        rows = conn.execute(
            _RETRY, (seqs, tokens, [data for _, data, _ in items], [at for _, _, at in items])
        ).fetchall()
        return _done(seqs, rows)

    def _release(self, reservations: Sequence[Reservation]) -> list[bool]:
        conn = self._conn
        seqs, tokens = _held(reservations)
        with conn.transaction():
            rows = conn.execute(_RELEASE, (seqs, tokens)).fetchall()
            if rows and self.notify:
                # (They are ready again: an idle worker may take them now.)
                names = sorted({row[1] for row in rows})
                conn.execute(
                    "SELECT count(pg_notify(c, '')) FROM unnest(%b::text[]) AS c",
                    ([channel(q) for q in names],),
                )
        return _done(seqs, rows)

    def _extend(self, reservations: Sequence[Reservation]) -> list[bool]:
        seqs, tokens = _held(reservations)
        rows = self._conn.execute(
            _EXTEND, (seqs, tokens, [r.lease for r in reservations])
        ).fetchall()
        return _done(seqs, rows)

    def _bury(self, items: Sequence[Burial]) -> list[bool]:
        return self._bury_in(self._conn, items)

    @staticmethod
    def _bury_in(conn: Any, items: Sequence[Burial]) -> list[bool]:
        seqs, tokens = _held([r for r, _, _ in items])
        rows = conn.execute(
            _BURY,
            (seqs, tokens, [reason for _, reason, _ in items], [truncate(e) for _, _, e in items]),
        ).fetchall()
        return _done(seqs, rows)

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
            self._enqueue_in(conn, [message], self.notify)
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
                if self.notify:
                    conn.execute("SELECT pg_notify(%s, '')", (channel(queue),))
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
