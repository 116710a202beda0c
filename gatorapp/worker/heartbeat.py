"""The heartbeat: renews the lease of everything a worker holds, on its own clock.

It runs in a thread of its own, so a worker busy with long tasks (or with a
task that holds the loop's thread) never looks dead. Every
``min(lease) / 3`` seconds (at most 10) it renews every held reservation,
running, buffered or finished but not yet confirmed; it is woken at once when
a task's own shorter lease applies. A renewal the backend refuses means
another worker took the task over: the worker is told, so a buffered task is
skipped instead of run twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..backends import Backend
from .held import Held, fields

log = logging.getLogger("gatorapp.worker")


class Heartbeat:
    def __init__(
        self,
        backend: Backend,
        held: Held,
        default_lease: float,
        settling: Callable[[], set[int]],
    ) -> None:
        self.backend = backend
        self.held = held
        self.default_lease = default_lease
        self.settling = settling  # identities with an outcome: a refusal is no alarm
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gatorapp-heartbeat", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Renew now (a held lease just got shorter)."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)  # it may be mid-call on the backend

    def _run(self) -> None:
        failing = False
        while True:
            held = self.held.snapshot()
            shortest = min((r.lease for r in held), default=self.default_lease)
            self._wake.wait(max(0.05, min(10.0, shortest / 3)))
            self._wake.clear()
            if self._stop.is_set():
                return
            held = self.held.snapshot()
            if not held:
                continue
            try:
                oks = self.backend.extend(held)
            except Exception as exc:
                if not failing:  # once per outage, not once per beat
                    log.warning("heartbeat could not renew %d lease(s): %s", len(held), exc)
                failing = True
                continue
            failing = False
            refused = [r for r, ok in zip(held, oks) if not ok]
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "heartbeat renewed %d of %d lease(s)", len(held) - len(refused), len(held)
                )
            if not refused:
                continue
            # A task settled since the snapshot is refused too; so is one whose
            # settlement is on its way. Only one still held, with no outcome,
            # has really lost its lease.
            settling = self.settling()
            for r in refused:
                if id(r) not in settling and self.held.mark_lost(r):
                    log.warning(
                        "lease of task %s on %s lost to another worker",
                        r.task_id,
                        r.queue,
                        extra=fields(r),
                    )
