"""The ledger file the worker-process test apps write (``$GATORAPP_TEST_LEDGER``,
read back by tests/worker_proc.py): one line a task event, appended with
O_APPEND so lines from several processes never interleave."""

import os

LEDGER = os.environ.get("GATORAPP_TEST_LEDGER", os.devnull)


def append(line: str) -> None:
    fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def log(event: str, key: object) -> None:
    """An ``event key pid`` line."""
    append(f"{event} {key} {os.getpid()}\n")
