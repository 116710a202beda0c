"""A server process the tests start on a free loopback port: the part
``service_postgres``, ``service_redis`` and ``service_sqs`` share.

A subclass says what differs: its command line (:meth:`ServerProcess.args`),
how to tell that it answers (:meth:`ServerProcess.answers`), its log file
and its URL. The base class starts it (its output appended to the log file,
unless a subclass spawns it otherwise), waits until it answers, and stops,
kills and restarts it on the same port, so fault tests can take a server
away under a running worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import conftest  # partly initialised while it imports this module: use at call time only

S = TypeVar("S", bound="ServerProcess")


class ServerProcess:
    name = "server"  # for messages
    start_timeout = 10.0  # seconds start() waits for an answer
    poll_interval = 0.05  # seconds between its looks
    stop_signal = signal.SIGTERM  # what stop() sends
    signal_timeout = 10.0  # seconds stop() and kill() wait for it to exit
    log_path: Path | None = None  # what log() reads
    preexec_fn: Callable[[], None] | None = None  # run in the child before the server

    def __init__(self, port: int | None = None) -> None:
        self.port = port or conftest.free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def args(self) -> list[str]:
        raise NotImplementedError

    def spawn(self) -> subprocess.Popen[bytes]:
        assert self.log_path is not None
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(
                self.args(), stdout=log, stderr=subprocess.STDOUT, preexec_fn=self.preexec_fn
            )

    def answers(self) -> bool:
        raise NotImplementedError

    def log(self) -> str:
        path = self.log_path
        return path.read_text(errors="replace") if path is not None and path.exists() else ""

    def exit_output(self) -> str:
        """What to say when the process exits before it answers."""
        err = self.proc.stderr.read().decode() if self.proc and self.proc.stderr else ""
        return f"{err}{self.log()[-2000:]}"

    def start(self: S, timeout: float | None = None) -> S:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = self.spawn()
        deadline = time.monotonic() + (self.start_timeout if timeout is None else timeout)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.exit_output()}")
            if self.answers():
                return self
            time.sleep(self.poll_interval)
        raise RuntimeError(f"{self.name} did not answer on port {self.port}: {self.log()[-2000:]}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(self.stop_signal)

    def restart(self, down_for: float = 0.0, *, kill: bool = True) -> None:
        self.kill() if kill else self.stop()
        time.sleep(down_for)
        self.start()

    def _signal(self, sig: int) -> None:
        if not self.running():
            return
        assert self.proc is not None
        os.kill(self.proc.pid, sig)
        self.proc.wait(self.signal_timeout)

    def close(self) -> None:
        self.kill()
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
