"""Validation of enqueue-time options (``.options(...)`` and ``app.options(...)``).

Options never mix with a task's own keyword arguments: they travel in their
own call, and an unknown option is an error rather than a silent kwarg.
"""

from __future__ import annotations

import math
import reprlib
from datetime import datetime, timedelta, timezone
from typing import Any

from .errors import ConfigurationError

OPTION_NAMES = frozenset(
    {
        "queue",
        "retries",
        "delay_by",
        "delay_until",
        "on_start",
        "on_success",
        "on_error",
        "is_async",
        "task_id",
        "store_result",
        "result_ttl",
        "timeout",
        # the caller's database connection, to enqueue in its open transaction
        # (PostgreSQL): never stored in the envelope
        "connection",
    }
)

MAX_DELAY = 100 * 365.25 * 86400  # beyond this a delay is a mistake, not a plan

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def check_option_names(opts: dict[str, Any]) -> None:
    unknown = sorted(set(opts) - OPTION_NAMES)
    if unknown:
        raise ConfigurationError(
            f"unknown task option(s) {', '.join(map(repr, unknown))}; known: "
            + ", ".join(sorted(OPTION_NAMES))
        )


def as_bool(value: Any, name: str) -> bool:
    """Booleans, and the strings people put in environment variables."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigurationError(f"{name} must be a boolean, not {value!r}")


def check_retries(value: Any, max_attempts: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"retries must be an integer >= 0, not {value!r}")
    if value >= max_attempts:
        raise ConfigurationError(
            f"retries={value} exceeds the app's limit of {max_attempts} attempts "
            f"(App(max_attempts=...) raises it)"
        )
    return value


MAX_TIMEOUT = 366 * 86400.0


def check_timeout(value: Any) -> float | None:
    """A task's time limit in seconds (None: none)."""
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    number = isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
    if not number or not 0 < seconds <= MAX_TIMEOUT:
        raise ConfigurationError(f"timeout must be seconds > 0 (at most a year), not {value!r}")
    return float(seconds)


def _as_float(number: int | float) -> float:
    """A number as a float; an int too large for one is infinite (and refused)."""
    try:
        return float(number)
    except OverflowError:
        return math.inf if number > 0 else -math.inf


def check_text(what: str, value: str) -> str:
    """A queue name or task id must be text msgpack can carry: no lone surrogates."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigurationError(
            f"{what} must be valid Unicode text (it has a lone surrogate at {exc.start}): {value!r}"
        ) from None
    return value


def to_timestamp(when: Any) -> float:
    """An epoch timestamp from an aware datetime, a naive one (taken as UTC) or a number."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return float(when.timestamp())
    if isinstance(when, (int, float)) and not isinstance(when, bool):
        seconds = _as_float(when)
        if math.isfinite(seconds):
            return seconds
        raise ConfigurationError(
            f"delay_until must be a finite epoch timestamp, not {reprlib.repr(when)}"
        )
    raise ConfigurationError(
        f"delay_until must be a datetime or epoch seconds, not {type(when).__name__}"
    )


def run_at(opts: dict[str, Any], now: float) -> float | None:
    """The due time chosen by ``delay_by`` or ``delay_until``, or None for now."""
    delay_by, delay_until = opts.get("delay_by"), opts.get("delay_until")
    if delay_by is not None and delay_until is not None:
        raise ConfigurationError("give delay_by or delay_until, not both")
    if delay_by is not None:
        if isinstance(delay_by, timedelta):
            seconds = delay_by.total_seconds()
        elif isinstance(delay_by, (int, float)) and not isinstance(delay_by, bool):
            seconds = _as_float(delay_by)
        else:
            raise ConfigurationError(
                f"delay_by must be seconds or a timedelta, not {type(delay_by).__name__}"
            )
        if not math.isfinite(seconds) or not 0 <= seconds <= MAX_DELAY:
            raise ConfigurationError(
                f"delay_by must be a finite number of seconds from 0 to {MAX_DELAY:.0f} "
                f"(100 years), not {reprlib.repr(delay_by)}"
            )
        return now + seconds if seconds > 0 else None
    if delay_until is not None:
        ts = to_timestamp(delay_until)
        if ts - now > MAX_DELAY:
            raise ConfigurationError(
                f"delay_until must be at most {MAX_DELAY:.0f} seconds (100 years) from now, "
                f"not {reprlib.repr(delay_until)}"
            )
        return ts if ts > now else None
    return None
