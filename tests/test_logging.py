"""Logging as a user sets it up: the app's own configuration, JSON lines,
a log file, DEBUG lines that say what the worker does, and quiet successes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from worker_proc import APPS

from gatorapp import App, Worker


def gatorapp(tmp_path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(APPS),
        "GATORAPP_TEST_URL": f"sqlite:///{tmp_path}/q.db",
    }
    return subprocess.run(
        [sys.executable, "-m", "gatorapp", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


@pytest.fixture
def queued(tmp_path, monkeypatch):
    """One task that succeeds and one that fails for good, in tmp_path/q.db."""
    monkeypatch.setenv("GATORAPP_TEST_URL", f"sqlite:///{tmp_path}/q.db")
    monkeypatch.syspath_prepend(str(APPS))
    sys.modules.pop("cli_app", None)
    import cli_app

    ok = cli_app.send.delay(7)
    bad = cli_app.fail.delay()
    cli_app.app.close()
    sys.modules.pop("cli_app", None)
    return ok.id, bad.id


def test_json_lines_parse_and_carry_the_task_fields(tmp_path, queued):
    ok_id, bad_id = queued
    done = gatorapp(tmp_path, "worker", "-A", "cli_app", "--burst", "--log-format", "json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    for line in lines:
        assert {"time", "level", "logger", "message", "pid"} <= set(line)
    (dead,) = [x for x in lines if x.get("task_id") == bad_id]
    assert dead["level"] == "ERROR" and dead["logger"] == "gatorapp.worker"
    assert dead["task_name"] == "cli_app.fail" and dead["queue"] == "default"
    assert dead["attempt"] == 1 and isinstance(dead["duration"], float)
    assert "ValueError: always fails" in dead["message"]
    assert "stopped: 2 tasks done (1 succeeded, 1 failed)" in lines[-1]["message"]
    assert not [x for x in lines if x.get("task_id") == ok_id]  # a success: DEBUG only


def test_debug_shows_what_the_worker_does(tmp_path, queued):
    ok_id, _ = queued
    done = gatorapp(
        tmp_path, "worker", "-A", "cli_app", "--burst", "-l", "DEBUG", "--log-format", "json"
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    messages = [x["message"] for x in lines]
    assert any(" reserved 2 of 2 task(s) asked for on default,emails" in m for m in messages)
    assert any(" settled 1 ack(s), 0 retry(ies), 1 dead letter(s)" in m for m in messages)
    (success,) = [x for x in lines if x.get("task_id") == ok_id]
    assert success["level"] == "DEBUG" and "succeeded in" in success["message"]
    assert success["queue"] == "emails" and success["attempt"] == 1


def test_the_apps_own_logging_setup_is_kept(tmp_path, queued):
    done = gatorapp(tmp_path, "worker", "-A", "logging_app", "--burst")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines and all(line.startswith("APPFORMAT ") for line in lines), lines
    assert any("gatorapp.worker" in line and "starting" in line for line in lines)
    # An explicit -l still sets gatorapp's level within the app's setup.
    done = gatorapp(tmp_path, "worker", "-A", "logging_app", "--burst", "-l", "ERROR")
    assert done.returncode == 0 and "starting" not in done.stderr
    # An explicit format wins over the app's.
    done = gatorapp(tmp_path, "status", "-A", "logging_app", "--log-format", "json")
    assert "APPFORMAT" not in done.stderr


def test_logfile_takes_the_lines_and_a_bad_path_is_a_usage_error(tmp_path, queued):
    log_path = tmp_path / "worker.log"
    done = gatorapp(tmp_path, "worker", "-A", "cli_app", "--burst", "--logfile", str(log_path))
    assert done.returncode == 0
    assert "INFO gatorapp.worker" not in done.stderr
    text = log_path.read_text()
    assert "starting" in text and "to dead letters" in text and "stopped" in text
    done = gatorapp(tmp_path, "worker", "-A", "cli_app", "--logfile", str(tmp_path / "no/x.log"))
    assert done.returncode == 2
    assert done.stderr.startswith("gatorapp: error: cannot open log file")


def test_json_lines_from_worker_processes(tmp_path, queued):
    done = gatorapp(
        tmp_path, "worker", "-A", "cli_app", "--burst", "-p", "2", "--log-format", "json"
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert len({x["pid"] for x in lines}) == 3  # the supervisor and its two workers
    assert any(x["logger"] == "gatorapp.supervisor" for x in lines)


def test_an_overridden_result_silences_the_success_lines(caplog):
    app = App("memory://")
    seen = []

    @app.task
    def double(x):
        return 2 * x

    class Collecting(Worker):
        def result(self, result):
            seen.append(result)

    for i in range(3):
        double.delay(i)
    caplog.set_level(logging.DEBUG, "gatorapp")
    Collecting(app, burst=True).run_forever()
    assert seen == [0, 2, 4]
    assert not [r for r in caplog.records if "succeeded in" in r.getMessage()]
    for i in range(3):
        double.delay(i)
    Worker(app, burst=True).run_forever()
    assert len([r for r in caplog.records if "succeeded in" in r.getMessage()]) == 3
