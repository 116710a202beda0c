"""Result records in a SQLite file (one table, rows that expire), the
last tick of each periodic schedule, and the records of live workers.

The table is made with the others (``sqlite_schema.RESULTS``). Readers
skip an expired row; writers delete expired rows now and then (at
most once a minute per process), so no separate process sweeps. A reader
waiting in this process is woken by the write at once; across processes it
polls with a short, growing interval (see :meth:`Backend.wait_result`).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence

from .records import Located, Message, ResultItem

SWEEP_EVERY = 60.0  # seconds between two deletes of expired rows, per process

# One condition per database file, for readers waiting in this process.
_WAKE: dict[str, threading.Condition] = {}
_WAKE_LOCK = threading.Lock()
_swept: dict[str, float] = {}


def wake(path: str) -> threading.Condition:
    """The condition readers of ``path`` wait on in this process."""
    with _WAKE_LOCK:
        cond = _WAKE.get(path)
        if cond is None:
            cond = _WAKE[path] = threading.Condition()
        return cond


def put(conn: sqlite3.Connection, path: str, items: Sequence[ResultItem]) -> None:
    """Store the records (in the caller's transaction)."""
    now = time.time()
    conn.executemany(
        "INSERT OR REPLACE INTO gatorapp_results (task_id, record, expires_at) VALUES (?, ?, ?)",
        [(task_id, record, now + ttl) for task_id, record, ttl in items],
    )
    if now - _swept.get(path, 0.0) > SWEEP_EVERY:
        _swept[path] = now
        conn.execute("DELETE FROM gatorapp_results WHERE expires_at <= ?", (now,))


def notify(path: str) -> None:
    """Wake this process's readers of ``path`` (after the commit)."""
    cond = wake(path)
    with cond:
        cond.notify_all()


def get(conn: sqlite3.Connection, task_id: str) -> bytes | None:
    row = conn.execute(
        "SELECT record FROM gatorapp_results WHERE task_id = ? AND expires_at > ?",
        (task_id, time.time()),
    ).fetchone()
    return bytes(row[0]) if row else None


def locate(conn: sqlite3.Connection, queue: str, task_id: str) -> Located | None:
    """Where a task is in its queue (for ``status()``, never per task)."""
    now = time.time()
    row = conn.execute(
        "SELECT data, run_at, token IS NOT NULL AND lease_until > ? FROM gatorapp_tasks "
        "WHERE queue = ? AND task_id = ?",
        (now, queue, task_id),
    ).fetchone()
    if row is None:
        return None
    state = "running" if row[2] else ("ready" if row[1] <= now else "delayed")
    return state, bytes(row[0])


def wait(read: Callable[[], bytes | None], path: str, timeout: float) -> bytes | None:
    """``read()`` until it finds a record or ``timeout`` runs out: woken at
    once by a write in this process, polling every 5 ms to 200 ms (growing)
    for one in another process."""
    deadline = time.monotonic() + timeout
    cond = wake(path)
    pause = 0.005
    while True:
        with cond:  # (held from the read to the wait: a write's wake-up is not missed)
            record = read()
            left = deadline - time.monotonic()
            if record is not None or left <= 0:
                return record
            cond.wait(min(pause, left))
        pause = min(0.2, pause * 1.5)


def enqueue_tick(
    conn: sqlite3.Connection, message: Message, schedule: str, tick: float
) -> tuple[bool, float | None]:
    """Backend.enqueue_tick, in the caller's transaction."""
    row = conn.execute(
        "SELECT last_tick FROM gatorapp_schedules WHERE name = ?", (schedule,)
    ).fetchone()
    last = None if row is None else float(row[0])
    if last is not None and last >= tick:
        return False, last
    conn.execute(
        "INSERT INTO gatorapp_schedules (name, last_tick) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET last_tick = excluded.last_tick",
        (schedule, tick),
    )
    conn.execute(
        "INSERT OR IGNORE INTO gatorapp_tasks (queue, task_id, data, run_at) VALUES (?, ?, ?, ?)",
        (message.queue, message.task_id, message.data, message.run_at or time.time()),
    )
    return True, last


def last_tick(conn: sqlite3.Connection, schedule: str) -> float | None:
    row = conn.execute(
        "SELECT last_tick FROM gatorapp_schedules WHERE name = ?", (schedule,)
    ).fetchone()
    return None if row is None else float(row[0])


def put_worker(conn: sqlite3.Connection, worker_id: str, record: bytes, ttl: float) -> None:
    """Store a worker's record (in the caller's transaction), and delete the
    records of workers that stopped beating."""
    now = time.time()
    conn.execute("DELETE FROM gatorapp_workers WHERE expires_at <= ?", (now,))
    conn.execute(
        "INSERT OR REPLACE INTO gatorapp_workers (worker_id, record, expires_at) VALUES (?, ?, ?)",
        (worker_id, record, now + ttl),
    )


def list_workers(conn: sqlite3.Connection) -> list[bytes]:
    rows = conn.execute(
        "SELECT record FROM gatorapp_workers WHERE expires_at > ? ORDER BY worker_id",
        (time.time(),),
    ).fetchall()
    return [bytes(r[0]) for r in rows]
