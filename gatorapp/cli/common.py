"""What the commands share: the usage error, text fit for a terminal, and
the queues a command looks at."""

from __future__ import annotations

import datetime as dt
import sys

from ..app import App
from ..backends.protocols import known_queues


class UsageError(Exception):
    """One line for the user, exit status 2. ``cause``: an exception whose
    traceback is logged at DEBUG (a failed import of the user's module)."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


def when(ts: float) -> str:
    try:
        return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def safe(value: object, keep: str = "") -> str:
    """Text from the queue, fit for a terminal: control characters (a forged
    line break, an escape sequence) are shown escaped, not obeyed. ``keep``
    names the ones to leave (the line breaks of a traceback)."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else repr(c)[1:-1] for c in text)


def cut(text: str, most: int = 120) -> str:
    """``text`` cut at a word, with a marker, when longer than ``most``."""
    if len(text) <= most:
        return text
    head = text[: most - 1]
    space = head.rfind(" ")
    return (head[:space] if space > most // 2 else head).rstrip() + "…"


def queue_list(app: App, chosen: list[str] | None) -> list[str]:
    if chosen:
        warn_unknown(app, chosen)
        return chosen
    return list(dict.fromkeys(app.queues() + known_queues(app.backend)))


def warn_unknown(app: App, chosen: list[str]) -> None:
    """A -Q name the app does not know and the backend holds nothing for is
    most likely a typo: say so, with the names that do exist."""
    own = app.queues()
    unknown = [q for q in chosen if q not in own]
    if not unknown:
        return
    known = list(dict.fromkeys(own + known_queues(app.backend)))
    for q in unknown:
        if q not in known:
            print(
                f"gatorapp: warning: queue {safe(q)!r} is not one of this app's queues and "
                f"holds nothing; known queues: {', '.join(safe(k) for k in known)}",
                file=sys.stderr,
            )


def no_store(app: App) -> bool:
    """Say so when there is nothing to look at: looking must not create it."""
    why = app.backend.missing_store()
    if why:
        print(f"gatorapp: {why}; backend {app.backend.describe()}", file=sys.stderr)
    return bool(why)
