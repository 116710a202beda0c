"""``gatorapp status``: once, as JSON, and ``--watch`` in a real terminal
(a pseudo-terminal) while a real worker drains."""

from __future__ import annotations

import argparse
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest
from rich.console import Console
from service_redis import RedisServer
from worker_proc import env_for, start_worker, stop

from gatorapp import App
from gatorapp.cli import status
from gatorapp.cli.status_view import render
from gatorapp.errors import MissingDependencyError
from gatorapp.views import Rates


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gatorapp", "status", "-A", "ledger_app", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_once_and_as_json(served) -> None:
    _, record, env = served
    record.delay("a")
    record.delay("b")
    record.options(delay_by=3600).delay("later")
    time.sleep(1.1)
    done = cli(env)
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["queue", "ready", "delayed", "running", "dead", "oldest"]
    cells = {row.split()[0]: row.split()[1:] for row in rows}
    assert cells["default"][:4] == ["2", "1", "0", "0"]
    assert re.fullmatch(r"[1-9]\d*s", cells["default"][4])  # waited a second or more
    look = json.loads(cli(env, "--json").stdout)
    (q,) = [r for r in look["queues"] if r["queue"] == "default"]
    assert (q["ready"], q["delayed"], q["running"], q["dead"]) == (2, 1, 0, 0)
    assert q["age"] >= 1.0 and q["oldest"] <= time.time() - 1.0
    assert look["workers"] == [] and look["exact"] is True


def _read(fd: int, seconds: float) -> bytes:
    out = b""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                out += os.read(fd, 65536)
            except OSError:
                break
    return out


def _screen(raw: bytes) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw.decode(errors="replace"))


def _spawn_watch(env: dict[str, str], *args: str) -> tuple[int, int]:
    """``gatorapp status --watch`` on a pseudo-terminal: its pid and the
    terminal's fd to read the screen from."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: gatorapp status --watch on a terminal
        os.environ.update(env, COLUMNS="140", LINES="40")
        argv = ["gatorapp", "status", "-A", "ledger_app", "--watch", *args]
        os.execvpe(sys.executable, [sys.executable, "-m", *argv], os.environ)
    return pid, fd


def _until(fd: int, pattern: str, seconds: float) -> str:
    """The screen's text read until ``pattern`` shows in the latest frame."""
    seen = ""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen += _screen(_read(fd, 0.2))
        if re.search(pattern, _last_frame(seen)):
            return seen
    raise AssertionError(f"no {pattern!r} within {seconds}s:\n{seen[-2000:]}")


def _last_frame(seen: str) -> str:
    return seen[seen.rfind("gatorapp ") :]


@pytest.mark.slow
def test_watch_redraws_in_a_terminal_until_ctrl_c(served) -> None:
    _, record, env = served
    record.map([f"k{i}" for i in range(400)])
    pid, fd = _spawn_watch(env, "--interval", "0.3")
    worker = None
    try:
        first = _screen(_read(fd, 3))
        assert "default" in first and "Ctrl-C to quit" in first
        assert re.search(r"default\s+400\s", first), first[-2000:]
        worker = start_worker(env, "--beat", "0.3", "-Q", "default")
        later = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            later += _screen(_read(fd, 0.5))
            tail = later[-1500:]
            if "workers alive: 1" in tail and re.search(r"default\s+0\s", tail):
                if re.search(r"finished: [1-9][\d.]* tasks/s", later):
                    break
        tail = later[-1500:]
        assert "workers alive: 1" in tail and re.search(r"default\s+0\s", tail), tail
        # (the worker's done count comes with its next beat: a rate over the window)
        assert re.search(r"finished: [1-9][\d.]* tasks/s", later), tail
        assert str(worker.pid) in tail  # its line in the workers table
        os.kill(pid, signal.SIGINT)
        rest = _screen(_read(fd, 2))
        _, code = os.waitpid(pid, 0)
    finally:
        if worker is not None:
            stop(worker)
        os.close(fd)
    assert os.waitstatus_to_exitcode(code) == 0
    assert "Traceback" not in later + rest


WATCH = [sys.executable, "-m", "gatorapp", "status", "-A", "ledger_app", "--watch"]


@pytest.mark.slow
def test_watch_outlives_the_backend_going_away_and_coming_back(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()  # (its own: it is killed)
    env = env_for(server.url, tmp_path / "ledger.txt")
    pid, fd = _spawn_watch(env, "--interval", "0.2")
    try:
        _until(fd, r"Ctrl-C to quit", 10)
        server.kill()
        down = _until(fd, r"backend failing since [\d:]+: Redis", 10)
        assert re.search(r"the figures are from [\d:]+; trying again every 0.2s", down)
        assert os.waitpid(pid, os.WNOHANG) == (0, 0)  # still there
        server.start()
        app = App(server.url)

        @app.task(name="ledger_app.record")
        def record(key): ...

        record.delay("back")
        app.close()
        back = _until(fd, r"default\s+1\s", 10)  # (a look after the restart)
        assert "failing" not in _last_frame(back)
        os.kill(pid, signal.SIGINT)
        rest = _screen(_read(fd, 2))
        _, code = os.waitpid(pid, 0)
    finally:
        os.close(fd)
        server.close()
    assert os.waitstatus_to_exitcode(code) == 0
    assert "Traceback" not in down + back + rest


@pytest.mark.slow
def test_watch_without_a_terminal_reports_a_failing_backend_on_stderr(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    env = env_for(server.url, tmp_path / "ledger.txt")
    proc = subprocess.Popen(
        [*WATCH, "--interval", "0.2", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)
        server.kill()
        time.sleep(1.0)
        server.start()
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        server.close()
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert re.search(r"^\d{4}-\d\d-\d\d [\d:]+ Redis stats failed", err, re.M), err
    times = [json.loads(line)["time"] for line in out.splitlines()]  # JSON lines only
    # looks before the kill and after the restart, a gap between them
    assert len(times) >= 4 and max(b - a for a, b in pairwise(times)) >= 0.8, times


def test_watch_without_a_terminal_prints_tables_or_json_lines(served, tmp_path) -> None:
    _, record, env = served
    record.delay("a")
    for args, check in (
        ((), lambda out: out.count("queue ") >= 2 and "default" in out),
        (("--json",), lambda out: all(json.loads(line)["queues"] for line in out.splitlines())),
    ):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gatorapp",
                "status",
                "-A",
                "ledger_app",
                "--watch",
                "--interval",
                "0.2",
                *args,
            ],
            env=env,
            stdout=(tmp_path / "out").open("w"),
            stderr=subprocess.PIPE,
            text=True,
        )
        # Ctrl-C once it has drawn a few times (sooner, on a loaded machine, it
        # may still be importing: Python's own exit for an interrupt is 130).
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (tmp_path / "out").read_text().count("\n") < 6:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        out = (tmp_path / "out").read_text()
        assert proc.returncode == 0 and "Traceback" not in err, err
        assert check(out), out


def test_the_view_shows_queue_and_task_names_as_text_never_as_markup() -> None:
    now = time.time()
    look = {
        "time": now,
        "backend": "memory://",
        "exact": True,
        "detail": True,
        "queues": [
            {"queue": "q[bold]x\x1b[2J", "ready": 1, "delayed": 0, "running": 0, "dead": 0,
             "oldest": now - 5, "age": 5.0},
        ],
        "workers": [
            {"id": "h:1:a", "queues": ["q"], "started": now - 60, "done": 3, "failed": 0,
             "running": [{"id": "t", "name": "evil[/]\x07", "queue": "q", "started": now}]},
        ],
    }  # fmt: skip
    console = Console(record=True, width=160, color_system=None)
    console.print(render(look, Rates()))
    text = console.export_text()
    assert "q[bold]x\\x1b[2J" in text  # escaped, literally
    assert "evil[/]\\x07" in text
    assert "\x1b" not in text and "\x07" not in text


class ListClient:
    """A five-method client (see gatorapp.backends.client), in memory: its
    backend cannot tell delayed tasks from ready ones, nor see running ones."""

    def __init__(self, conn_string: str) -> None:
        self.queues: dict[str, list[tuple[str, bytes]]] = {}

    def len(self, queue_name: str) -> int:
        return len(self.queues.get(queue_name, []))

    def drop_all(self, queue_name: str) -> None:
        self.queues.pop(queue_name, None)

    def push(self, queue_name: str, task_id: str, data: bytes, delay_until=None) -> str:
        self.queues.setdefault(queue_name, []).append((task_id, data))
        return task_id

    def pop(self, queue_name: str) -> bytes | None:
        items = self.queues.get(queue_name)
        return items.pop(0)[1] if items else None

    def get(self, queue_name: str, task_id: str) -> bytes | None:
        return next((d for t, d in self.queues.get(queue_name, []) if t == task_id), None)


def test_counts_a_backend_cannot_tell_are_never_a_false_zero(capsys) -> None:
    app = App("list://", backend_class=ListClient)

    @app.task
    def later() -> None: ...

    later.options(delay_by=3600).delay()
    later.delay()
    args = argparse.Namespace(queues=None, json=True, watch=False, interval=1.0)
    assert status.cmd_status(app, args) == 0
    look = json.loads(capsys.readouterr().out)
    assert look["detail"] is False
    (q,) = look["queues"]
    assert (q["ready"], q["delayed"], q["running"], q["dead"]) == (2, None, None, 0)

    status.print_table(look)
    _, row = capsys.readouterr().out.splitlines()
    assert row.split()[:5] == ["default", "2", "-", "-", "0"]

    rates = Rates()
    rates.add(look)
    rates.add({**look, "time": look["time"] + 1.0})
    assert rates.backlog() == {"default": 0.0}
    console = Console(record=True, width=160, color_system=None)
    console.print(render(look, rates))
    text = console.export_text()
    assert re.search(r"default\s+2\s+-\s+-\s+0\s", text), text
    assert "(ready counts delayed tasks too)" in text


def test_an_interval_under_a_tenth_of_a_second_is_refused() -> None:
    for interval in ("0", "0.01", "-1", "nan"):
        done = cli(dict(os.environ), "--watch", "--interval", interval)
        assert done.returncode == 2 and "expected seconds >= 0.1" in done.stderr, done.stderr


def test_watch_without_rich_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rich.live", None)
    with pytest.raises(MissingDependencyError, match=r'pip install "gatorapp\[cli\]"'):
        status.live(App("memory://"), ["default"], 1.0)


def test_rates_from_successive_looks() -> None:
    def look(t: float, backlog: int, workers: list[tuple[str, int, dict[str, int]]]):
        return {
            "time": t,
            "queues": [{"queue": "q", "ready": backlog, "delayed": 0}],
            "workers": [{"id": w, "done": d, "settled": s} for w, d, s in workers],
        }

    rates = Rates()
    assert rates.out() == {} and rates.finished() == {} and rates.backlog() == {}
    rates.add(look(100.0, 500, [("a", 0, {})]))
    rates.add(look(102.0, 300, [("a", 100, {"q": 100})]))
    # b appears: it counts from its first look, not from zero
    rates.add(look(104.0, 100, [("a", 200, {"q": 200}), ("b", 1000, {"q": 1000})]))
    rates.add(look(105.0, 0, [("a", 250, {"q": 250}), ("b", 1100, {"q": 1100})]))
    assert rates.finished() == {"a": 50.0, "b": 100.0}
    assert rates.out() == {"q": 150.0}
    assert rates.backlog() == {"q": -100.0}
    # a worker that leaves takes nothing away
    rates.add(look(106.0, 0, [("b", 1200, {"q": 1200})]))
    assert rates.out() == {"q": 100.0}
