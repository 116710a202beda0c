"""Helpers to run ``gatorapp worker`` as a real subprocess and read the ledger."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from gatorapp.worker.fetch import MAX_PREFETCH, OVERLAP

APPS = Path(__file__).parent / "apps"


def held_bound(concurrency: int, prefetch: int | None) -> int:
    """The most tasks one worker process holds at once (buffered, running, or
    finished with its acknowledgement unsent): what a SIGKILL can make run
    again. Its high-water mark is concurrency + prefetch (adaptive prefetch:
    at most MAX_PREFETCH); a worker with one thread also runs the last
    OVERLAP of a batch while the next one is on its way."""
    high = concurrency + (MAX_PREFETCH if prefetch is None else prefetch)
    return high + int(high * OVERLAP) if concurrency == 1 else high


def env_for(url: str, ledger: Path, lease: float = 2.0) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GATORAPP_TEST_URL=url,
        GATORAPP_TEST_LEDGER=str(ledger),
        GATORAPP_TEST_LEASE=str(lease),
        PYTHONPATH=os.pathsep.join([str(APPS), env.get("PYTHONPATH", "")]),
        PYTHONUNBUFFERED="1",
    )
    return env


def start_worker(env: dict[str, str], *args: str, app: str = "ledger_app") -> subprocess.Popen:
    """Start a worker whose output goes to a temporary file (a pipe nobody reads
    would fill up and block the worker's logging); ``stop`` returns it."""
    out = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gatorapp", "worker", "-A", app, *args],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
    )
    proc.output_file = out  # type: ignore[attr-defined]
    return proc


def output(proc: subprocess.Popen) -> str:
    out = proc.output_file  # type: ignore[attr-defined]
    out.seek(0)
    return out.read()


def ledger_lines(path: Path) -> list[str]:
    """Complete lines of a ledger file. A reader can catch a writer mid-append,
    so a last line with no newline yet is left for the next read."""
    return path.read_text().split("\n")[:-1]


def read_ledger(ledger: Path) -> list[tuple[str, str, int]]:
    if not ledger.exists():
        return []
    rows = []
    for line in ledger_lines(ledger):
        event, key, pid = line.split()
        rows.append((event, key, int(pid)))
    return rows


def counts(ledger: Path, event: str = "done") -> collections.Counter[str]:
    return collections.Counter(key for ev, key, _ in read_ledger(ledger) if ev == event)


def wait_for(predicate, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(sig)
    if getattr(proc, "output_file", None) is None:  # a Popen with its own pipes
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    proc.wait(timeout=timeout)
    return proc.returncode, output(proc)


def kill_repeatedly(
    env: dict[str, str],
    args: Sequence[str],
    marks: Sequence[int],
    done: Callable[[], int],
    *,
    app: str = "ledger_app",
    relative: bool = False,
    then: Callable[[], object] | None = None,
    timeout: float = 60,
    interval: float = 0.02,
) -> list[int]:
    """SIGKILL workers mid-drain, one for each of ``marks``: start a worker
    (``args``), wait until ``done()`` (completions in the ledger) reaches the
    mark (counted from where it stood when that worker started, if
    ``relative``), call ``then()`` if given, and kill it. Fails if a mark is
    not reached within ``timeout``. Returns ``done()`` after each kill."""
    killed_at = []
    for mark in marks:
        proc = start_worker(env, *args, app=app)
        target = mark + done() if relative else mark
        reached = wait_for(lambda t=target: done() >= t, timeout, interval=interval)
        if reached and then is not None:
            then()
        proc.kill()
        proc.wait()
        assert reached, stop(proc)[1][-3000:]
        killed_at.append(done())
    return killed_at


# Lines that fault tests want in the test output whether they pass or fail;
# tests/conftest.py prints them at the end of the run.
FAULT_REPORTS: list[str] = []


def report(line: str) -> None:
    print(line)
    FAULT_REPORTS.append(line.strip())


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    """Wait for a worker that exits by itself (--burst, --max-tasks)."""
    proc.wait(timeout=timeout)
    return proc.returncode, output(proc)
