"""The PostgreSQL backend's statements, its URL options, and the calls that
store tasks (an enqueue, a transactional enqueue and a periodic tick share
them). Every time is the server's (``clock_timestamp()``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConfigurationError
from ..options import as_bool
from .base import masked_url, running_error
from .postgres_listen import channel
from .records import Message, Reservation

# The server's time, in epoch seconds, for leases, due times and expiries.
NOW = "extract(epoch from clock_timestamp())"
# The same, read once per statement: comparable with an index (run_at <= it
# is an index condition, so a reserve stops at the first task not yet due).
NOW1 = f"(SELECT {NOW})"

DEAD_INSERT = (
    "INSERT INTO gatorapp_dead (queue, task_id, data, reason, error, failed_at) "
    f"VALUES (%s, %s, %s, %s, %s, {NOW})"
)

# Tasks go in with one statement per batch: four arrays, sent in binary.
INSERT = (
    "INSERT INTO gatorapp_tasks (queue, task_id, data, run_at) "
    f"SELECT q, i, d, coalesce(r, {NOW}) "
    "FROM unnest(%b::text[], %b::text[], %b::bytea[], %b::float8[]) AS m(q, i, d, r) "
    "ON CONFLICT (queue, task_id) DO NOTHING"
)
# ... and the same statement notifies each queue that got a task due now:
# once per queue (two more arrays: the batch's queues and their channels).
INSERT_NOTIFY = (
    f"WITH ins AS ({INSERT} RETURNING queue, run_at) "
    "SELECT count(*), (SELECT count(pg_notify(c.ch, '')) "
    "FROM unnest(%b::text[], %b::text[]) AS c(q, ch) WHERE EXISTS "
    f"(SELECT 1 FROM ins WHERE ins.queue = c.q AND ins.run_at <= {NOW1})) FROM ins"
)
# One task (.delay()): the same, without arrays.
INSERT_ONE = (
    "INSERT INTO gatorapp_tasks (queue, task_id, data, run_at) "
    f"VALUES (%s, %s, %s, coalesce(%s::float8, {NOW})) ON CONFLICT (queue, task_id) DO NOTHING"
)
INSERT_ONE_NOTIFY = (
    f"WITH ins AS ({INSERT_ONE} RETURNING run_at) "
    f"SELECT count(*), count(pg_notify(%s, '')) FILTER (WHERE run_at <= {NOW1}) FROM ins"
)
# Which of a batch's ids run now as a task (an enqueue of them is refused
# when its payload differs): those inserted just now have no token.
RUNNING = (
    "SELECT t.queue, t.task_id, t.data FROM gatorapp_tasks t "
    "JOIN unnest(%b::text[], %b::text[]) AS m(q, i) ON t.queue = m.q AND t.task_id = m.i "
    f"WHERE t.token IS NOT NULL AND t.lease_until > {NOW}"
)

# A reserve: up to %s due, unleased tasks of the queues, earlier queues
# first, then by due time, then in enqueue order, each queue's read in the
# order of its index; rows another reserve holds are skipped, not waited
# for. The LIMIT outside stops the scans as soon as it has enough: a later
# queue is not even looked at when the first one fills the batch.
RESERVE = (
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
# statistics say (the rows' keys once more, last, as an index condition: a
# table the planner believes empty would otherwise be read whole), and checks
# the token.
HELD = "unnest(%b::int8[], %b::text[]"
BY_KEY = "WHERE t.seq = u.seq AND t.token = u.token AND t.seq = ANY(%b::int8[])"
ACK = f"DELETE FROM gatorapp_tasks t USING {HELD}) AS u(seq, token) {BY_KEY} RETURNING t.seq"
RETRY = (
    "UPDATE gatorapp_tasks t SET data = u.data, run_at = u.run_at, token = NULL, "
    f"lease_until = NULL, deliveries = 0 FROM {HELD}, %b::bytea[], %b::float8[]) "
    f"AS u(seq, token, data, run_at) {BY_KEY} RETURNING t.seq"
)
RELEASE = (
    "UPDATE gatorapp_tasks t SET token = NULL, lease_until = NULL, "
    f"deliveries = greatest(t.deliveries - 1, 0) FROM {HELD}) AS u(seq, token) "
    f"{BY_KEY} RETURNING t.seq, t.queue"
)
EXTEND = (
    f"UPDATE gatorapp_tasks t SET lease_until = {NOW} + u.lease "
    f"FROM {HELD}, %b::float8[]) AS u(seq, token, lease) "
    f"{BY_KEY} RETURNING t.seq"
)
BURY = (
    f"WITH b AS (DELETE FROM gatorapp_tasks t USING {HELD}, %b::text[], %b::text[]) "
    "WITH ORDINALITY AS u(seq, token, reason, error, n) "
    f"{BY_KEY} "
    "RETURNING t.seq, t.queue, t.task_id, t.data, u.reason, u.error, u.n), "
    "d AS (INSERT INTO gatorapp_dead (queue, task_id, data, reason, error, failed_at) "
    f"SELECT queue, task_id, data, reason, error, {NOW} FROM b ORDER BY n) "
    "SELECT seq FROM b"
)
# A process that has deleted this many tasks' rows (acknowledged, buried,
# taken, cleared) vacuums the tasks table (``?vacuum=0``: never): the space
# of the rows it deleted is used again, rather than the table and its
# indexes growing until autovacuum's next visit (once a minute at most). One
# process at a time (an advisory lock; the others skip it), never waiting
# for a lock (SKIP_LOCKED: autovacuum may be at it), and never truncating
# the file (which would take a lock that stops every reserve for a moment).
#
# Not while the table holds fewer than VACUUM_LIVE tasks: a vacuum records
# how many rows the table has per page, and the planner scales that by the
# table's size; recorded from an almost empty table of many pages, it makes
# the planner take a full queue for a handful of rows and sort it, or scan it,
# at every reserve and settle, until the next analyze. (Tried again after
# VACUUM_RETRY more rows deleted.)
VACUUM_EVERY = 20_000
VACUUM_LIVE = 5_000
VACUUM_RETRY = 2_000
LIVE = "SELECT count(*) FROM (SELECT 1 FROM gatorapp_tasks LIMIT %s) AS t"
VACUUM_LOCK_KEY = 0x6761746F72617676  # ("gatorapv" in ASCII)
VACUUM = "VACUUM (SKIP_LOCKED, TRUNCATE false) gatorapp_tasks"

# An idle worker's look: is anything due and unleased in these queues?
READY = (
    "SELECT 1 FROM unnest(%b::text[]) AS q(name) WHERE EXISTS (SELECT 1 FROM gatorapp_tasks "
    f"WHERE queue = q.name AND run_at <= {NOW1} AND (token IS NULL OR lease_until <= {NOW1})) "
    "LIMIT 1"
)

#: URL options this backend reads (and takes out of what libpq is given)
OPTIONS = ("notify", "poll", "vacuum", "planner")


def switch(options: dict[str, str], name: str, url: str) -> bool:
    """An on/off URL option (on when not given), read as the app's own
    booleans are (:func:`gatorapp.options.as_bool`); an empty one is refused."""
    value = options.get(name, "1")
    try:
        if value.strip():
            return as_bool(value, name)
    except ConfigurationError:
        pass
    raise ConfigurationError(f"{name}= takes 1 or 0 (on or off), not {value!r}: {masked_url(url)}")


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


BIGINT = 2**63  # (a row key is a bigint)


def held(reservations: Sequence[Reservation]) -> tuple[list[int], list[str]]:
    """The rows (each reservation's handle: its row's ``seq``) and the tokens
    of a batch; row 0, which no row has, for a reservation this backend never
    made."""
    seqs = [
        r.handle if type(r.handle) is int and 0 < r.handle < BIGINT else 0 for r in reservations
    ]
    return seqs, [r.token for r in reservations]


def done(seqs: list[int], rows: Sequence[tuple[Any, ...]]) -> list[bool]:
    """One bool per item: whether the statement returned its row."""
    if not rows:
        return [False] * len(seqs)
    done = {row[0] for row in rows}
    return [seq in done for seq in seqs]


def insert(conn: Any, messages: Sequence[Message], notify: bool) -> None:
    """Store ``messages`` on ``conn`` (one statement; notifying each queue
    that got a task due now, when ``notify``)."""
    if len(messages) == 1:
        m = messages[0]
        if notify:
            row = conn.execute(
                INSERT_ONE_NOTIFY, (m.queue, m.task_id, m.data, m.run_at, channel(m.queue))
            ).fetchone()
            inserted = row[0]
        else:
            inserted = conn.execute(INSERT_ONE, (m.queue, m.task_id, m.data, m.run_at)).rowcount
        if not inserted:
            check_running(conn, messages)
        return
    queues = [m.queue for m in messages]
    ids = [m.task_id for m in messages]
    arrays = (queues, ids, [m.data for m in messages], [m.run_at for m in messages])
    if notify:
        names = list(dict.fromkeys(queues))
        row = conn.execute(INSERT_NOTIFY, (*arrays, names, [channel(q) for q in names])).fetchone()
        inserted = row[0]
    else:
        inserted = conn.execute(INSERT, arrays).rowcount
    if inserted != len(messages):
        check_running(conn, messages)


def check_running(conn: Any, messages: Sequence[Message]) -> None:
    """Some ids are in the queue already: fine while they wait, refused
    (the transaction undone) where one runs now as another task."""
    queues = [m.queue for m in messages]
    ids = [m.task_id for m in messages]
    held = conn.execute(RUNNING, (queues, ids)).fetchall()
    if not held:
        return
    given = {(m.queue, m.task_id): m.data for m in messages}
    for queue, task_id, data in held:
        if bytes(data) != given[queue, task_id]:
            raise running_error(queue, task_id)
