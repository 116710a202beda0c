"""The app SQS worker subprocesses run (``gatorapp worker -A sqs_app``).

URL, lease and ledger path come from the environment. Every execution is a
row in the ledger, an SQLite file in WAL mode, so several worker processes
(and ones killed mid-write) can share it.
"""

from __future__ import annotations

import os
import sqlite3
import time

from gatorapp import App

app = App(
    os.environ.get("GATORAPP_SQS_TEST_URL", "memory://"),
    lease=float(os.environ.get("GATORAPP_SQS_TEST_LEASE", "2")),
)
LEDGER = os.environ.get("GATORAPP_SQS_TEST_LEDGER", ":memory:")


def create_ledger(path: str) -> None:
    """Run once, by the test, before any worker starts: switching a file to WAL
    needs it to itself, and SQLite does not wait for that."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE runs (event TEXT, key TEXT, pid INTEGER, at REAL)")
    conn.close()


def ledger(path: str) -> sqlite3.Connection:
    return sqlite3.connect(path, timeout=30, isolation_level=None)  # WAL stays on in the file


def _log(event: str, key: object) -> None:
    conn = ledger(LEDGER)
    try:
        conn.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?)", (event, str(key), os.getpid(), time.time())
        )
    finally:
        conn.close()


def _started(key: object) -> bool:
    conn = ledger(LEDGER)
    try:
        row = conn.execute(
            "SELECT 1 FROM runs WHERE event = 'start' AND key = ?", (str(key),)
        ).fetchone()
    finally:
        conn.close()
    return row is not None


@app.task
def work(key, sleep=0.0):
    _log("start", key)
    if sleep:
        time.sleep(sleep)
    _log("done", key)


@app.task
def slow_first_time(key, sleep):
    """Sleeps only on its first run, so a redelivery after a kill finishes quickly."""
    first = not _started(key)
    _log("start", key)
    if first:
        time.sleep(sleep)
    _log("done", key)


@app.task(retries=0)
def always_fails(key):
    _log("start", key)
    raise RuntimeError(f"boom {key}")
