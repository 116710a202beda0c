"""A worker process reporting itself (see :mod:`gatorapp.workers`).

:class:`Running` is what the executors mark: each task from its start to its
outcome, a dict write and a delete (no lock: each is atomic, and the reporter
copies the dict in one step). :class:`Reporter` is a thread of its own that
writes the worker's record every ``beat`` seconds, so a worker busy with a
long task still reports, and deletes it when the worker stops.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from ..backends import Backend
from ..workers import BEATS_TO_LIVE, RunningTask, WorkerInfo

log = logging.getLogger("gatorapp.worker")


#: a running task as the executors mark it: id, name, queue, start (epoch
#: seconds); a plain tuple, made once per task
Mark = tuple[str, str, str, float]


class Running:
    """Tasks running now in this process, by an id of the caller's choice."""

    __slots__ = ("tasks",)

    def __init__(self) -> None:
        self.tasks: dict[int, Mark] = {}

    def snapshot(self) -> list[RunningTask]:
        return [RunningTask(*m) for m in sorted(self.tasks.copy().values(), key=lambda m: m[3])]


class Reporter:
    """Writes one worker's record every ``beat`` seconds until stopped.

    :param counts: the attempts finished and the failed ones among them.
    """

    def __init__(
        self,
        store: Backend,
        worker_id: str,
        *,
        queues: list[str],
        concurrency: int,
        async_concurrency: int,
        version: str,
        running: Running,
        counts: Callable[[], tuple[int, int]],
        beat: float,
        settled: Callable[[], dict[str, int]] = dict,
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self.queues = queues
        self.concurrency = concurrency
        self.async_concurrency = async_concurrency
        self.version = version
        self.running = running
        self.counts = counts
        self.settled = settled
        self.beat = beat
        self.started = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def record(self) -> WorkerInfo:
        done, failed = self.counts()
        return WorkerInfo(
            worker_id=self.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=self.queues,
            concurrency=self.concurrency,
            async_concurrency=self.async_concurrency,
            version=self.version,
            started=self.started,
            beat=time.time(),
            ttl=self.beat * BEATS_TO_LIVE,
            done=done,
            failed=failed,
            running=self.running.snapshot(),
            settled=self.settled(),
        )

    def start(self) -> None:
        self._write()  # (listed from its first moment, before the first task)
        self._thread = threading.Thread(target=self._run, name="gatorapp-report", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop writing and delete the record (the worker leaves the list now)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self.store.remove_worker(self.worker_id)
        except Exception as exc:  # (it expires on its own)
            log.warning("could not remove worker %s from the list: %s", self.worker_id, exc)

    def _run(self) -> None:
        while not self._stop.wait(self.beat):
            self._write()

    def _write(self) -> None:
        try:
            self.store.put_worker(self.worker_id, self.record().encode(), self.beat * BEATS_TO_LIVE)
        except Exception as exc:
            # The record expires, and comes back with the next beat that gets
            # through; said once per outage, not once per beat.
            if not self._failing:
                log.warning(
                    "could not write worker %s's record (it leaves `gatorapp workers` until "
                    "a write gets through): %s",
                    self.worker_id,
                    exc,
                )
            self._failing = True
            return
        if self._failing:
            log.info("worker %s's record is written again", self.worker_id)
        self._failing = False
