"""Stopping a sync task at its ``timeout``, in a supervised worker process.

CPython cannot stop a thread from outside. A worker process under a
supervisor (``gatorapp worker -p N``) can be replaced, though: when a sync
task runs past its timeout, the watchdog records the attempt as failed
(:class:`~gatorapp.errors.TaskTimeout`, retried by the task's policy), the
worker settles what has finished, hands back everything else, and the process
exits with :data:`TIMEOUT_EXIT`; the supervisor starts a new one. Outside a
supervisor nothing would replace the process, so a late sync task runs to its
end there and its attempt fails then (see :func:`gatorapp.execution.overran`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..backends import Reservation
from ..envelope import Task
from ..errors import TaskTimeout
from ..execution import Settlement, failed, settlement
from ..registry import Registry, TaskDef
from .held import fields

log = logging.getLogger("gatorapp.worker")

#: The exit status of a worker process stopped for a task past its timeout.
TIMEOUT_EXIT = 3

#: Seconds between two looks at the running tasks.
INTERVAL = 0.1


class Watchdog:
    """Watches sync attempts that have a time limit.

    :param expired: called (in the watchdog's thread) with the reservation
        and the settlement of the first attempt found past its limit; it is
        expected to end the process.
    """

    def __init__(
        self, registry: Registry, expired: Callable[[Reservation, Settlement], None]
    ) -> None:
        self.registry = registry
        self.expired = expired
        self._lock = threading.Lock()
        self._running: dict[int, tuple[Reservation, Task, TaskDef, float, float]] = {}
        self._claimed: set[int] = set()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def started(self, r: Reservation, task: Task, tdef: TaskDef, limit: float) -> None:
        now = time.monotonic()
        with self._lock:
            self._running[id(r)] = (r, task, tdef, now + limit, now)
        if self._thread is None:
            thread = threading.Thread(target=self._main, name="gatorapp-watchdog", daemon=True)
            self._thread = thread
            thread.start()

    def finished(self, r: Reservation) -> bool:
        """The attempt returned: False when the watchdog has taken it (its
        outcome is then the timeout's, already recorded)."""
        with self._lock:
            self._running.pop(id(r), None)
            return id(r) not in self._claimed

    def stop(self) -> None:
        self._stop.set()

    def _main(self) -> None:
        while not self._stop.wait(INTERVAL):
            now = time.monotonic()
            with self._lock:
                late = [v for v in self._running.values() if v[3] <= now]
                if not late:
                    continue
                r, task, tdef, deadline, t0 = late[0]
                self._claimed.add(id(r))
                del self._running[id(r)]
            limit = deadline - t0
            log.error(
                "task %s %s ran past its timeout of %g s: this worker process stops so "
                "that its supervisor replaces it",
                task.name,
                task.task_id,
                limit,
                extra=fields(r, task.name, task.attempt),
            )
            exc = TaskTimeout(
                f"the attempt ran past its timeout of {limit:g} s; its worker process was "
                "replaced to stop it"
            )
            registry = self.registry
            hooks = registry.hooks_for(task, tdef)
            outcome = failed(task, tdef, hooks, exc, registry.max_attempts)
            self.expired(r, settlement(task, tdef, registry, outcome, now - t0))
            return
