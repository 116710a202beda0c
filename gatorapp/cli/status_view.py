"""The live view of ``gatorapp status --watch``, drawn with rich.

Every text that comes from a queue or a worker record is shown through
:func:`~gatorapp.cli.common.safe` and as a rich ``Text`` (never parsed as
markup), so a queue name or task name cannot style or break the screen.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..views import Rates
from ..workers import age as since
from .common import safe


class Failing(NamedTuple):
    """The backend failed the last look: since when, its error, and how often
    the view tries again."""

    since: float
    error: str
    interval: float


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def _t(value: object, style: str = "") -> Text:
    return Text(safe(value), style=style)


def _count(n: int | None) -> Text:
    """A count, or a dim - where the backend cannot tell (never a false 0)."""
    return Text("-", style="dim") if n is None else Text(str(n))


def _rate(value: float | None) -> Text:
    if value is None:
        return Text("-", style="dim")
    text = f"{value:+.1f}/s" if value else "0/s"
    return Text(text, style="green" if value < 0 else "yellow" if value > 0 else "dim")


def render(look: dict[str, Any], rates: Rates, failing: Failing | None = None) -> Group:
    workers = look["workers"]
    finished = rates.finished()
    total = sum(finished.values()) if finished else 0.0
    head = Text()
    head.append("gatorapp ", style="bold")
    head.append(safe(look["backend"]))
    head.append(f"   {_clock(look['time'])}")
    head.append("\n")  # (the backend's URL may be long: the figures get a line of their own)
    if workers is None:
        head.append("workers: not reported on this backend", style="dim")
    else:
        head.append(f"workers alive: {len(workers)}", style="bold")
        head.append(f"   finished: {total:.1f} tasks/s")
    if not look["exact"]:
        head.append("   (approximate counts)", style="dim")
    if not look["detail"]:
        head.append("   (ready counts delayed tasks too)", style="dim")
    if failing is not None:
        head.append(f"\nbackend failing since {_clock(failing.since)}: ", style="bold red")
        head.append(safe(failing.error), style="red")
        head.append(
            f"\nthe figures are from {_clock(look['time'])}; "
            f"trying again every {failing.interval:g}s",
            style="red",
        )

    queues = Table(expand=False, box=None, pad_edge=False, header_style="bold")
    for name, justify in (
        ("queue", "left"),
        ("ready", "right"),
        ("delayed", "right"),
        ("running", "right"),
        ("dead", "right"),
        ("oldest", "right"),
        ("out/s", "right"),
        ("backlog", "right"),
    ):
        queues.add_column(name, justify=justify)  # type: ignore[arg-type]
    change = rates.backlog()
    out = rates.out()
    for r in look["queues"]:
        late = r["age"]
        queues.add_row(
            _t(r["queue"]),
            _t(r["ready"]),
            _count(r["delayed"]),
            _count(r["running"]),
            _t(r["dead"], "red" if r["dead"] else ""),
            _t("-" if late is None else since(time.time() - late), "yellow" if late else "dim"),
            _t(f"{out[r['queue']]:.1f}" if r["queue"] in out else "-"),
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
