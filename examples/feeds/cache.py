"""A stand-in for a shared cache's counters: one SQLite file, safe across processes."""

import sqlite3
from contextlib import closing
from pathlib import Path

PATH = Path(__file__).parent / "cache.db"


def _connect() -> sqlite3.Connection:
    conn = sqlite3.connect(PATH, timeout=30, isolation_level=None)
    conn.execute("CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER)")
    return conn


def incr(key: str, incr_by: int = 1) -> None:
    with closing(_connect()) as conn:
        conn.execute(
            "INSERT INTO counters VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
            (key, incr_by),
        )


def get(key: str) -> int:
    with closing(_connect()) as conn:
        row = conn.execute("SELECT value FROM counters WHERE key = ?", (key,)).fetchone()
    return row[0] if row else 0
