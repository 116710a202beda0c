"""SIGINT and SIGTERM: the first stops a worker gracefully, a second at once.

Handlers only note the signal and hand it on (:meth:`Worker.handle_signal`);
the work a stop takes happens outside them. :class:`EarlySignals` covers
the time before a worker exists: importing an app can take a while, and a
signal then must not kill the process with its default action.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

Handler = Callable[[int, Any], None]


class Installed:
    """``handler`` for SIGINT and SIGTERM while in use; the previous ones after.
    Does nothing outside the main thread (Python allows handlers only there)."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Installed:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()


class EarlySignals:
    """Until the worker's own handlers are in place, remember SIGINT/SIGTERM
    instead of dying with the default action."""

    def __init__(self) -> None:
        self.got: list[int] = []
        self._target: Handler | None = None
        self._installed = Installed(self._note)

    def __enter__(self) -> EarlySignals:
        self._installed.__enter__()
        return self

    def _note(self, signum: int, frame: Any) -> None:
        if self._target is not None:
            self._target(signum, frame)
        else:
            self.got.append(signum)

    def forward(self, target: Handler) -> None:
        """From now on hand signals to ``target``, first those that came already."""
        self._target = target
        for signum in self.got:
            target(signum, None)

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def restore(self) -> int | None:
        """Put the previous handlers back; the first signal that came, if any."""
        self._installed.__exit__()
        return self.got[0] if self.got else None
