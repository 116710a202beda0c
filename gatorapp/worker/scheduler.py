"""The scheduler: a worker's thread that enqueues the ticks of periodic tasks.

Every scheduling worker computes the same ticks (see :mod:`gatorapp.schedules`)
and asks the backend to enqueue each one with ``enqueue_tick``, which does so
once per (schedule, tick) however many workers ask: there is no leader to
elect and nothing to fail over. The thread sleeps until the next tick of any
schedule, never past it. A tick found later than its schedule's lateness (no
worker was running) is skipped and logged; so are the older ones a restart
finds missed. A schedule the backend has never ticked (a new one, or a new
database) starts with its next tick, not with one from before the worker
started.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from ..backends import Backend, Message
from ..schedules import Schedule

log = logging.getLogger("gatorapp.scheduler")

#: Seconds before a tick whose enqueue failed (the backend down) is tried again.
RETRY_AFTER = 1.0


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


class Scheduler:
    """Enqueues the ticks of ``schedules``; ``make`` builds a tick's message."""

    def __init__(
        self,
        backend: Backend,
        schedules: Sequence[Schedule],
        make: Callable[[Schedule, float], Message],
        ident: str,
    ) -> None:
        self.backend = backend
        self.schedules = list(schedules)
        self.make = make
        self.ident = ident
        #: the last tick of each schedule this scheduler has dealt with
        self.done: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        log.info(
            "%s schedules %s",
            self.ident,
            ", ".join(f"{s.name} ({s.spec})" for s in self.schedules),
        )
        if not self.backend.ticks_once:
            log.warning(
                "%s cannot enqueue a tick once for many workers (%s): if another worker "
                "schedules too, each tick runs once per scheduling worker; run one "
                "scheduling worker and start the others with --no-schedule",
                self.backend.describe(),
                type(self.backend).__name__,
            )
        self._thread = threading.Thread(target=self._run, name="gatorapp-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                wake = self.run_once(time.time())
            except Exception:  # (a bug here must not end scheduling for good)
                log.exception("%s: the scheduler failed; trying again", self.ident)
                wake = time.time() + RETRY_AFTER
            self._stop.wait(max(0.0, wake - time.time()))

    def run_once(self, now: float) -> float:
        """Enqueue every tick due at ``now`` not dealt with yet; return when the
        next tick of any schedule is due."""
        wake = now + 3600.0
        for s in self.schedules:
            tick = s.latest(now)
            if s.name not in self.done and not self._first(s, tick, now):
                wake = min(wake, now + RETRY_AFTER)
                continue
            if self.done.get(s.name, float("-inf")) < tick:
                if not self._tick(s, tick, now):
                    wake = min(wake, now + RETRY_AFTER)
            wake = min(wake, s.after(now))
        return wake

    def _first(self, s: Schedule, tick: float, now: float) -> bool:
        """A schedule's first look: one never ticked starts with its next tick
        (a tick that is due this very second still runs). False: ask again.

        A backend that keeps no record of ticks (``ticks_once`` False) cannot
        say whether the latest tick ran before a restart: running it again at
        every restart would be worse than missing it, so there too the first
        tick is the next."""
        last: float | None = None
        if self.backend.ticks_once:
            try:
                last = self.backend.last_tick(s.name, s.queue)
            except Exception as exc:
                log.warning("periodic %s: could not read its last tick: %s", s.name, exc)
                return False
        if last is None and now - tick > 1.0:
            self.done[s.name] = tick
            log.debug("periodic %s: never ticked here; its first tick is the next", s.name)
        return True

    def _tick(self, s: Schedule, tick: float, now: float) -> bool:
        """Deal with one tick; False when it must be tried again."""
        late, limit = now - tick, s.limit(tick)
        if late > limit:
            self.done[s.name] = tick
            log.info(
                "periodic %s: the tick of %s is %.0f s late, more than its lateness of "
                "%.0f s: skipped",
                s.name,
                _when(tick),
                late,
                limit,
            )
            return True
        try:
            enqueued, last = self.backend.enqueue_tick(self.make(s, tick), s.name, tick)
        except Exception as exc:
            log.warning(
                "periodic %s: could not enqueue the tick of %s: %s", s.name, _when(tick), exc
            )
            return False
        self.done[s.name] = tick
        if enqueued:
            log.debug("periodic %s: enqueued the tick of %s", s.name, _when(tick))
            if last is not None and s.after(last) < tick:
                log.info(
                    "periodic %s: ticks after %s and before %s were missed (no worker "
                    "scheduled then) and are skipped; the latest runs now",
                    s.name,
                    _when(last),
                    _when(tick),
                )
        return True
