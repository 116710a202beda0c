"""Helpers for testing code that enqueues tasks.

Three ways to test tasks, from the simplest:

* eager mode, ``App(eager=True)`` (or ``.options(is_async=False)``): every
  ``.delay()`` runs the task inline, through the same code a worker uses;
* :func:`drain`: enqueue, then run everything ready, here and now;
* :func:`worker`: a real worker in a thread for the duration of a ``with``
  block, when the code under test waits for tasks to finish (see :func:`join`).

Use ``App("memory://")`` for tests: each app has its own store, gone with it.

A backend of your own runs the suite the built-in backends run: subclass
:class:`gatorapp.testing.contract.BackendContract` (that module needs pytest;
importing this one does not import it).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..app import App
from ..backends.memory import MemoryBackend
from ..backends.protocols import queue_admin
from ..errors import GatorError
from ..worker import Worker

__all__ = ["drain", "join", "worker"]

if "pytest" in sys.modules:  # (never imported here: only used when it runs the tests)
    # The contract suite's asserts say what differed, as in a test module of
    # one's own: pytest rewrites them when told before the module is imported.
    sys.modules["pytest"].register_assert_rewrite(
        *(f"{__name__}.{part}" for part in ("contract", "delivery", "administration", "support"))
    )


def drain(app: App, queues: Sequence[str] | None = None, *, max_tasks: int | None = None) -> int:
    """Run every ready task of ``queues`` (default: the app's) until none is
    ready; returns the attempts run. Retries in backoff are not waited for."""
    return app.drain(queues, max_tasks=max_tasks)


def join(app: App, queues: Sequence[str] | None = None, timeout: float = 10.0) -> None:
    """Block until ``queues`` (default: the app's) have nothing ready or
    running; tasks delayed into the future are not waited for. Raises
    :class:`~gatorapp.errors.GatorError` after ``timeout`` seconds."""
    names = list(queues or app.queues())
    backend = app.backend
    if isinstance(backend, MemoryBackend):
        backend.join(names, timeout)
        return
    deadline = time.monotonic() + timeout
    while True:
        stats = [queue_admin(backend).stats(q) for q in names]
        if not any(s.ready or s.running for s in stats):
            return
        if time.monotonic() >= deadline:
            raise GatorError(f"join timed out after {timeout} s with tasks still pending")
        time.sleep(0.01)


@contextmanager
def worker(app: App, **options: Any) -> Iterator[Worker]:
    """Run a :class:`~gatorapp.Worker` in a thread while the block runs, then
    stop it gracefully. ``options`` are the Worker's (``queues``,
    ``concurrency``, ...)::

        with testing.worker(app):
            add.delay(2, 3)
            testing.join(app)
    """
    w = Worker(app, **options)
    failed: list[BaseException] = []

    def run() -> None:
        try:
            w.run_forever()
        except BaseException as exc:  # re-raised in the test's thread
            failed.append(exc)

    thread = threading.Thread(target=run, name="gatorapp-test-worker", daemon=True)
    thread.start()
    try:
        yield w
    finally:
        w.stop()
        thread.join(30)
    if failed:
        raise failed[0]
