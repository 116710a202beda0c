"""``gatorapp periodic``: each periodic task, its schedule, its next and last tick."""

from __future__ import annotations

import argparse
import time

from ..app import App
from .common import no_store, safe, when


def cmd_periodic(app: App, args: argparse.Namespace) -> int:
    schedules = app.schedules
    if not schedules:
        print("(this app has no periodic tasks: @app.periodic(cron=...) or (every=...))")
        return 0
    if no_store(app):
        return 1
    backend = app.backend
    rows = [("task", "schedule", "queue", "next run", "last run")]
    now = time.time()
    for s in schedules:
        last = backend.last_tick(s.name, s.queue)
        known = "-" if last is None else when(last)
        rows.append((s.name, s.spec, s.queue, when(s.after(now)), known))
    widths = [max(len(safe(row[i])) for row in rows) for i in range(4)]
    for row in rows:
        cells = [f"{safe(cell):<{w}}" for cell, w in zip(row, widths)]
        print("  ".join([*cells, safe(row[4])]))
    if not backend.ticks_once:
        print(
            f"(last runs are not recorded on {backend.describe()}; run one scheduling "
            "worker there: see docs/periodic.md)"
        )
    return 0
