"""The tables of the SQLite backend, and moving an earlier version's into them.

Made on first use by every process (``CREATE ... IF NOT EXISTS``); a change
of layout is moved over once, by the first process that opens the file, in
one ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import sqlite3

# Result records (see sqlite_results), made with the other tables.
RESULTS = """
CREATE TABLE IF NOT EXISTS gatorapp_results (
    task_id TEXT PRIMARY KEY,
    record BLOB NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS gatorapp_results_expiry ON gatorapp_results (expires_at);
"""

# Each periodic schedule's last tick enqueued (see Backend.enqueue_tick).
SCHEDULES = """
CREATE TABLE IF NOT EXISTS gatorapp_schedules (
    name TEXT PRIMARY KEY,
    last_tick REAL NOT NULL
);
"""

# Live workers (see gatorapp.workers): a row each, until it stops or expires.
WORKERS = """
CREATE TABLE IF NOT EXISTS gatorapp_workers (
    worker_id TEXT PRIMARY KEY,
    record BLOB NOT NULL,
    expires_at REAL NOT NULL
);
"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS gatorapp_tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    task_id TEXT NOT NULL,
    data BLOB NOT NULL,
    run_at REAL NOT NULL,
    token TEXT,
    lease_until REAL,
    deliveries INTEGER NOT NULL DEFAULT 0,
    UNIQUE (queue, task_id)
);
CREATE INDEX IF NOT EXISTS gatorapp_tasks_due ON gatorapp_tasks (queue, run_at, seq);
"""

# Dead letters: a row each, several for one task id when it died more than once.
_DEAD = """
CREATE TABLE IF NOT EXISTS gatorapp_dead (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    task_id TEXT NOT NULL,
    data BLOB NOT NULL,
    reason TEXT NOT NULL,
    error TEXT NOT NULL,
    failed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS gatorapp_dead_id ON gatorapp_dead (queue, task_id, seq);
CREATE INDEX IF NOT EXISTS gatorapp_dead_time ON gatorapp_dead (queue, failed_at, seq);
"""

# The dead-letter table of earlier versions kept one letter per (queue, task id).
_DEAD_V1_COPY = (
    """
ALTER TABLE gatorapp_dead RENAME TO gatorapp_dead_v1;
DROP INDEX IF EXISTS gatorapp_dead_id;
DROP INDEX IF EXISTS gatorapp_dead_time;
"""
    + _DEAD
    + """
INSERT INTO gatorapp_dead (queue, task_id, data, reason, error, failed_at)
    SELECT queue, task_id, data, reason, error, failed_at FROM gatorapp_dead_v1
    ORDER BY failed_at;
DROP TABLE gatorapp_dead_v1;
"""
)

DEAD_INSERT = (
    "INSERT INTO gatorapp_dead (queue, task_id, data, reason, error, failed_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def create_tables(conn: sqlite3.Connection) -> None:
    """Make the tables, or move an earlier version's dead letters into them."""
    conn.executescript(_SCHEMA + RESULTS + SCHEDULES + WORKERS)
    _dead_table(conn)


def _dead_table(conn: sqlite3.Connection) -> None:
    columns = {row[1] for row in conn.execute("PRAGMA table_info(gatorapp_dead)")}
    if not columns or "seq" in columns:
        conn.executescript(_DEAD)
        return
    conn.execute("BEGIN IMMEDIATE")  # one process moves them; the others wait
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(gatorapp_dead)")}
        if "seq" not in columns:
            for statement in _DEAD_V1_COPY.split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def blob(value: object) -> bytes:
    """A payload column as bytes. A row written by hand may hold TEXT, a number
    or NULL: it comes out as bytes all the same, fails to decode, and becomes
    that task's dead letter instead of failing the whole batch's reserve."""
    if type(value) is bytes:
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return b"" if value is None else str(value).encode()
