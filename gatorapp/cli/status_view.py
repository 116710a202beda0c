"""The live view of ``gatorapp status --watch``, drawn with rich.

Every text that comes from a queue or a worker record is shown through
:func:`~gatorapp.cli.common.safe` and as a rich ``Text`` (never parsed as
markup), so a queue name or task name cannot style or break the screen.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..workers import age as since
from .common import safe

#: seconds of samples a rate is taken over
RATE_WINDOW = 10.0


class Rates:
    """Tasks per second over the last :data:`RATE_WINDOW` seconds, from
    successive looks: tasks finished (the live workers' ``done`` counts) and,
    per queue, how fast its backlog (ready and delayed) grows or shrinks."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, dict[str, int], dict[str, int]]] = deque()

    def add(self, look: dict[str, Any]) -> None:
        t = look["time"]
        backlog = {r["queue"]: r["ready"] + r["delayed"] for r in look["queues"]}
        done = {w["id"]: w["done"] for w in look["workers"] or []}
        self.samples.append((t, backlog, done))
        while len(self.samples) > 2 and t - self.samples[0][0] > RATE_WINDOW:
            self.samples.popleft()

    def finished(self) -> dict[str, float]:
        """Tasks/s finished by each worker (by id), over the window; a worker
        that appeared during it counts from its first look."""
        if len(self.samples) < 2:
            return {}
        t1, _, done1 = self.samples[-1]
        out = {}
        for wid, n in done1.items():
            t0, first = next((t, done[wid]) for t, _, done in self.samples if wid in done)
            out[wid] = (n - first) / (t1 - t0) if t1 > t0 else 0.0
        return out

    def backlog(self) -> dict[str, float]:
        """Change of each queue's backlog per second (negative: it drains)."""
        if len(self.samples) < 2:
            return {}
        t0, backlog0, _ = self.samples[0]
        t1, backlog1, _ = self.samples[-1]
        if t1 <= t0:
            return {}
        return {q: (n - backlog0.get(q, n)) / (t1 - t0) for q, n in backlog1.items()}


def _t(value: object, style: str = "") -> Text:
    return Text(safe(value), style=style)


def _rate(value: float | None) -> Text:
    if value is None:
        return Text("-", style="dim")
    text = f"{value:+.1f}/s" if value else "0/s"
    return Text(text, style="green" if value < 0 else "yellow" if value > 0 else "dim")


def render(look: dict[str, Any], rates: Rates) -> Group:
    workers = look["workers"]
    finished = rates.finished()
    total = sum(finished.values()) if finished else 0.0
    head = Text()
    head.append("gatorapp ", style="bold")
    head.append(safe(look["backend"]))
    head.append(f"   {time.strftime('%H:%M:%S', time.localtime(look['time']))}")
    head.append("\n")  # (the backend's URL may be long: the figures get a line of their own)
    if workers is None:
        head.append("workers: not reported on this backend", style="dim")
    else:
        head.append(f"workers alive: {len(workers)}", style="bold")
        head.append(f"   finished: {total:.1f} tasks/s")
    if not look["exact"]:
        head.append("   (approximate counts)", style="dim")

    queues = Table(expand=False, box=None, pad_edge=False, header_style="bold")
    for name, justify in (
        ("queue", "left"),
        ("ready", "right"),
        ("delayed", "right"),
        ("running", "right"),
        ("dead", "right"),
        ("oldest", "right"),
        ("backlog", "right"),
    ):
        queues.add_column(name, justify=justify)  # type: ignore[arg-type]
    change = rates.backlog()
    for r in look["queues"]:
        late = r["age"]
        queues.add_row(
            _t(r["queue"]),
            _t(r["ready"]),
            _t(r["delayed"]),
            _t(r["running"]),
            _t(r["dead"], "red" if r["dead"] else ""),
            _t("-" if late is None else since(time.time() - late), "yellow" if late else "dim"),
            _rate(change.get(r["queue"])),
        )
    parts: list[Any] = [head, Text(""), queues]
    if workers:
        table = Table(expand=False, box=None, pad_edge=False, header_style="bold")
        for name, justify in (
            ("worker", "left"),
            ("queues", "left"),
            ("up", "right"),
            ("done", "right"),
            ("failed", "right"),
            ("tasks/s", "right"),
            ("running now", "left"),
        ):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        now = time.time()
        for w in workers:
            running = ", ".join(
                f"{t['name']} ({since(t['started'], now)})" for t in w["running"][:3]
            )
            if len(w["running"]) > 3:
                running += f" +{len(w['running']) - 3}"
            table.add_row(
                _t(w["id"]),
                _t(",".join(w["queues"])),
                _t(since(w["started"], now)),
                _t(w["done"]),
                _t(w["failed"], "red" if w["failed"] else ""),
                _t(f"{finished.get(w['id'], 0.0):.1f}"),
                _t(running or "-", "" if running else "dim"),
            )
        parts += [Text(""), table]
    parts.append(Text("\nCtrl-C to quit", style="dim"))
    return Group(*parts)
