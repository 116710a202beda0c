"""Periodic schedules: when each tick of ``@app.periodic`` falls.

Ticks are computed from the wall clock alone, the same way in every process,
so every scheduling worker agrees on them: a tick is enqueued under an id
made of the task's name and the tick's time, and the backend enqueues each
(name, tick) once however many workers try (see ``Backend.enqueue_tick``).

* ``every=N`` ticks at the multiples of N seconds since the Unix epoch (so
  ``every=3600`` ticks on the hour, UTC).
* ``cron=EXPR`` ticks at the minutes the expression matches, read on the
  wall clock of ``tz`` (default UTC), with `cronsim`_, which handles daylight
  saving as cron does: a time that does not exist (the hour skipped in
  spring) runs at the first minute after the gap; a time that occurs twice
  (the hour repeated in autumn) runs once, at its first occurrence, unless
  the expression fires more often than hourly, in which case both
  occurrences are ticks of their own.

.. _cronsim: https://github.com/cuu508/cronsim
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigurationError


def _cronsim() -> Any:
    import cronsim  # (imported when an app declares a cron schedule, not before)

    return cronsim


def _stamps(ticks: Any) -> Any:
    """The epoch seconds of cronsim's ticks (a few at most are ever read)."""
    return (float(tick.timestamp()) for tick in ticks)


@dataclass(frozen=True)
class Schedule:
    """One periodic task: its task name, how it ticks, and what it enqueues."""

    name: str
    queue: str
    every: float | None = None
    cron: str | None = None
    tz: str = "UTC"
    #: seconds a missed tick may be late and still run (None: one period,
    #: see :meth:`limit`)
    lateness: float | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(
        cls,
        name: str,
        queue: str,
        *,
        cron: str | None,
        every: float | dt.timedelta | None,
        tz: str | None,
        lateness: float | dt.timedelta | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Schedule:
        """A checked schedule; anything wrong is a ConfigurationError (at decoration)."""
        if (cron is None) == (every is None):
            raise ConfigurationError("@app.periodic needs cron='...' or every=seconds, not both")
        seconds: float | None = None
        if every is not None:
            seconds = every.total_seconds() if isinstance(every, dt.timedelta) else every
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
                raise ConfigurationError(f"every must be seconds or a timedelta, not {every!r}")
            if not 1 <= seconds <= 366 * 86400:
                raise ConfigurationError(f"every must be 1 s to a year, not {seconds!r}")
            seconds = float(seconds)
        zone = tz or "UTC"
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(f"unknown time zone {zone!r} (an IANA name)") from None
        if cron is not None:
            if not isinstance(cron, str):
                raise ConfigurationError(f"cron must be a string, not {cron!r}")
            lib = _cronsim()
            try:
                lib.CronSim(cron, dt.datetime.now(ZoneInfo(zone)))
            except lib.CronSimError as exc:
                raise ConfigurationError(f"bad cron expression {cron!r}: {exc}") from None
        if every is not None and tz is not None:
            raise ConfigurationError("tz applies to cron schedules; every= counts seconds")
        late = lateness.total_seconds() if isinstance(lateness, dt.timedelta) else lateness
        if late is not None and (
            isinstance(late, bool) or not isinstance(late, (int, float)) or late < 0
        ):
            raise ConfigurationError(f"lateness must be seconds >= 0, not {lateness!r}")
        late = None if late is None else float(late)
        return cls(name, queue, seconds, cron, zone, late, tuple(args), dict(kwargs))

    @property
    def spec(self) -> str:
        if self.every is not None:
            return f"every {self.every:g} s"
        return f"cron {self.cron} ({self.tz})"

    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def latest(self, now: float) -> float:
        """The last tick at or before ``now`` (epoch seconds)."""
        if self.every is not None:
            # (min: a float product may land a hair past ``now``)
            return min(now, math.floor(now / self.every) * self.every)
        at = dt.datetime.fromtimestamp(math.floor(now) + 1, self._zone())
        ticks = _cronsim().CronSim(self.cron, at, reverse=True)
        # (In the hour an autumn clock repeats, cronsim reads the start as its
        # first occurrence, so a tick it gives may lie on the wrong side of
        # ``now``: take the first that does not.)
        latest: float = next(t for t in _stamps(ticks) if t <= now)
        return latest

    def after(self, t: float) -> float:
        """The first tick after ``t``."""
        if self.every is not None:
            return (math.floor(t / self.every) + 1) * self.every
        at = dt.datetime.fromtimestamp(t, self._zone())
        first: float = next(s for s in _stamps(_cronsim().CronSim(self.cron, at)) if s > t)
        return first

    def limit(self, tick: float) -> float:
        """Seconds ``tick`` may be late and still run: the schedule's
        lateness, or by default one period, the gap to the tick after it (a
        weekday task missed on Friday still runs on Monday morning). Worked
        out from the tick alone, so every worker agrees."""
        if self.lateness is not None:
            return self.lateness
        return self.after(tick) - tick

    def tick_id(self, tick: float) -> str:
        """The task id of a tick: the same in every process."""
        return f"periodic:{self.name}:{round(tick * 1000)}"
