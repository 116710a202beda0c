"""Prometheus metrics: task counts from :mod:`gatorapp.tally`, queue gauges
from the backend, made when scraped.

* ``gatorapp worker --metrics-port PORT`` serves ``/metrics`` from the
  worker process. Under ``-p N`` each worker process writes its counts to a
  file of a folder its supervisor made, once a second and when it stops, and
  the supervisor serves their sum (a process that is killed loses at most its
  last second of counts). That is prometheus-client's multiprocess mode in
  spirit, without its cost: its counters write a memory-mapped file on every
  increment, which would cost a worker more per task than running a no-op
  task does.
* ``gatorapp metrics -A APP --port PORT`` serves the queue gauges alone.
* :func:`instrument` counts the enqueues of a web app (or any producer) in
  its own prometheus-client registry.

Queue gauges are read from the backend when scraped, at most once a second
however many scrapers ask. prometheus-client is an optional extra
(``gatorapp[metrics]``), imported only here and only when metrics are served.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from .backends import Backend
from .backends.protocols import QueueAdmin
from .envelope import pack, unpack
from .errors import DecodeError, MissingDependencyError, NotAvailable
from .tally import (
    BUCKETS,
    ENQUEUED,
    FAILED,
    FIRST_BUCKET,
    RETRIED,
    SECONDS,
    STARTED,
    SUCCEEDED,
    Tally,
    merge,
)
from .workers import WorkerInfo

log = logging.getLogger("gatorapp.metrics")

#: the environment variable that tells a worker process under a supervisor
#: where to write its counts
DIR_ENV = "GATORAPP_METRICS_DIR"
#: seconds between two writes of a worker process's counts (under -p N)
WRITE_EVERY = 1.0
#: seconds a scrape reuses the queue gauges read for the one before
GAUGE_CACHE = 1.0


def _client() -> Any:
    try:
        import prometheus_client
        import prometheus_client.core  # (the metric families)
    except ImportError:
        raise MissingDependencyError(
            'metrics need prometheus-client: pip install "gatorapp[metrics]"'
        ) from None
    return prometheus_client


class AppLike(Protocol):
    """What the queue gauges need of an app (:class:`gatorapp.App` has it)."""

    @property
    def backend(self) -> Backend: ...

    def queues(self) -> list[str]: ...

    def workers(self) -> list[WorkerInfo]: ...


# -- what a scrape reads ------------------------------------------------------------
def families(snapshot: dict[str, Any]) -> Iterator[Any]:
    """The task metrics of a tally's snapshot (see :mod:`gatorapp.tally`)."""
    core = _client().core
    labels = ["queue", "task"]
    counters = [
        (ENQUEUED, "gatorapp_tasks_enqueued", "Tasks enqueued (.delay, .map) by this process"),
        (STARTED, "gatorapp_tasks_started", "Attempts begun"),
        (SUCCEEDED, "gatorapp_tasks_succeeded", "Attempts that returned"),
        (FAILED, "gatorapp_tasks_failed", "Attempts that raised or ran past their timeout"),
        (RETRIED, "gatorapp_tasks_retried", "Failed attempts put back for another one"),
    ]
    rows = sorted(snapshot["rows"], key=lambda r: (r[0], r[1]))
    for index, name, text in counters:
        family = core.CounterMetricFamily(name, text, labels=labels)
        for q, n, *counts in rows:
            family.add_metric([q, n], counts[index])
        yield family
    dead = core.CounterMetricFamily(
        "gatorapp_tasks_dead",
        "Tasks moved to the dead letters, after their attempts or without one",
        labels=[*labels, "reason"],
    )
    for q, n, reason, count in sorted(snapshot["dead"]):
        dead.add_metric([q, n, reason], count)
    yield dead
    hist = core.HistogramMetricFamily(
        "gatorapp_task_duration_seconds", "Seconds an attempt ran, hooks included", labels=labels
    )
    for q, n, *counts in rows:
        cumulative, total = [], 0
        for bound, count in zip([*BUCKETS, float("inf")], counts[FIRST_BUCKET:]):
            total += count
            cumulative.append((_bound(bound), total))
        if total:
            hist.add_metric([q, n], cumulative, counts[SECONDS])
    yield hist


def _bound(b: float) -> str:
    return "+Inf" if b == float("inf") else repr(b)


class Gauges:
    """The queue gauges, read from the backend at most once per ``GAUGE_CACHE``."""

    def __init__(self, app: AppLike, queues: Sequence[str] | None = None) -> None:
        self.app = app
        self.queues = list(queues or [])
        self.lock = threading.Lock()
        self.read_at = -GAUGE_CACHE
        self.cached: list[Any] = []

    def families(self) -> list[Any]:
        with self.lock:  # (one read for scrapes that come together)
            if time.monotonic() - self.read_at >= GAUGE_CACHE:
                self.cached = self._read()
                self.read_at = time.monotonic()
            return self.cached

    def _read(self) -> list[Any]:
        core = _client().core
        backend = self.app.backend
        up = core.GaugeMetricFamily(
            "gatorapp_backend_up", "1 when the last read of the queue counts succeeded"
        )
        if not isinstance(backend, QueueAdmin):  # (delivery only: no counts to show)
            return []
        try:
            queues = self.queues or list(dict.fromkeys(self.app.queues() + backend.known_queues()))
            stats = [(q, backend.stats(q)) for q in queues]
        except Exception as exc:  # a scrape says the backend is down, never a 500
            log.warning("metrics: could not read the queue counts: %s", exc)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        now = time.time()
        made = [up]
        for field, text in (
            ("ready", "Tasks due and waiting"),
            ("delayed", "Tasks waiting for their due time (retries in backoff too)"),
            ("running", "Tasks leased to a worker"),
            ("dead", "Dead letters"),
        ):
            g = core.GaugeMetricFamily(f"gatorapp_queue_{field}", text, labels=["queue"])
            for q, s in stats:
                g.add_metric([q], getattr(s, field))
            made.append(g)
        late = core.GaugeMetricFamily(
            "gatorapp_queue_oldest_ready_age_seconds",
            "Seconds the oldest ready task has waited since it became due (0: none ready)",
            labels=["queue"],
        )
        if backend.capabilities.oldest:
            for q, s in stats:
                late.add_metric([q], 0.0 if s.oldest is None else max(0.0, now - s.oldest))
        made.append(late)
        try:
            workers = self.app.workers()
        except NotAvailable:
            return made
        except Exception as exc:
            log.warning("metrics: could not read the list of workers: %s", exc)
            return made
        alive = core.GaugeMetricFamily(
            "gatorapp_workers", "Worker processes alive (see gatorapp workers)"
        )
        alive.add_metric([], len(workers))
        running = core.GaugeMetricFamily(
            "gatorapp_workers_running_tasks", "Tasks the live workers run now", labels=["queue"]
        )
        per_queue: dict[str, int] = {}
        for w in workers:
            for t in w.running:
                per_queue[t.queue] = per_queue.get(t.queue, 0) + 1
        for q, n in sorted(per_queue.items()):
            running.add_metric([q], n)
        made += [alive, running]
        return made


class Collector:
    """A prometheus-client collector over task counts and queue gauges."""

    def __init__(
        self,
        snapshots: Callable[[], list[dict[str, Any]]] | None,
        gauges: Gauges | None = None,
    ) -> None:
        self.snapshots = snapshots
        self.gauges = gauges

    def collect(self) -> Iterator[Any]:
        if self.snapshots is not None:
            yield from families(merge(self.snapshots()))
        if self.gauges is not None:
            yield from self.gauges.families()


def registry_of(collector: Collector) -> Any:
    """A prometheus-client registry of its own with ``collector`` in it (the
    process's default registry is left alone)."""
    registry = _client().CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def serve(collector: Collector, host: str, port: int) -> Any:
    """Serve ``/metrics`` on a thread of its own; returns the server (``shutdown()``)."""
    client = _client()
    registry = registry_of(collector)
    try:
        started = client.start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise OSError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    server = started[0] if isinstance(started, tuple) else None
    log.info("metrics on http://%s:%d/metrics", host, port)
    return server


def instrument(app: Any, registry: Any = None) -> Tally:
    """Count the tasks ``app`` enqueues in this process, as
    ``gatorapp_tasks_enqueued_total``, in ``registry`` (default:
    prometheus-client's own, which a web app's ``/metrics`` already serves)."""
    client = _client()
    tally: Tally = app.producer.tally or Tally()
    app.producer.tally = tally
    (registry or client.REGISTRY).register(Collector(lambda: [tally.snapshot()]))
    return tally


# -- worker processes under a supervisor --------------------------------------------
def _read(path: Path) -> dict[str, Any] | None:
    try:
        snap = unpack(path.read_bytes())
    except (OSError, DecodeError):
        return None  # (a process between two writes replaces, never truncates)
    return snap if isinstance(snap, dict) else None


def _gone(path: Path) -> bool:
    """Whether the process that wrote ``path`` (``PID-TOKEN.counts``) has ended."""
    try:
        os.kill(int(path.name.split("-", 1)[0]), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError):
        return False  # (alive, another user's: the pid was given again)
    return False  # (alive, or exited and not yet reaped: either way, not final)


class Folder:
    """The counts every worker process of a supervisor wrote (the sum is served).

    The counts of a process that has ended are final: a scrape adds them to a
    sum kept here and deletes the file, so a supervisor whose processes are
    replaced again and again (a crash, a task past its timeout) reads one
    file per live process, not one per process it ever started, and what
    ended stays counted.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.lock = threading.Lock()
        self.ended: dict[str, Any] = {"rows": [], "dead": []}
        self.summed: set[str] = set()  # (in the sum, though the file would not go)

    def snapshots(self) -> list[dict[str, Any]]:
        with self.lock:  # (two scrapes at once would add an ended process twice)
            live, ended = [], []
            for path in sorted(self.path.glob("*.counts")):
                if path.name in self.summed:
                    continue
                # Asked before the read: counts read while the process lived
                # may miss its last write.
                gone = _gone(path)
                snap = _read(path)
                if snap is None:
                    continue
                if not gone:
                    live.append(snap)
                    continue
                ended.append(snap)
                self.summed.add(path.name)
                try:
                    path.unlink()
                    path.with_suffix(".tmp").unlink(missing_ok=True)
                    self.summed.discard(path.name)
                except OSError:
                    pass
            if ended:
                self.ended = merge([self.ended, *ended])
            return [self.ended, *live]


class CountsWriter:
    """Writes a worker process's counts to the supervisor's folder, once a
    second from a thread of its own, and once more when stopped."""

    def __init__(self, tally: Tally, folder: str) -> None:
        self.tally = tally
        # (Not the pid alone: a later process of the same supervisor may get
        # a pid again, and would overwrite counts that must stay counted.)
        self.path = Path(folder) / f"{os.getpid()}-{secrets.token_hex(4)}.counts"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gatorapp-metrics", daemon=True)
        self._lock = threading.Lock()  # (the thread's write, the worker's last one)

    def start(self) -> None:
        self.tally.last_write = self.write
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.write()

    def _run(self) -> None:
        while not self._stop.wait(WRITE_EVERY):
            self.write()

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        try:
            with self._lock:
                tmp.write_bytes(pack(self.tally.snapshot()))
                os.replace(tmp, self.path)  # (a reader sees the old counts or the new)
        except OSError as exc:
            log.warning("could not write this process's metrics to %s: %s", self.path, exc)
