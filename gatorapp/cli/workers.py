"""``gatorapp workers``: the app's live worker processes and what they run."""

from __future__ import annotations

import argparse
import json
import time

from ..app import App
from ..workers import age as since
from ..workers import list_workers
from .common import no_store, safe


def cmd_workers(app: App, args: argparse.Namespace) -> int:
    if no_store(app):
        return 1
    workers = list_workers(app)  # (NotAvailable: a ConfigurationError, exit 2)
    if args.queues:
        chosen = set(args.queues)
        workers = [w for w in workers if chosen.intersection(w.queues)]
    if args.json:
        print(json.dumps([w.to_dict() for w in workers]))
        return 0
    if not workers:
        print("(no worker is running; a worker lists itself while it runs)")
        return 0
    now = time.time()
    rows = [("worker", "pid", "queues", "conc", "up", "done", "failed", "running")]
    for w in workers:
        conc = str(w.concurrency) + (f"+{w.async_concurrency}a" if w.async_concurrency else "")
        rows.append(
            (
                w.worker_id,
                str(w.pid),
                ",".join(w.queues),
                conc,
                since(w.started, now),
                str(w.done),
                str(w.failed),
                str(len(w.running)),
            )
        )
    widths = [max(len(safe(row[i])) for row in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print("  ".join(f"{safe(cell):<{wd}}" for cell, wd in zip(row, widths)).rstrip())
        if i == 0:
            continue
        for t in workers[i - 1].running:
            print(
                f"    {safe(t.name)} {safe(t.task_id)} on {safe(t.queue)}, {since(t.started, now)}"
            )
    return 0
