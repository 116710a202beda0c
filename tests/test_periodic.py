"""Periodic tasks: tick computation (time zones, daylight saving), the
scheduler against a frozen clock on every built-in store, and worker
processes that schedule side by side."""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from zoneinfo import ZoneInfo

import pytest
from worker_proc import APPS

from gatorapp import App, ConfigurationError, PayloadTooLarge
from gatorapp.backends import Message, load_backend
from gatorapp.schedules import Schedule
from gatorapp.worker.scheduler import Scheduler

BERLIN = ZoneInfo("Europe/Berlin")


def at(*fields: int) -> float:
    return dt.datetime(*fields, tzinfo=BERLIN).timestamp()


def local(t: float) -> str:
    return dt.datetime.fromtimestamp(t, BERLIN).strftime("%m-%d %H:%M%z")


def cron(expr: str, tz: str = "Europe/Berlin") -> Schedule:
    return Schedule.make("t", "q", cron=expr, every=None, tz=tz, lateness=None, args=(), kwargs={})


def ticks(s: Schedule, start: float, n: int) -> list[str]:
    out, t = [], start
    for _ in range(n):
        t = s.after(t)
        out.append(local(t))
    return out


def test_every_ticks_on_multiples_of_its_period() -> None:
    s = Schedule.make("t", "q", cron=None, every=30, tz=None, lateness=None, args=(), kwargs={})
    assert (s.latest(100.0), s.after(90.0), s.after(89.9)) == (90.0, 120.0, 90.0)
    assert s.limit(90.0) == 30 and s.tick_id(90.0) == "periodic:t:90000"
    # (a period that is no whole number: the latest tick is never after now)
    odd = Schedule.make("t", "q", cron=None, every=1.1, tz=None, lateness=None, args=(), kwargs={})
    assert all(odd.latest(n * 1.1) <= n * 1.1 for n in range(1, 2000))
    hourly = Schedule.make(
        "t", "q", cron=None, every=dt.timedelta(hours=1), tz=None, lateness=None, args=(), kwargs={}
    )
    assert hourly.latest(at(2026, 6, 1, 12, 59)) == at(2026, 6, 1, 12, 0)


def test_a_daily_task_neither_skips_nor_doubles_across_daylight_saving() -> None:
    # Spring: 02:30 does not exist on 29 March; it runs once, at 03:00.
    assert ticks(cron("30 2 * * *"), at(2026, 3, 27, 12, 0), 3) == [
        "03-28 02:30+0100",
        "03-29 03:00+0200",
        "03-30 02:30+0200",
    ]
    # Autumn: 02:30 happens twice on 25 October; it runs once.
    assert ticks(cron("30 2 * * *"), at(2026, 10, 24, 12, 0), 3) == [
        "10-25 02:30+0200",
        "10-26 02:30+0100",
        "10-27 02:30+0100",
    ]
    # The same wall-clock time every day, whatever the offset.
    assert ticks(cron("0 3 * * *"), at(2026, 10, 24, 12, 0), 2) == [
        "10-25 03:00+0100",
        "10-26 03:00+0100",
    ]
    # More often than hourly: the repeated hour's times are ticks of their own.
    assert ticks(cron("*/30 * * * *"), at(2026, 10, 25, 1, 45), 4) == [
        "10-25 02:00+0200",
        "10-25 02:30+0200",
        "10-25 02:00+0100",
        "10-25 02:30+0100",
    ]


@pytest.mark.parametrize("expr", ["30 2 * * *", "*/15 * * * *", "0 * * * *", "*/7 1-3 * * *"])
@pytest.mark.parametrize(
    ("tz", "night"),
    [
        ("Europe/Berlin", at(2026, 10, 24, 22, 0)),  # autumn: 03:00 back to 02:00
        ("Europe/Berlin", at(2026, 3, 28, 22, 0)),  # spring: 02:00 on to 03:00
        ("America/New_York", at(2026, 11, 1, 4, 0)),
        ("America/New_York", at(2026, 3, 8, 5, 0)),
    ],
)
def test_ticks_never_fall_on_the_wrong_side_of_now(expr: str, tz: str, night: float) -> None:
    # In the repeated autumn hour a cron library may read "now" as the
    # hour's first occurrence; a next tick in the past would make the
    # scheduler spin, a latest tick in the future would run it early.
    s = cron(expr, tz)
    for t in (night + i for i in range(0, 6 * 3600, 37)):
        assert s.after(t) > t and s.latest(t) <= t


def test_the_default_lateness_is_the_gap_to_the_next_tick() -> None:
    # Worked out from the tick alone (every worker agrees, whenever it started):
    # a weekday task's Friday tick may be late until Monday's.
    weekdays = cron("0 9 * * 1-5")
    friday, monday = at(2026, 6, 5, 9, 0), at(2026, 6, 8, 9, 0)
    assert weekdays.limit(friday) == monday - friday
    assert weekdays.limit(monday) == 86400
    strict = Schedule.make(
        "t", "q", cron="0 9 * * 1-5", every=None, tz=None, lateness=600, args=(), kwargs={}
    )
    assert strict.limit(friday) == 600


def test_latest_is_the_tick_at_or_before_now() -> None:
    s = cron("0 3 * * *")
    assert s.latest(at(2026, 6, 1, 3, 0)) == at(2026, 6, 1, 3, 0)
    assert s.latest(at(2026, 6, 1, 2, 59)) == at(2026, 5, 31, 3, 0)
    assert (
        cron("0 3 * * *", tz="UTC").latest(at(2026, 6, 1, 12, 0))
        == dt.datetime(2026, 6, 1, 3, 0, tzinfo=dt.timezone.utc).timestamp()
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "61 * * * *"}, "bad cron expression '61 \\* \\* \\* \\*'"),
        ({"cron": "* * *"}, "bad cron expression"),
        ({"every": 0}, "every must be 1 s to a year"),
        ({"every": "30"}, "every must be seconds or a timedelta"),
        ({"cron": "0 3 * * *", "every": 30}, "cron='...' or every=seconds, not both"),
        ({}, "cron='...' or every=seconds"),
        ({"cron": "0 3 * * *", "tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"every": 30, "lateness": -1}, "lateness must be seconds >= 0"),
        ({"every": 30, "args": (object(),)}, "msgpack"),
    ],
)
def test_bad_schedules_are_refused_at_decoration(kwargs, message) -> None:
    app = App("memory://")
    with pytest.raises((ConfigurationError, TypeError), match=message):

        @app.periodic(**kwargs)
        def nightly():
            return None

    assert app.schedules == []


def scheduled_app(url: str) -> App:
    app = App(url)

    @app.periodic(every=60, queue="ticks")
    def minutely():
        return None

    return app


def test_many_schedulers_enqueue_each_tick_once(store_url: str) -> None:
    app = scheduled_app(store_url)
    backend = app.backend
    (s,) = app.schedules
    first = Scheduler(backend, app.schedules, app.tick_message, "w1")
    second = Scheduler(load_backend(app.url), app.schedules, app.tick_message, "w2")
    t0 = 1_800_000_000.0  # a multiple of 60
    for scheduler in (first, second):  # never ticked: both start with the next tick
        assert scheduler.run_once(t0 + 5) == t0 + 60
    assert backend.stats("ticks").ready == 0
    for now in (t0 + 60, t0 + 60.5, t0 + 61):
        first.run_once(now)
        second.run_once(now)
    assert backend.stats("ticks").ready == 1
    assert backend.last_tick(s.name, s.queue) == t0 + 60
    (r,) = backend.reserve(["ticks"], 10, 30, "w")
    assert r.task_id == s.tick_id(t0 + 60)
    assert backend.ack([r]) == [True]
    # Done and gone: a late scheduler still does not enqueue it again.
    third = Scheduler(load_backend(app.url), app.schedules, app.tick_message, "w3")
    third.run_once(t0 + 65)
    assert backend.stats("ticks").ready == 0
    app.close()


def test_a_restart_runs_the_latest_missed_tick_once_and_skips_older_ones(
    store_url: str, caplog
) -> None:
    app = scheduled_app(store_url)
    backend = app.backend
    (s,) = app.schedules
    t0 = 1_800_000_000.0
    Scheduler(backend, app.schedules, app.tick_message, "w1").run_once(t0 + 0.5)
    assert backend.stats("ticks").ready == 1  # due this very second: it runs
    backend.drop_all("ticks")
    caplog.set_level(logging.INFO, "gatorapp.scheduler")
    # Ten minutes with no worker: the latest tick (20 s ago) runs, once.
    again = Scheduler(backend, app.schedules, app.tick_message, "w1")
    again.run_once(t0 + 620)
    again.run_once(t0 + 621)
    assert backend.stats("ticks").ready == 1
    assert backend.last_tick(s.name, s.queue) == t0 + 600
    assert "were missed (no worker scheduled then) and are skipped" in caplog.text
    app.close()


def test_a_tick_later_than_its_lateness_is_skipped(store_url: str, caplog) -> None:
    app = App(store_url)

    @app.periodic(every=60, queue="ticks", lateness=10)
    def strict():
        return None

    backend = app.backend
    t0 = 1_800_000_000.0
    Scheduler(backend, app.schedules, app.tick_message, "w1").run_once(t0)
    backend.drop_all("ticks")
    caplog.set_level(logging.INFO, "gatorapp.scheduler")
    Scheduler(backend, app.schedules, app.tick_message, "w1").run_once(t0 + 600 + 30)
    assert backend.stats("ticks").ready == 0
    assert "is 30 s late, more than its lateness of 10 s: skipped" in caplog.text
    app.close()


def test_without_a_record_of_ticks_a_restart_waits_for_the_next_tick(sqs_url: str) -> None:
    # SQS keeps no record of ticks: a worker started 30 s after a tick
    # cannot know whether it ran, and running it at every restart would be
    # worse than missing it.
    app = scheduled_app(sqs_url)
    t0 = 1_800_000_000.0
    scheduler = Scheduler(app.backend, app.schedules, app.tick_message, "w1")
    assert scheduler.run_once(t0 + 30) == t0 + 60
    assert app.backend.stats("ticks").ready == 0
    scheduler.run_once(t0 + 60.2)
    assert app.backend.stats("ticks").ready == 1
    app.close()


def test_a_refused_tick_is_not_recorded(store_url: str) -> None:
    backend = load_backend(store_url, max_payload=100)
    with pytest.raises(PayloadTooLarge):
        backend.enqueue_tick(Message("ticks", "t1", b"x" * 200), "big", 60.0)
    with pytest.raises(ConfigurationError, match="queue name"):
        backend.enqueue_tick(Message("", "t2", b"x"), "nameless", 60.0)
    assert backend.last_tick("big", "ticks") is None
    assert backend.last_tick("nameless", "") is None
    backend.close()


def test_a_backend_that_cannot_tick_once_says_so(sqs_url: str, caplog) -> None:
    app = scheduled_app(sqs_url)
    caplog.set_level(logging.WARNING, "gatorapp.scheduler")
    scheduler = Scheduler(app.backend, app.schedules, app.tick_message, "w1")
    scheduler.start()
    scheduler.stop()
    assert "run one scheduling worker and start the others with --no-schedule" in caplog.text
    app.close()


def test_the_periodic_command(tmp_path, monkeypatch) -> None:
    env = {**os.environ, "PYTHONPATH": str(APPS), "GATORAPP_TEST_URL": f"sqlite:///{tmp_path}/q.db"}
    env["PERIODIC_LEDGER"] = str(tmp_path / "ledger")
    cmd = [sys.executable, "-m", "gatorapp"]
    worker = subprocess.run(
        [*cmd, "worker", "-A", "periodic_app", "--max-tasks", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode == 0, worker.stderr
    assert "schedules periodic_app.every_second (every 1 s)" in worker.stderr
    out = subprocess.run(
        [*cmd, "periodic", "-A", "periodic_app"], env=env, capture_output=True, text=True
    ).stdout.splitlines()
    assert out[0].split() == ["task", "schedule", "queue", "next", "run", "last", "run"]
    assert out[1].startswith("periodic_app.every_second  every 1 s")
    assert out[1].endswith("UTC") and out[1].count("UTC") == 2


def ledger_ticks(path) -> Counter[str]:
    return Counter(line.split()[0] for line in path.read_text().splitlines())


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "redis", "postgres"])
def test_two_worker_processes_run_each_tick_once(kind: str, tmp_path, request) -> None:
    url = (
        f"sqlite:///{tmp_path}/q.db" if kind == "sqlite" else request.getfixturevalue(f"{kind}_url")
    )
    ledger = tmp_path / "ledger"
    env = {**os.environ, "PYTHONPATH": str(APPS), "GATORAPP_TEST_URL": url}
    env["PERIODIC_LEDGER"] = str(ledger)
    cmd = [sys.executable, "-m", "gatorapp", "worker", "-A", "periodic_app", "-l", "WARNING"]
    procs = [subprocess.Popen(cmd, env=env) for _ in range(2)]
    try:
        time.sleep(3.5)
        procs[0].send_signal(signal.SIGKILL)  # one dies; the other goes on ticking
        procs[0].wait(10)
        time.sleep(3.0)
    finally:
        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(30) == 0
    seen = ledger_ticks(ledger)
    assert seen and max(seen.values()) == 1, seen  # no tick twice
    stamps = sorted(int(t.rsplit(":", 1)[1]) // 1000 for t in seen)
    # None missed from the first to the last (a task killed with its worker may
    # run again after its lease: it is recorded at its start, so allow that).
    assert stamps == list(range(stamps[0], stamps[-1] + 1)), stamps
    assert len(stamps) >= 5
