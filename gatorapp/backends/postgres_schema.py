"""The tables of the PostgreSQL backend, and their version.

Made on first use (``CREATE ... IF NOT EXISTS``) by the first process that
connects, under an advisory lock so two processes starting together do not
race; ``gatorapp_schema`` records the version, so a later change of layout
is a migration from a known version, never a guess: :data:`MIGRATIONS`
takes a database from each version to the next, in the transaction that
records the new version.

A database whose tables are of this version needs no DDL at all: a role
that may only read and write the tables (not create or alter them) is
enough to run producers and workers.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

log = logging.getLogger("gatorapp.backends")

SCHEMA_VERSION = 2
#: the advisory lock key the schema is made under ("gatorapp" in ASCII)
LOCK_KEY = 0x6761746F72617070 & 0x7FFFFFFFFFFFFFFF

TABLES = """
CREATE TABLE IF NOT EXISTS gatorapp_schema (
    version integer NOT NULL
);
CREATE TABLE IF NOT EXISTS gatorapp_tasks (
    seq bigserial PRIMARY KEY,
    queue text NOT NULL,
    task_id text NOT NULL,
    data bytea NOT NULL,
    run_at double precision NOT NULL,
    token text,
    lease_until double precision,
    deliveries integer NOT NULL DEFAULT 0,
    UNIQUE (queue, task_id)
);
CREATE INDEX IF NOT EXISTS gatorapp_tasks_due ON gatorapp_tasks (queue, run_at, seq);
CREATE TABLE IF NOT EXISTS gatorapp_dead (
    seq bigserial PRIMARY KEY,
    queue text NOT NULL,
    task_id text NOT NULL,
    data bytea NOT NULL,
    reason text NOT NULL,
    error text NOT NULL,
    failed_at double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS gatorapp_dead_id ON gatorapp_dead (queue, task_id, seq);
CREATE INDEX IF NOT EXISTS gatorapp_dead_time ON gatorapp_dead (queue, failed_at, seq);
CREATE TABLE IF NOT EXISTS gatorapp_results (
    task_id text PRIMARY KEY,
    record bytea NOT NULL,
    expires_at double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS gatorapp_results_expiry ON gatorapp_results (expires_at);
CREATE TABLE IF NOT EXISTS gatorapp_schedules (
    name text PRIMARY KEY,
    last_tick double precision NOT NULL
);
CREATE TABLE IF NOT EXISTS gatorapp_workers (
    worker_id text PRIMARY KEY,
    record bytea NOT NULL,
    expires_at double precision NOT NULL
);
"""

# What takes the tables from version N - 1 to N (a fresh database gets the
# version 1 tables above, then every step).
MIGRATIONS: dict[int, str] = {
    # 2: storage for a table whose rows are short-lived. A reserve updates a
    # row in place (its lease: no indexed column changes), which PostgreSQL
    # can do without touching the indexes (a HOT update) only where the page
    # has room: fillfactor leaves that room on pages written from now on.
    # Every task's row is deleted after it ran: vacuum the table after a
    # fixed number of dead rows rather than a fraction of its size (a table
    # that was large once and is drained stays bloated otherwise), at full
    # speed (no cost delay), and analyze it as often, so plans follow a table
    # that swings from empty to millions of rows.
    2: """
ALTER TABLE gatorapp_tasks SET (
    fillfactor = 50,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 5000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 20000,
    autovacuum_vacuum_cost_delay = 0
);
""",
}


#: migrations that change only storage settings: a role that may not alter
#: the tables goes on without them (with a warning) rather than stopping
OPTIONAL = frozenset({2})


def _found(conn: Any) -> int | None:
    """The version of the tables found; None when there are none."""
    if conn.execute("SELECT to_regclass('gatorapp_schema')").fetchone()[0] is None:
        return None
    row = conn.execute("SELECT max(version) FROM gatorapp_schema").fetchone()
    return row[0] if row else None


def create_tables(conn: Any) -> None:
    """Make the tables (a psycopg connection in autocommit mode), or check
    that those found are of a version this code knows."""
    found = _found(conn)
    if found == SCHEMA_VERSION:
        return  # (no DDL: the role may be one that only reads and writes)
    if found is not None and found > SCHEMA_VERSION:
        raise _newer(found)
    try:
        _make(conn)
    except psycopg.errors.InsufficientPrivilege as exc:
        pending = set(range((found or 0) + 1, SCHEMA_VERSION + 1))
        if found is None or not pending or not pending <= OPTIONAL:
            raise
        log.warning(
            "gatorapp's PostgreSQL tables are of version %s; version %s changes only "
            "their storage settings, and this role may not alter them (%s): it goes on "
            "without them. Connect once as the tables' owner to apply them.",
            found,
            SCHEMA_VERSION,
            str(exc).strip(),
        )


def _newer(found: int) -> RuntimeError:
    return RuntimeError(
        f"the database's gatorapp tables are of version {found}, newer than this "
        f"gatorapp knows ({SCHEMA_VERSION}): upgrade gatorapp"
    )


def _make(conn: Any) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        conn.execute(TABLES)
        row = conn.execute("SELECT max(version) FROM gatorapp_schema").fetchone()
        found = row[0] if row else None
        if found is None:
            conn.execute("INSERT INTO gatorapp_schema (version) VALUES (1)")
            found = 1
        elif found > SCHEMA_VERSION:
            raise _newer(found)
        if found < SCHEMA_VERSION:
            for version in range(found + 1, SCHEMA_VERSION + 1):
                conn.execute(MIGRATIONS[version])
            conn.execute("UPDATE gatorapp_schema SET version = %s", (SCHEMA_VERSION,))
