"""``gatorapp status``: counts per queue, once (for people and scripts), as
JSON (for machines), or redrawn live with ``--watch`` until Ctrl-C.

The live view needs rich (``pip install "gatorapp[cli]"``); it is drawn with
rich's tables, never with hand-written terminal codes. When standard output
is not a terminal, ``--watch`` prints a plain table every interval instead,
so a log or a pipe gets lines, not screen redraws.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from ..app import App
from ..backends.protocols import queue_admin
from ..errors import BackendError, MissingDependencyError, NotAvailable
from ..workers import WorkerInfo
from ..workers import age as since
from .common import no_store, queue_list, safe

#: the shortest ``--interval`` between two looks of ``--watch``, in seconds
MIN_INTERVAL = 0.1

#: one look at the queues and workers, as :func:`read` returns it
Look = dict[str, Any]


def read(app: App, queues: Sequence[str]) -> Look:
    """One look at the queues and the workers, as plain data (``--json``)."""
    backend = app.backend
    now = time.time()
    # A count the backend cannot know is None (null, shown as -), never a false 0.
    detail = backend.capabilities.stats_detail
    admin = queue_admin(backend)
    rows = []
    for q in queues:
        s = admin.stats(q)
        rows.append(
            {
                "queue": q,
                "ready": s.ready,
                "delayed": s.delayed if detail else None,
                "running": s.running if detail else None,
                "dead": s.dead,
                "oldest": s.oldest,
                "age": None if s.oldest is None else round(max(0.0, now - s.oldest), 3),
            }
        )
    workers: list[WorkerInfo] | None
    try:
        workers = app.workers()
    except NotAvailable:
        workers = None
    return {
        "time": now,
        "backend": backend.describe(),
        "exact": backend.capabilities.exact_stats,
        "detail": detail,
        "queues": rows,
        "workers": None if workers is None else [w.to_dict() for w in workers],
    }


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else since(time.time() - seconds)


def _count(n: int | None) -> str:
    return "-" if n is None else str(n)


def print_table(look: dict[str, Any], out: Any = None) -> None:
    """The plain table, one line per queue (what scripts read)."""
    out = out or sys.stdout
    rows = look["queues"]
    width = max([5, *(len(safe(r["queue"])) for r in rows)])
    print(
        f"{'queue':<{width}}  {'ready':>7}  {'delayed':>7}  {'running':>7}  {'dead':>7}  "
        f"{'oldest':>7}",
        file=out,
    )
    for r in rows:
        delayed, running = (_count(r[k]) for k in ("delayed", "running"))
        print(
            f"{safe(r['queue']):<{width}}  {r['ready']:>7}  {delayed:>7}  {running:>7}  "
            f"{r['dead']:>7}  {_age(r['age']):>7}",
            file=out,
        )


def cmd_status(app: App, args: argparse.Namespace) -> int:
    if no_store(app):
        return 1
    queues = queue_list(app, args.queues)
    if args.watch:
        return watch(app, queues, args.interval, args.json)
    look = read(app, queues)
    if args.json:
        print(json.dumps(look))
        return 0
    print(f"backend: {app.backend.describe()}", file=sys.stderr)  # (it answered)
    own = set(app.queues())
    others = [safe(q) for q in queues if q not in own]
    if others:
        print(
            f"(not consumed by a worker of this app by default, no task of it uses them: "
            f"{', '.join(others)})",
            file=sys.stderr,
        )
    unknown = app.backend.capabilities.reason("stats_detail")
    print_table(look)
    why = app.backend.capabilities.reason("exact_stats")
    if why:
        print(f"(approximate counts: {why})")
    if unknown:
        print(f"(ready counts delayed tasks too; {unknown})")
    return 0


def looks(app: App, queues: Sequence[str], interval: float) -> Iterator[Look | BackendError]:
    """A look now, then one every ``interval`` seconds. The first one raises
    when the backend fails (a wrong URL, a server that is down: say so and
    exit); a later failure is handed on, and the next look tries again, so a
    view left open survives a server's restart or a network blip."""
    yield read(app, queues)
    while True:
        time.sleep(interval)
        try:
            yield read(app, queues)
        except BackendError as exc:
            yield exc


def watch(app: App, queues: Sequence[str], interval: float, as_json: bool) -> int:
    """Look again every ``interval`` seconds until Ctrl-C (exit status 0)."""
    try:
        if as_json or not sys.stdout.isatty():
            for look in looks(app, queues, interval):
                if isinstance(look, BackendError):
                    # (stdout keeps one shape of line: the failure goes to stderr)
                    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                    print(f"{stamp} {safe(str(look))}", file=sys.stderr, flush=True)
                elif as_json:  # JSON lines, one look each
                    print(json.dumps(look), flush=True)
                else:
                    print(time.strftime("%Y-%m-%d %H:%M:%S"), flush=True)
                    print_table(look)
                    print(flush=True)
        else:
            live(app, queues, interval)
    except KeyboardInterrupt:
        pass
    return 0


def live(app: App, queues: Sequence[str], interval: float) -> None:
    try:
        from rich.live import Live
    except ImportError:
        raise MissingDependencyError(
            'gatorapp status --watch needs rich: pip install "gatorapp[cli]"'
        ) from None
    from ..views import Rates
    from .status_view import Failing, render  # (rich is there: imported only now)

    rates = Rates()
    every = looks(app, queues, interval)
    last = next(every)
    assert not isinstance(last, BackendError)  # (the first look raises instead)
    rates.add(last)
    failing: Failing | None = None
    with Live(render(last, rates), auto_refresh=False, screen=False) as view:
        for look in every:
            if isinstance(look, BackendError):
                # The last figures stay on screen, under the error and its time.
                since = failing.since if failing else time.time()
                failing = Failing(since, str(look), interval)
            else:
                last, failing = look, None
                rates.add(look)
            view.update(render(last, rates, failing), refresh=True)
