"""Workers that report themselves: the record each worker process keeps in
its backend while it runs, and the list of them.

A worker process writes its record (:class:`WorkerInfo`, msgpack) when it
starts and again every few seconds, from a thread of its own
(:mod:`gatorapp.worker.report`); each write lives ``ttl`` seconds, three
beats. It deletes its record when it stops, so a stopped worker leaves the
list at once and a killed one when its last record expires. That is one
small write per beat, never one per task.

The records live in the task backend when it keeps them (memory, SQLite,
Redis: ``Backend.supports_workers``), else in the app's result store (an SQS
app with ``App(results="redis://...")``); with neither, workers do not report
themselves and :func:`list_workers` raises :class:`NotAvailable`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .backends import Backend
from .envelope import pack, unpack
from .errors import DecodeError
from .errors import NotAvailable as NotAvailable  # (its home before errors)

#: seconds between two writes of a worker's record (``gatorapp worker --beat``)
DEFAULT_BEAT = 5.0
#: a record lives this many beats: a worker is listed until it missed them all
BEATS_TO_LIVE = 3


@dataclass(frozen=True, slots=True)
class RunningTask:
    """A task a worker is running now."""

    task_id: str
    name: str
    queue: str
    started: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One worker process, as it last reported itself."""

    worker_id: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    version: str
    started: float  # epoch seconds
    beat: float  # when this record was written (epoch seconds)
    ttl: float  # seconds the record lives unless written again
    done: int = 0  # attempts finished, failed ones included
    failed: int = 0
    running: list[RunningTask] = field(default_factory=list)
    async_concurrency: int = 0
    #: deliveries settled per queue (acked, retried or buried) since it started
    settled: dict[str, int] = field(default_factory=dict)

    @property
    def succeeded(self) -> int:
        return self.done - self.failed

    def encode(self) -> bytes:
        return pack(
            {
                "v": 1,
                "id": self.worker_id,
                "host": self.host,
                "pid": self.pid,
                "queues": self.queues,
                "c": self.concurrency,
                "ac": self.async_concurrency,
                "version": self.version,
                "started": self.started,
                "beat": self.beat,
                "ttl": self.ttl,
                "done": self.done,
                "failed": self.failed,
                "running": [[t.task_id, t.name, t.queue, t.started] for t in self.running],
                "settled": self.settled,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> WorkerInfo:
        """A record from its bytes; DecodeError when it is not one."""
        d = unpack(data)
        try:
            return cls(
                worker_id=str(d["id"]),
                host=str(d["host"]),
                pid=int(d["pid"]),
                queues=[str(q) for q in d["queues"]],
                concurrency=int(d["c"]),
                async_concurrency=int(d.get("ac", 0)),
                version=str(d["version"]),
                started=float(d["started"]),
                beat=float(d["beat"]),
                ttl=float(d["ttl"]),
                done=int(d["done"]),
                failed=int(d["failed"]),
                running=[
                    RunningTask(str(i), str(n), str(q), float(s)) for i, n, q, s in d["running"]
                ],
                settled={str(q): int(n) for q, n in (d.get("settled") or {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DecodeError(f"not a worker record: {exc!r}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``gatorapp workers --json``, the dashboard)."""
        return {
            "id": self.worker_id,
            "host": self.host,
            "pid": self.pid,
            "queues": self.queues,
            "concurrency": self.concurrency,
            "async_concurrency": self.async_concurrency,
            "version": self.version,
            "started": self.started,
            "beat": self.beat,
            "done": self.done,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "running": [
                {"id": t.task_id, "name": t.name, "queue": t.queue, "started": t.started}
                for t in self.running
            ],
            "settled": self.settled,
        }


class HasStores(Protocol):
    """What :func:`store_for` needs of an app (:class:`gatorapp.App` has it)."""

    @property
    def backend(self) -> Backend: ...

    def result_store(self) -> Backend | None: ...


def store_for(app: HasStores) -> Backend | None:
    """Where the app's workers keep their records, or None (nowhere)."""
    if app.backend.supports_workers:
        return app.backend
    store = app.result_store()
    return store if store is not None and store.supports_workers else None


def decode_all(records: Iterable[bytes]) -> list[WorkerInfo]:
    """The records that decode, by host, then start time (a damaged or
    foreign record is skipped, not an error for the whole list)."""
    out = []
    for data in records:
        try:
            out.append(WorkerInfo.decode(data))
        except DecodeError:
            continue
    return sorted(out, key=lambda w: (w.host, w.started, w.pid))


def list_workers(app: HasStores) -> list[WorkerInfo]:
    """The app's live workers (those whose last record has not expired)."""
    store = store_for(app)
    if store is None:
        raise NotAvailable(
            f"{type(app.backend).__name__} keeps no list of workers: give the app a "
            'result store that does (App(results="redis://..." or "sqlite:///...")), '
            "and its workers report themselves there"
        )
    return decode_all(store.list_workers())


def age(since: float, now: float | None = None) -> str:
    """``since`` as a short age for people: ``42s``, ``3m05s``, ``2h01m``, ``3d04h``."""
    s = max(0, int((time.time() if now is None else now) - since))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
