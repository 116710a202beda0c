"""``gatorapp worker -p N``: N worker processes under one supervisor.

Each child is a whole ``gatorapp worker`` process of its own, started by app
path (``python -m gatorapp worker -A ...``), with its own threads, leases,
heartbeat and batches: nothing is shared between processes but the backend.
Children start fresh interpreters, so no connection or lock is ever carried
across a ``fork()``.

The supervisor:

* starts the children and replaces one that dies (and says so), waiting a
  little longer each time one dies soon after it started, so a child that
  cannot start does not spin;
* hands SIGTERM/SIGINT on to every child: the first signal drains them
  gracefully, a second stops them at once (as it does a single worker);
* exits 0 when every child stopped cleanly, 128 + signal number after a
  second signal, 2 when a child found a configuration error, else 1.

Children are in sessions of their own, so a Ctrl-C in a terminal reaches the
supervisor only, which passes it on once. Each child also holds the read end
of a pipe whose write end only the supervisor has: if the supervisor dies, even
by SIGKILL, the pipe closes and the children stop gracefully (their buffered
tasks are handed back, running ones finish).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..worker.signals import Installed
from ..worker.watchdog import TIMEOUT_EXIT

log = logging.getLogger("gatorapp.supervisor")

#: The environment variable naming a child's end of the supervisor's pipe.
LIFELINE_ENV = "GATORAPP_SUPERVISOR_FD"

#: A child that dies sooner than this after its start is restarted with backoff.
QUICK_DEATH = 5.0
MAX_RESTART_DELAY = 30.0


def watch_lifeline(stop: Callable[[], None]) -> None:
    """In a child: call ``stop`` once the supervisor is gone (its pipe closed)."""
    value = os.environ.pop(LIFELINE_ENV, None)
    if value is None:
        return
    fd = int(value)

    def watch() -> None:
        try:
            while os.read(fd, 1):
                pass
        except OSError:
            pass
        log.warning("the supervisor is gone: stopping")
        stop()

    threading.Thread(target=watch, name="gatorapp-lifeline", daemon=True).start()


def describe(status: int) -> str:
    """A child's exit status in words."""
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    if status == TIMEOUT_EXIT:
        return f"stopped for a task past its timeout (status {status})"
    return f"exited with status {status}"


class Child:
    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.restart_at = 0.0
        self.delay = 0.0
        self.finished: int | None = None  # exit status once it is done for good


class Supervisor:
    """:param argv: the child's command line after ``gatorapp`` (``worker ...``).
    :param processes: how many children.
    :param restart_clean: replace a child that exits with status 0 (a child
        only does so when asked to stop, or with ``--burst``/``--max-tasks``,
        where it is done)."""

    def __init__(self, argv: Sequence[str], processes: int, *, restart_clean: bool) -> None:
        self.argv = [sys.executable, "-m", "gatorapp", *argv]
        self.children = [Child(i + 1) for i in range(processes)]
        self.restart_clean = restart_clean
        self.signals: list[int] = []
        self._read, self._write = os.pipe()

    def _start(self, child: Child) -> None:
        env = {**os.environ, LIFELINE_ENV: str(self._read)}
        child.proc = subprocess.Popen(
            self.argv, env=env, pass_fds=(self._read,), start_new_session=True
        )
        child.started = time.monotonic()
        log.info("worker process %d started (pid %d)", child.slot, child.proc.pid)

    def handle_signal(self, signum: int, frame: Any = None) -> None:
        """SIGTERM/SIGINT: noted here, passed on to the children by the loop."""
        self.signals.append(signum)

    def _forward(self, signum: int) -> None:
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                try:
                    child.proc.send_signal(signum)
                except ProcessLookupError:
                    pass

    def run(self) -> int:
        with Installed(self.handle_signal):
            try:
                return self._run()
            finally:
                os.close(self._write)  # (children see the pipe close if any remain)
                os.close(self._read)

    def _run(self) -> int:
        log.info(
            "supervisor (pid %d) starting %d worker processes", os.getpid(), len(self.children)
        )
        for child in self.children:
            self._start(child)
        forwarded = 0
        config_error = False
        while True:
            while forwarded < len(self.signals):
                signum = self.signals[forwarded]
                forwarded += 1
                if forwarded == 1:
                    log.warning(
                        "supervisor got %s: stopping %d worker processes gracefully; "
                        "send it again to stop them now",
                        signal.Signals(signum).name,
                        len(self.children),
                    )
                    self._forward(signal.SIGTERM)
                elif forwarded == 2:
                    log.warning("supervisor got a second signal: stopping worker processes now")
                    self._forward(signal.SIGTERM)
            stopping = forwarded > 0 or config_error
            now = time.monotonic()
            for child in self.children:
                proc = child.proc
                if child.finished is not None:
                    continue
                if proc is None:
                    if stopping:
                        child.finished = 0
                    elif now >= child.restart_at:
                        self._start(child)
                    continue
                status = proc.poll()
                if status is None:
                    continue
                child.proc = None
                if stopping or (status == 0 and not self.restart_clean):
                    # (a child replaced for an overdue task did as designed)
                    child.finished = 0 if status == TIMEOUT_EXIT else status
                    continue
                if status == 2:
                    # A usage or configuration error: every child would meet it.
                    log.error(
                        "worker process %d (pid %d) %s: a configuration error; stopping",
                        child.slot,
                        proc.pid,
                        describe(status),
                    )
                    child.finished = status
                    config_error = True
                    self._forward(signal.SIGTERM)
                    continue
                quick = now - child.started < QUICK_DEATH
                child.delay = min(MAX_RESTART_DELAY, max(0.5, child.delay * 2)) if quick else 0.0
                child.restart_at = now + child.delay
                log.error(
                    "worker process %d (pid %d) %s; starting a new one%s",
                    child.slot,
                    proc.pid,
                    describe(status),
                    f" in {child.delay:.1f} s" if child.delay else "",
                )
            if all(child.finished is not None for child in self.children):
                break
            time.sleep(0.05)
        codes = [child.finished or 0 for child in self.children]
        if len(self.signals) >= 2:
            return 128 + self.signals[1]
        if config_error:
            return 2
        return 0 if all(c == 0 for c in codes) else 1
