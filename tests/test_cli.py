"""The ``gatorapp`` command line, in-process and as a real subprocess."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from worker_proc import APPS

from gatorapp import cli


@pytest.fixture
def app(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/queue.db"
    monkeypatch.setenv("GATORAPP_TEST_URL", url)
    monkeypatch.syspath_prepend(str(APPS))
    sys.modules.pop("cli_app", None)
    import cli_app

    yield cli_app
    cli_app.app.close()
    sys.modules.pop("cli_app", None)


def run(*argv: str) -> int:
    return cli.main(list(argv))


def test_worker_burst_runs_every_queue_and_exits_zero(app, capsys):
    app.send.delay(1)
    app.fail.delay()
    assert run("worker", "-A", "cli_app", "--burst") == 0
    stats = {q: app.app.backend.stats(q) for q in ("default", "emails")}
    assert stats["emails"].ready == 0
    assert stats["default"].dead == 1


@pytest.mark.parametrize("path", ["cli_app", "cli_app:app", "cli_app.app"])
def test_app_path_forms(app, path, capsys):
    app.send.delay(1)
    assert run("status", "-A", path) == 0
    out = capsys.readouterr().out
    assert "emails" in out and "ready" in out


def test_app_before_subcommand_and_from_environment(app, capsys, monkeypatch):
    app.send.delay(1)
    assert run("-A", "cli_app", "status") == 0
    monkeypatch.setenv("GATORAPP_APP", "cli_app")
    assert run("status") == 0


def test_status_counts(app, capsys):
    app.send.delay(1)
    app.send.options(delay_by=3600).delay(2)
    run("worker", "-A", "cli_app", "-Q", "default", "--burst")
    app.fail.delay()
    run("worker", "-A", "cli_app", "-Q", "default", "--burst")
    capsys.readouterr()
    assert run("status", "-A", "cli_app") == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    # ready, delayed, running, dead, and how long the oldest ready task waited
    assert rows["emails"][:4] == ["1", "1", "0", "0"] and rows["emails"][4].endswith("s")
    assert rows["default"] == ["0", "0", "0", "1", "-"]


def test_dead_ls_show_requeue_purge(app, capsys):
    h = app.fail.delay()
    app.fail.delay()
    run("worker", "-A", "cli_app", "--burst")
    capsys.readouterr()
    assert run("dead", "-A", "cli_app", "ls") == 0
    out = capsys.readouterr().out
    assert h.id in out  # full task ids
    assert "retries_exhausted" in out and "cli_app.fail" in out
    assert run("dead", "-A", "cli_app", "show", h.id) == 0
    out = capsys.readouterr().out
    assert "ValueError: always fails" in out and "Traceback" in out
    assert run("dead", "-A", "cli_app", "requeue", h.id) == 0
    assert app.app.backend.stats("default").ready == 1
    assert app.app.backend.stats("default").dead == 1
    assert run("dead", "-A", "cli_app", "requeue", "--all") == 0
    assert app.app.backend.stats("default").ready == 2
    run("worker", "-A", "cli_app", "--burst")
    assert run("dead", "-A", "cli_app", "-Q", "default", "purge", "--yes") == 0
    assert "purged 2" in capsys.readouterr().out
    assert app.app.backend.stats("default").dead == 0


def test_dead_listings_escape_control_characters(app, capsys):
    # A name with a line break and a tab would forge a listing line; an escape
    # sequence in an error would reach the operator's terminal.
    backend = app.app.backend
    backend.dead_add(
        "default",
        "id\nforged\tline",
        b"not an envelope",
        "decode_error",
        "x\x1b]0;pwned\x07\x1b[2J",
    )
    assert run("dead", "-A", "cli_app", "ls") == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    (line,) = out.splitlines()
    assert "id\\nforged\\tline" in line and "\\x1b]0;pwned" in line
    assert run("dead", "-A", "cli_app", "show", "id\nforged\tline") == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[2J" in out


def test_a_hand_written_dead_letter_row_is_listed_without_a_traceback(app, capsys, tmp_path):
    import sqlite3

    app.app.backend.dead_purge("default")  # (the table exists)
    conn = sqlite3.connect(tmp_path / "queue.db")
    with conn:
        conn.execute(
            "INSERT INTO gatorapp_dead (queue, task_id, data, reason, error, failed_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            ("default", "by-hand", "text, not bytes", "decode_error", "oops", "yesterday"),
        )
    conn.close()
    assert run("dead", "-A", "cli_app", "ls") == 0
    out = capsys.readouterr().out
    assert "by-hand" in out and "Traceback" not in out
    assert run("dead", "-A", "cli_app", "requeue", "--all") == 0
    assert app.app.backend.stats("default").ready == 1


def test_dead_unknown_id(app, capsys):
    assert run("dead", "-A", "cli_app", "show", "nope") == 1
    assert run("dead", "-A", "cli_app", "requeue", "nope") == 1


def test_worker_class_and_max_tasks(app, caplog):
    for i in range(5):
        app.send.delay(i)
    assert (
        run(
            "worker", "-A", "cli_app", "--worker-class", "cli_app:LoggingWorker", "--max-tasks", "3"
        )
        == 0
    )
    assert "LoggingWorker done: 3 tasks" in caplog.text
    assert app.app.backend.stats("emails").ready == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["worker", "-A", "cli_app", "-c", "0"], "concurrency"),
        (["worker", "-A", "cli_app", "-c", "many"], "whole number"),
        (["worker", "-A", "cli_app", "--max-tasks", "-1"], "max-tasks"),
        (["worker", "-A", "cli_app", "--bogus"], "unrecognized arguments"),
        (["worker", "-A", "cli_app", "-l", "LOUD"], "log level"),
        (["worker", "-A", "cli_app", "-Q", ","], "queue names"),
        (["worker"], "-A/--app is required"),
        (["worker", "-A", "no_such_module_xyz"], "no such module"),
        (["worker", "-A", "cli_app:nothing"], "has no attribute"),
        (["worker", "-A", "cli_app:not_a_worker"], "not a gatorapp.App"),
        (["worker", "-A", "cli_app", "--worker-class", "cli_app:not_a_worker"], "not a subclass"),
        (["worker", "-A", "cli_app", "--worker-class", "cli_app"], "pkg.mod:attr"),
        (["dead", "-A", "cli_app", "show"], "needs a task id"),
        (["dead", "-A", "cli_app", "explode"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(app, capsys, argv, message):
    assert run(*argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("gatorapp: error:") and message in err


def test_subprocess_exit_codes_and_no_traceback(tmp_path):
    env_path = {"PYTHONPATH": str(APPS), "GATORAPP_TEST_URL": f"sqlite:///{tmp_path}/q.db"}
    import os

    env = {**os.environ, **env_path}
    bad = subprocess.run(
        [sys.executable, "-m", "gatorapp", "worker", "-A", "cli_app", "-c", "x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1
    ok = subprocess.run(
        ["gatorapp", "worker", "-A", "cli_app", "--burst"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert "stopped: 0 tasks done" in ok.stderr
    helped = subprocess.run(["gatorapp", "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "worker" in helped.stdout


def test_a_thread_a_task_leaked_does_not_keep_the_worker_alive_after_sigterm(tmp_path):
    import os
    import signal
    import time

    env = {
        **os.environ,
        "PYTHONPATH": str(APPS),
        "GATORAPP_TEST_URL": f"sqlite:///{tmp_path}/q.db",
        "PYTHONUNBUFFERED": "1",
    }
    marker = tmp_path / "ran"
    subprocess.run(
        [sys.executable, "-c", f"import cli_app; cli_app.leak_thread.delay({str(marker)!r})"],
        env=env,
        check=True,
        timeout=60,
    )
    worker = subprocess.Popen(
        ["gatorapp", "worker", "-A", "cli_app"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists()
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    finally:
        worker.kill()
    assert worker.returncode == 0, err
    assert "still running" in err and "leaked-by-task" in err


def test_dead_show_prints_every_letter_of_an_id_newest_first(app, capsys):
    backend = app.app.backend
    backend.dead_add("default", "dup", b"junk", "decode_error", "the first time")
    time.sleep(0.01)
    backend.dead_add("default", "dup", b"junk", "decode_error", "the second time")
    capsys.readouterr()
    assert run("dead", "-A", "cli_app", "show", "dup") == 0
    out = capsys.readouterr().out
    assert "-- letter 1 of 2" in out and "-- letter 2 of 2" in out
    assert out.index("the second time") < out.index("the first time")
    assert run("dead", "-A", "cli_app", "ls") == 0
    assert capsys.readouterr().out.count("\tdup\t") == 2


def test_gatorapp_alone_prints_usage_and_the_commands(capsys):
    assert run() == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: gatorapp")
    assert all(f"    {c}" in err for c in ("worker", "status", "dead"))
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == "gatorapp 0.1.0"


def test_status_and_dead_name_the_backend_and_never_create_a_database(
    app, capsys, tmp_path, caplog
):
    db = tmp_path / "queue.db"
    assert not db.exists()  # nothing enqueued yet
    assert run("status", "-A", "cli_app") == 1
    err = capsys.readouterr().err
    assert f"no database at {db}" in err and f"sqlite:///{db}" in err
    assert run("dead", "-A", "cli_app", "ls") == 1
    assert not db.exists()  # looking did not make one
    app.send.delay(1)
    assert run("status", "-A", "cli_app") == 0
    assert f"backend: sqlite:///{db}" in capsys.readouterr().err
    caplog.set_level("INFO", "gatorapp.worker")
    assert run("worker", "-A", "cli_app", "--burst") == 0
    assert any(f"starting: backend sqlite:///{db}" in r.getMessage() for r in caplog.records)


def test_dead_purge_wants_yes_and_ls_cuts_long_errors(app, capsys, caplog):
    backend = app.app.backend
    long_error = "ValueError: " + "word " * 60
    backend.dead_add("default", "long", b"junk", "decode_error", long_error)
    capsys.readouterr()
    assert run("dead", "-A", "cli_app", "purge") == 2  # not a terminal: no one to ask
    assert "add --yes" in capsys.readouterr().err
    assert backend.stats("default").dead == 1
    assert run("dead", "-A", "cli_app", "ls") == 0
    (line,) = capsys.readouterr().out.splitlines()  # piped: no header row
    error = line.split("\t")[-1]
    assert error.endswith("word…") and len(error) <= 120
    assert run("dead", "-A", "cli_app", "purge", "--yes") == 0
    assert backend.stats("default").dead == 0
    app.send.delay(1)
    app.fail.delay()
    caplog.set_level("INFO", "gatorapp.worker")
    assert run("worker", "-A", "cli_app", "--burst") == 0
    assert any(
        "stopped: 2 tasks done (1 succeeded, 1 failed)" in r.getMessage() for r in caplog.records
    )


def test_dead_purge_of_one_id_deletes_its_letters_without_asking(app, capsys):
    backend = app.app.backend
    backend.dead_add("default", "gone", b"junk", "decode_error", "bad")
    backend.dead_add("default", "gone", b"junk2", "decode_error", "bad again")
    backend.dead_add("default", "kept", b"junk", "decode_error", "bad")
    capsys.readouterr()
    assert run("dead", "-A", "cli_app", "purge", "gone") == 0  # not a terminal, no --yes
    assert capsys.readouterr().out == "purged 2 dead letter(s) of task gone\n"
    assert [d.task_id for d in backend.dead_list("default")] == ["kept"]
    assert run("dead", "-A", "cli_app", "purge", "gone") == 1
    assert "no dead letter 'gone' in default, emails" in capsys.readouterr().err


def test_an_unknown_queue_named_with_q_gets_a_warning_listing_the_known_ones(app, capsys):
    app.send.delay(1)
    capsys.readouterr()
    assert run("status", "-A", "cli_app", "-Q", "emials") == 0
    err = capsys.readouterr().err
    assert "queue 'emials' is not one of this app's queues" in err
    assert "known queues: default, emails" in err
    assert "not consumed by a worker of this app by default" in err
    assert run("worker", "-A", "cli_app", "-Q", "emials", "--burst") == 0
    assert "queue 'emials' is not one of" in capsys.readouterr().err
    assert run("status", "-A", "cli_app", "-Q", "emails") == 0
    assert "warning" not in capsys.readouterr().err


def test_an_import_error_in_the_users_app_names_their_file_and_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "deep_app.py").write_text("import os\nimport requests_not_here_xyz\n")
    (tmp_path / "outer_app.py").write_text("import deep_app\n")
    (tmp_path / "syntax_app.py").write_text("x = (\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    deep = f"(at {tmp_path}/deep_app.py:2)"
    for name, says in [
        ("deep_app", f"No module named 'requests_not_here_xyz' {deep}"),
        ("outer_app", deep),
        ("syntax_app", f"SyntaxError: '(' was never closed (syntax_app.py, line 1) (at {tmp_path}"),
    ]:
        assert run("status", "-A", name) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, err
    debug = subprocess.run(
        [sys.executable, "-m", "gatorapp", "status", "-A", "deep_app", "-l", "DEBUG"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert debug.returncode == 2 and "Traceback" in debug.stderr  # the whole of it
