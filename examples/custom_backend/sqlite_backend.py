"""A naive backend client on the standard library's sqlite3: the five methods.

Simplistic on purpose: one connection, used only by the thread that made it
(gatorapp's worker calls a client like this only from its main thread), and
delivery is at most once, because pop() deletes a task before it runs.
"""

import sqlite3
import time


class Client:
    def __init__(self, conn_string):
        # sqlite:///relative.db or sqlite:////absolute.db, as SQLAlchemy writes them.
        self.conn_string = conn_string
        path = conn_string.split(":///", 1)[1]
        # isolation_level=None: autocommit, each statement is saved at once.
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.tables = set()

    def _table(self, queue_name):
        if queue_name not in self.tables:
            self.conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{queue_name}" '
                "(seq INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT, data BLOB, "
                "delay_until REAL)"
            )
            self.tables.add(queue_name)
        return f'"{queue_name}"'

    def len(self, queue_name):
        return self.conn.execute(f"SELECT COUNT(*) FROM {self._table(queue_name)}").fetchone()[0]

    def drop_all(self, queue_name):
        self.conn.execute(f"DELETE FROM {self._table(queue_name)}")

    def push(self, queue_name, task_id, data, delay_until=None):
        if delay_until is None:
            delay_until = time.time()
        self.conn.execute(
            f"INSERT INTO {self._table(queue_name)} (task_id, data, delay_until) VALUES (?, ?, ?)",
            (task_id, data, delay_until),
        )
        return task_id

    def pop(self, queue_name):
        # One statement takes the oldest due task and deletes it.
        row = self.conn.execute(
            f"DELETE FROM {self._table(queue_name)} WHERE seq = "
            f"(SELECT seq FROM {self._table(queue_name)} WHERE delay_until <= ? "
            "ORDER BY delay_until, seq LIMIT 1) RETURNING data",
            (time.time(),),
        ).fetchone()
        return None if row is None else row[0]

    def get(self, queue_name, task_id):
        row = self.conn.execute(
            f"DELETE FROM {self._table(queue_name)} WHERE seq = "
            f"(SELECT seq FROM {self._table(queue_name)} WHERE task_id = ? LIMIT 1) "
            "RETURNING data",
            (task_id,),
        ).fetchone()
        return None if row is None else row[0]
