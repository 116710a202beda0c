"""``gatorapp metrics`` (queue gauges alone) and ``gatorapp worker --metrics-port``.

See :mod:`gatorapp.metrics` for what is served and how ``-p N`` adds up.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

from ..app import App
from ..metrics import DIR_ENV, Collector, CountsWriter, Folder, Gauges, serve
from ..tally import Tally
from .common import UsageError, no_store

LOOPBACK = "127.0.0.1"


def _serve(collector: Collector, host: str, port: int) -> Any:
    try:
        return serve(collector, host, port)
    except OSError as exc:
        raise UsageError(str(exc)) from None


@contextlib.contextmanager
def worker_metrics(app: App, args: argparse.Namespace) -> Iterator[Tally | None]:
    """What ``gatorapp worker`` counts and serves; yields the tally a worker
    process counts in (None: metrics off).

    * ``--metrics-port`` with ``-p N``: this is the supervisor; it serves the
      sum of the counts its processes write to a folder it made;
    * a process under such a supervisor (``$GATORAPP_METRICS_DIR``): counts
      and writes, serves nothing;
    * ``--metrics-port`` alone: counts and serves.
    """
    folder = os.environ.get(DIR_ENV)
    port = args.metrics_port
    if folder:  # a worker process of a supervisor that serves
        tally = Tally()
        app.producer.tally = tally
        writer = CountsWriter(tally, folder)
        writer.start()
        try:
            yield tally
        finally:
            writer.stop()
        return
    if port is None:
        yield None
        return
    gauges = Gauges(app, args.queues)
    if args.processes > 1:
        made = tempfile.mkdtemp(prefix="gatorapp-metrics-")
        os.environ[DIR_ENV] = made  # (the worker processes inherit it)
        server = _serve(Collector(Folder(made).snapshots, gauges), args.metrics_host, port)
        try:
            yield None
        finally:
            os.environ.pop(DIR_ENV, None)
            if server is not None:
                server.shutdown()
            shutil.rmtree(made, ignore_errors=True)
        return
    tally = Tally()
    app.producer.tally = tally  # (tasks that enqueue tasks count them)
    server = _serve(Collector(lambda: [tally.snapshot()], gauges), args.metrics_host, port)
    try:
        yield tally
    finally:
        if server is not None:
            server.shutdown()


def cmd_metrics(app: App, args: argparse.Namespace) -> int:
    """Serve the queue gauges (no task counts: no task runs here) until a signal."""
    if no_store(app):
        return 1
    server = _serve(Collector(None, Gauges(app, args.queues)), args.host, args.port)
    print(f"gatorapp: metrics on http://{args.host}:{args.port}/metrics; Ctrl-C stops")
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if server is not None:
            server.shutdown()
    return 0
