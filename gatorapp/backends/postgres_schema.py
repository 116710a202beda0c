"""The tables of the PostgreSQL backend, and their version.

Made on first use (``CREATE ... IF NOT EXISTS``) by the first process that
connects, under an advisory lock so two processes starting together do not
race; ``gatorapp_schema`` records the version, so a later change of layout
is a migration from a known version, never a guess.
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 1
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


def create_tables(conn: Any) -> None:
    """Make the tables (a psycopg connection in autocommit mode), or check
    that those found are of a version this code knows."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        conn.execute(TABLES)
        row = conn.execute("SELECT max(version) FROM gatorapp_schema").fetchone()
        found = row[0] if row else None
        if found is None:
            conn.execute("INSERT INTO gatorapp_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
        elif found > SCHEMA_VERSION:
            raise RuntimeError(
                f"the database's gatorapp tables are of version {found}, newer than this "
                f"gatorapp knows ({SCHEMA_VERSION}): upgrade gatorapp"
            )
