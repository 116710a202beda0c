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

import psycopg  # (missing: load_backend says which extra to install)

from ..errors import BackendError, ConfigurationError
from .base import Backend, masked_url, truncate
from .postgres_admin import PostgresAdmin
from .postgres_listen import Listener, channel
from .postgres_schema import create_tables
from .postgres_sql import (
    ACK,
    BURY,
    EXTEND,
    LIVE,
    READY,
    RELEASE,
    RESERVE,
    RETRY,
    VACUUM,
    VACUUM_EVERY,
    VACUUM_LIVE,
    VACUUM_LOCK_KEY,
    VACUUM_RETRY,
    done,
    held,
    insert,
    parse_url,
    switch,
)
from .protocols import DeadLetterAdmin, QueueAdmin, TakeById
from .records import (
    Burial,
    Message,
    Reservation,
    ResultItem,
    RetryItem,
    Settled,
)

_R = TypeVar("_R")


class PostgresBackend(PostgresAdmin, Backend, QueueAdmin, TakeById, DeadLetterAdmin):
    driver_errors = (psycopg.Error,)
    store_name = "PostgreSQL"
    supports_results = True
    supports_workers = True
    ticks_once = True

    def __init__(self, url: str = "postgresql:///gatorapp", **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._dsn, options = parse_url(url)
        #: whether enqueues notify, and idle workers LISTEN (``?notify=0``: off)
        self.notify = switch(options, "notify", url)
        #: whether this process vacuums the tasks table after deleting
        #: VACUUM_EVERY rows (``?vacuum=0``: off, autovacuum alone does)
        self.vacuum = switch(options, "vacuum", url)
        #: whether this backend's connections keep the planner to the indexes
        #: (``?planner=0``: left alone, as behind a transaction-mode pooler)
        self.planner = switch(options, "planner", url)
        self._deleted = 0
        self._vacuuming: threading.Thread | None = None
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
        self.conns: weakref.WeakSet[Any] = weakref.WeakSet()
        self._listener: Listener | None = None
        self._pool: ThreadPoolExecutor | None = None

    # -- connections -----------------------------------------------------------
    @property
    def conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            # (application_name: what pg_stat_activity shows for it)
            conn = psycopg.connect(self._dsn, autocommit=True, application_name="gatorapp")
            # A queue table swings from empty to millions of rows between two
            # ANALYZEs, so the planner's estimate is often near zero: a whole
            # read of the table (or of a queue, then sorted) then looks
            # cheapest, and every settle or reserve reads it all. Every
            # statement of gatorapp has an index to read in order; on its own
            # connections (never on yours) that is what it does.
            if self.planner:
                conn.execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
            if not self._ready:
                with self._lock:
                    if not self._ready:
                        create_tables(conn)
                        self._ready = True
            self._local.conn = conn
            self.conns.add(conn)
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
        vacuuming, self._vacuuming = self._vacuuming, None
        if vacuuming is not None:
            vacuuming.join(5.0)  # (a daemon thread: a long VACUUM is not waited out)
        listener = self._listener
        if listener is not None:
            # (a thread blocked on it wakes with an error, and polls)
            listener.drop()
        for conn in list(self.conns):
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
        self.conns = weakref.WeakSet()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._listener = None
        self._pool = None
        self._deleted = 0
        self._vacuuming = None

    def describe(self) -> str:
        return masked_url(self.url)

    # -- primitives ----------------------------------------------------------
    def _enqueue(self, messages: Sequence[Message]) -> None:
        conn = self.conn
        if len(messages) == 1:
            # One task (.delay()): one statement, one round trip; nothing to
            # undo if its id turns out to run now as another task.
            insert(conn, messages, self.notify)
            return
        with conn.transaction():
            insert(conn, messages, self.notify)

    def enqueue_in_transaction(self, connection: object, messages: Sequence[Message]) -> None:
        if not isinstance(connection, psycopg.Connection):
            raise ConfigurationError(
                "connection= takes a psycopg 3 Connection (psycopg.connect(...), or the one "
                f"under your ORM's session), not {type(connection).__name__}"
            )
        self.check_messages(messages)
        if not messages:
            return
        self.conn  # noqa: B018 (the tables exist: made on this backend's first connection)
        try:
            # A savepoint inside the caller's transaction: a refused id undoes
            # this enqueue only, and leaves their transaction usable. Its
            # notifications go out when the caller commits.
            with connection.transaction():
                insert(connection, messages, self.notify)
        except psycopg.Error as exc:
            raise BackendError(f"PostgreSQL enqueue in your transaction failed: {exc}") from exc

    def reserve(
        self, queues: Sequence[str], limit: int, lease: float, worker_id: str
    ) -> list[Reservation]:
        """One statement for all of ``queues``, earlier queues first."""
        if limit <= 0 or not queues:
            return []
        return self._reserve_in(self.conn, list(queues), limit, lease)

    def _reserve(self, queue: str, limit: int, lease: float, worker_id: str) -> list[Reservation]:
        return self._reserve_in(self.conn, [queue], limit, lease)

    @staticmethod
    def _reserve_in(conn: Any, queues: list[str], limit: int, lease: float) -> list[Reservation]:
        token = uuid.uuid4().hex
        rows = conn.execute(RESERVE, (token, lease, queues, limit, limit), binary=True).fetchall()
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
            if self.conn.execute(READY, (names,)).fetchone() is not None:
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
            row = self.conn.execute(READY, (names,)).fetchone()
            left = deadline - time.monotonic()
            if row is not None or left <= 0:
                return
            time.sleep(min(self.poll_interval, left))

    def stop_waiting(self) -> None:
        # Nothing is kept for a waiter; a thread blocked in wait() wakes now.
        listener = self._listener
        if listener is not None and listener.waiting:
            self.conn.execute("SELECT pg_notify(%s, '')", (listener.wake_channel,))

    # -- reclaiming the rows of tasks done ---------------------------------------
    def deleted(self, count: int) -> None:
        """``count`` tasks' rows were deleted: vacuum the table, on a thread
        of its own, once VACUUM_EVERY have been since the last time."""
        if not self.vacuum or count <= 0:
            return
        with self._lock:
            self._deleted += count
            if self._deleted < VACUUM_EVERY or (
                self._vacuuming is not None and self._vacuuming.is_alive()
            ):
                return
            self._deleted = 0
            self._vacuuming = threading.Thread(
                target=self._vacuum, name="gatorapp-postgres-vacuum", daemon=True
            )
            self._vacuuming.start()

    def _vacuum(self) -> None:
        # Its own connection (a VACUUM runs outside any transaction), held
        # for the VACUUM only. Nothing depends on it: a failure (the server
        # gone, a role that may not vacuum the table) is the next one's try.
        try:
            with psycopg.connect(
                self._dsn, autocommit=True, application_name="gatorapp vacuum"
            ) as conn:
                row = conn.execute(LIVE, (VACUUM_LIVE,)).fetchone()
                if not row or row[0] < VACUUM_LIVE:
                    with self._lock:
                        self._deleted = max(self._deleted, VACUUM_EVERY - VACUUM_RETRY)
                    return
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (VACUUM_LOCK_KEY,)).fetchone()
                if row and row[0]:
                    conn.execute(VACUUM)
        except psycopg.Error:
            pass

    def _ack(self, reservations: Sequence[Reservation]) -> list[bool]:
        return self._delete_held(self.conn, reservations)

    def _delete_held(self, conn: Any, reservations: Sequence[Reservation]) -> list[bool]:
        """Delete the tasks whose lease is still held, in one statement; True
        for each one deleted."""
        seqs, tokens = held(reservations)
        rows = conn.execute(ACK, (seqs, tokens, seqs)).fetchall()
        self.deleted(len(rows))
        return done(seqs, rows)

    def settle(
        self,
        acks: Sequence[Reservation],
        retries: Sequence[RetryItem] = (),
        buries: Sequence[Burial] = (),
    ) -> Settled:
        if not (acks or retries or buries):
            return Settled([], [], [])
        return self._settle_in(self.conn, acks, retries, buries)

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
        conn = self.conn
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
        return self._retry_in(self.conn, items)

    @staticmethod
    def _retry_in(conn: Any, items: Sequence[RetryItem]) -> list[bool]:
        seqs, tokens = held([r for r, _, _ in items])
        rows = conn.execute(
            RETRY, (seqs, tokens, [d for _, d, _ in items], [at for _, _, at in items], seqs)
        ).fetchall()
        return done(seqs, rows)

    def _release(self, reservations: Sequence[Reservation]) -> list[bool]:
        conn = self.conn
        seqs, tokens = held(reservations)
        with conn.transaction():
            rows = conn.execute(RELEASE, (seqs, tokens, seqs)).fetchall()
            if rows and self.notify:
                # (They are ready again: an idle worker may take them now.)
                names = sorted({row[1] for row in rows})
                conn.execute(
                    "SELECT count(pg_notify(c, '')) FROM unnest(%b::text[]) AS c",
                    ([channel(q) for q in names],),
                )
        return done(seqs, rows)

    def _extend(self, reservations: Sequence[Reservation]) -> list[bool]:
        seqs, tokens = held(reservations)
        leases = [r.lease for r in reservations]
        rows = self.conn.execute(EXTEND, (seqs, tokens, leases, seqs)).fetchall()
        return done(seqs, rows)

    def _bury(self, items: Sequence[Burial]) -> list[bool]:
        return self._bury_in(self.conn, items)

    def _bury_in(self, conn: Any, items: Sequence[Burial]) -> list[bool]:
        seqs, tokens = held([r for r, _, _ in items])
        rows = conn.execute(
            BURY,
            (seqs, tokens, [why for _, why, _ in items], [truncate(e) for _, _, e in items], seqs),
        ).fetchall()
        self.deleted(len(rows))
        return done(seqs, rows)
