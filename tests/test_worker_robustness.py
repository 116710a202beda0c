"""The worker against a failing backend, short per-task leases, early signals,
and input validation found by user-level review."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from worker_proc import APPS

from gatorapp import App, BackendError, ConfigurationError, Worker, cli
from gatorapp.backends.memory import MemoryBackend


class FlakyBackend(MemoryBackend):
    """Every call fails while ``down`` is set."""

    down = True

    def reserve(self, *args, **kwargs):
        if self.down:
            raise BackendError("backend is down")
        return super().reserve(*args, **kwargs)

    def wait(self, queues, timeout):
        if self.down:
            raise BackendError("backend is down")
        return super().wait(queues, timeout)


def test_an_outage_is_logged_once_and_retried_with_backoff(caplog):
    app = App("flaky://", backend_class=FlakyBackend)
    ran = []

    @app.task
    def job():
        ran.append(1)

    FlakyBackend.down = True
    worker = Worker(app)
    thread = threading.Thread(target=worker.run_forever)
    with caplog.at_level(logging.INFO, logger="gatorapp.worker"):
        thread.start()
        time.sleep(1.5)
        failures = [r for r in caplog.records if "failed, retrying" in r.getMessage()]
        recovered = [r for r in caplog.records if "reachable again" in r.getMessage()]
        assert (len(failures), len(recovered)) == (1, 0)
        FlakyBackend.down = False
        job.delay()
        deadline = time.monotonic() + 10
        while not ran and time.monotonic() < deadline:
            time.sleep(0.02)
        worker.stop()
        thread.join(10)
    assert ran == [1]
    recovered = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert len(recovered) == 1


def test_a_burst_worker_fails_instead_of_waiting_for_a_dead_backend():
    FlakyBackend.down = True
    app = App("flaky://", backend_class=FlakyBackend)
    with pytest.raises(BackendError):
        Worker(app, burst=True).run_forever()


def test_a_broken_sqlite_file_is_one_line_exit_1(tmp_path, monkeypatch, capsys):
    (tmp_path / "notdb.db").write_text("this is not a database\n" * 100)
    monkeypatch.setenv("GATORAPP_TEST_URL", f"sqlite:///{tmp_path}/notdb.db")
    monkeypatch.syspath_prepend(str(APPS))
    sys.modules.pop("cli_app", None)
    try:
        assert cli.main(["status", "-A", "cli_app"]) == 1
        assert cli.main(["worker", "-A", "cli_app", "--burst"]) == 1
    finally:
        sys.modules.pop("cli_app", None)
    err = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("gatorapp: error: SQLite") for line in err), err
    assert "file is not a database" in err[0]
    app = App(f"sqlite:///{tmp_path}/notdb.db")

    @app.task
    def t(): ...

    with pytest.raises(BackendError):
        t.delay()


def test_a_missing_sqlite_folder_is_a_configuration_error(tmp_path):
    app = App(f"sqlite:///{tmp_path}/no/such/dir/q.db")
    with pytest.raises(ConfigurationError, match="does not exist"):
        Worker(app, burst=True).run_forever()


def test_a_shorter_task_lease_applies_as_the_task_starts(tmp_path):
    url = f"sqlite:///{tmp_path}/q.db"
    app = App(url, lease=30)
    started = threading.Event()

    @app.task(lease=0.6)
    def slow():
        started.set()
        time.sleep(0.8)

    slow.delay()
    worker = Worker(app, max_tasks=1)
    thread = threading.Thread(target=worker.run_forever)
    thread.start()
    assert started.wait(10)
    time.sleep(0.25)
    with sqlite3.connect(app.backend.path) as conn:
        (left,) = conn.execute(
            "SELECT lease_until - ? FROM gatorapp_tasks", (time.time(),)
        ).fetchone()
    thread.join(10)
    assert 0 < left <= 0.6  # not the app's 30 s: a crash now frees the task in 0.6 s


def test_sigterm_while_the_app_is_still_importing_exits_zero(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": str(APPS),
        "GATORAPP_TEST_URL": f"sqlite:///{tmp_path}/q.db",
        "GATORAPP_TEST_IMPORT_DELAY": "1.5",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gatorapp", "worker", "-A", "slow_import_app"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(1.0)  # the interpreter is up, the app module is still sleeping
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "stopped: 0 tasks done" in out


@pytest.mark.parametrize(
    "make",
    [
        lambda: App("memory://", default_queue=""),
        lambda: App("memory://").task(queue="")(lambda: None),
        lambda: App("sqlite:///q.db?bogus=1").backend,
    ],
)
def test_empty_queue_names_and_unknown_sqlite_options_are_refused(make):
    with pytest.raises(ConfigurationError):
        make()


def test_an_empty_queue_option_is_refused():
    app = App("memory://")

    @app.task
    def t(): ...

    with pytest.raises(ConfigurationError):
        t.options(queue="").delay()
    assert app.backend.len("default") == 0


def test_an_upper_case_sqlite_url_is_pinned_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = App("SQLITE:///up.db")
    assert app.url == f"sqlite:///{tmp_path}/up.db"


def test_a_missing_dependency_of_the_app_is_named(tmp_path, monkeypatch, capsys):
    (tmp_path / "myproj_dep.py").write_text("import myp_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cli.main(["status", "-A", "myproj_dep"]) == 2
    assert "myp_not_installed" in capsys.readouterr().err


def test_a_worker_refuses_a_queue_name_at_once(capsys):
    app = App("memory://")
    with pytest.raises(ConfigurationError):
        Worker(app, queues=["ok", ""])
    with pytest.raises(ConfigurationError):
        Worker(app, queues=["x" * 201])


class BuggyClient(MemoryBackend):
    """A custom backend whose every call raises a bug of its own, not a BackendError."""

    def reserve(self, *args, **kwargs):
        raise RuntimeError("client bug")

    def wait(self, queues, timeout):
        raise RuntimeError("client bug")


def test_a_custom_backend_that_always_raises_logs_its_traceback_once_then_backs_off(caplog):
    import threading
    import time

    app = App("buggy://", backend_class=BuggyClient)
    worker = Worker(app)
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    caplog.set_level("INFO", "gatorapp.worker")
    thread.start()
    time.sleep(1.5)  # several failed calls, with backoff between them
    worker.stop()
    thread.join(10)
    failures = [r for r in caplog.records if "retrying with backoff" in r.getMessage()]
    assert len(failures) == 1  # one outage, said once
    assert "RuntimeError: client bug" in failures[0].getMessage()
    assert failures[0].exc_info is not None  # with the client's traceback


def test_a_swapped_reservation_is_forgotten_through_either_side() -> None:
    # The runner holds a new reservation once it knows the task's own lease;
    # an error path that still has the old one must stop renewing the new one.
    from gatorapp.backends import Reservation
    from gatorapp.worker.held import Held

    held = Held()
    old = Reservation("q", "t", b"", "tok", 1, 30.0)
    held.add([old])
    new = held.swap(old, old._replace(lease=5.0))
    assert held.snapshot() == [new]
    assert held.mark_lost(old) and held.was_lost(new)  # (a heartbeat's older snapshot)
    held.forget([old])
    assert held.snapshot() == [] and not held.lost

    held.add([old])
    newer = held.swap(held.swap(old, old._replace(lease=5.0)), old._replace(lease=9.0))
    held.forget([newer])  # the settled path: the new one, and nothing left behind
    assert held.snapshot() == [] and not held.lost
    held.forget([old])
    assert held.snapshot() == []
