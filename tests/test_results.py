"""Results: the result part of the contract, run on every result store
(memory, SQLite, Redis), through the API a user writes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from worker_proc import APPS

from gatorapp import App, ConfigurationError, ResultTimeout, Retry, Task, TaskFailed, testing
from gatorapp.results import MAX_RECORD, read, success


@pytest.fixture
def app(store_url: str) -> Iterator[App]:
    a = App(store_url, results=True)
    yield a
    a.close()


def tasks(app: App):
    gate = threading.Event()

    @app.task
    def add(a, b):
        return a + b

    @app.task(retries=1, backoff=None)
    def boom():
        raise KeyError("missing")

    @app.task
    def unencodable():
        return object()

    @app.task
    def huge():
        return b"x" * (MAX_RECORD + 1)

    @app.task
    def wait_for_gate():
        gate.wait(10)
        return "opened"

    @app.task(retries=3)
    def later():
        raise Retry(delay=3600)

    return add, boom, unencodable, huge, wait_for_gate, later, gate


def test_success_is_kept_and_reading_deletes_nothing(app: App) -> None:
    add, *_ = tasks(app)
    h = add.delay(2, 3)
    assert h.status() == "queued" and not h.ready()
    app.drain()
    assert h.status() == "succeeded" and h.ready()
    assert h.get(timeout=5) == 5
    assert h.get(timeout=5) == 5  # again: reading never deletes
    rebuilt = app.result(h.id)
    assert rebuilt.get(timeout=1) == 5 and rebuilt.status() == "succeeded"


def test_get_waits_for_a_worker(app: App) -> None:
    add, *_ = tasks(app)
    with testing.worker(app):
        assert add.delay(20, 22).get(timeout=10) == 42
        handles = add.starmap([(i, i) for i in range(50)])
        assert [h.get(timeout=10) for h in handles] == [2 * i for i in range(50)]


def test_failure_names_the_remote_exception_and_keeps_its_traceback(app: App) -> None:
    _, boom, *_ = tasks(app)
    h = boom.delay()
    app.drain()
    assert h.status() == "retrying"
    deadline = time.monotonic() + 10
    while h.status() != "dead" and time.monotonic() < deadline:
        time.sleep(0.2)
        app.drain()
    with pytest.raises(TaskFailed) as info:
        h.get(timeout=1)
    err = info.value
    assert err.status == "dead" and err.reason == "retries_exhausted"
    assert "KeyError: 'missing'" in str(err)
    assert 'raise KeyError("missing")' in err.traceback
    assert isinstance(err, Exception)


def test_timeout_is_a_timeout_error(app: App) -> None:
    add, *_ = tasks(app)
    h = add.delay(1, 1)
    t0 = time.monotonic()
    with pytest.raises(ResultTimeout) as info:
        h.get(timeout=0.3)
    assert time.monotonic() - t0 >= 0.3
    assert isinstance(info.value, TimeoutError)
    assert h.status() == "queued"


def test_results_expire(store_url: str) -> None:
    app = App(store_url, results=True, result_ttl=1)

    @app.task
    def one():
        return 1

    @app.task(result_ttl=60)
    def kept():
        return 2

    h, k = one.delay(), kept.delay()
    app.drain()
    assert h.get(timeout=1) == 1
    time.sleep(1.3)
    assert h.status() == "unknown"  # expired: not "queued forever"
    with pytest.raises(ResultTimeout):
        h.get(timeout=0.1)
    assert k.get(timeout=1) == 2  # its own TTL
    app.close()


def test_a_return_value_that_cannot_be_stored_fails_the_result_not_the_worker(app: App) -> None:
    add, _, unencodable, huge, *_ = tasks(app)
    u, big, after = unencodable.delay(), huge.delay(), add.delay(1, 2)
    app.drain()
    with pytest.raises(TaskFailed, match=r"result_not_encodable.*object"):
        u.get(timeout=1)
    with pytest.raises(TaskFailed, match="result_too_large"):
        big.get(timeout=1)
    assert u.status() == "failed"
    assert after.get(timeout=1) == 3  # the worker went on
    assert app.backend.stats("default").dead == 0  # it ran: nothing to run again


def test_status_walks_through_every_state(app: App) -> None:
    add, _, _, _, wait_for_gate, later, gate = tasks(app)
    delayed = add.options(delay_by=3600).delay(1, 1)
    assert delayed.status() == "delayed"
    assert app.cancel(delayed.id) is not None
    assert delayed.status() == "cancelled" and delayed.ready()
    with pytest.raises(TaskFailed, match="cancelled"):
        delayed.get(timeout=1)
    h = wait_for_gate.delay()
    with testing.worker(app, concurrency=2):
        deadline = time.monotonic() + 10
        while h.status() != "running" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert h.status() == "running"
        gate.set()
        assert h.get(timeout=10) == "opened"
    r = later.delay()
    app.drain()
    assert r.status() == "retrying"
    assert app.result("no-such-id").status() == "unknown"


def test_store_result_false_per_task_and_per_call(app: App) -> None:
    add, *_ = tasks(app)

    @app.task(store_result=False)
    def fire_and_forget():
        return "gone"

    quiet = fire_and_forget.delay()
    per_call = add.options(store_result=False).delay(1, 2)
    kept = add.delay(1, 2)
    asked = fire_and_forget.options(result_ttl=60).delay()  # a TTL asks for a result
    app.drain()
    for h in (quiet, per_call):
        assert h.status() == "unknown"
        with pytest.raises(ConfigurationError, match="stores no result"):
            h.get(timeout=1)
    assert kept.get(timeout=1) == 3
    assert asked.get(timeout=1) == "gone"


def test_a_requeued_dead_letter_is_no_longer_dead(app: App) -> None:
    _, boom, *_ = tasks(app)
    h = boom.options(retries=0).delay()
    app.drain()
    assert h.status() == "dead"
    assert app.requeue_dead("default", h.id)
    assert h.status() == "queued"


def test_tasks_that_never_ran_still_end_their_result(store_url: str) -> None:
    # Dead letters that are not attempts (its workers kept dying; a payload
    # this worker cannot run) store a dead record too: get() says so, rather
    # than wait for a result that never comes.
    app = App(store_url, results=True, max_deliveries=1, lease=0.2)
    try:
        add, *_ = tasks(app)
        lost = add.delay(1, 2)
        assert app.backend.reserve(["default"], 1, 0.2, "dying")
        time.sleep(0.3)
        hooked = Task(add.name, [1, 2], on_error="os.system")
        app.backend.push("default", hooked.task_id, hooked.serialize())
        bad = add.delay(1, 2)
        app.backend.take("default", bad.id)
        app.backend.push("default", bad.id, b"\x00not msgpack")
        app.drain()
        with pytest.raises(TaskFailed, match="its workers died") as info:
            lost.get(timeout=5)
        assert (info.value.status, info.value.reason) == ("dead", "worker_lost")
        assert lost.status() == "dead"
        with pytest.raises(TaskFailed, match=r"unknown_hook.*os\.system"):
            app.result(hooked.task_id).get(timeout=5)
        # (nothing can be read from that payload: no record, as before)
        assert bad.status() == "unknown"
    finally:
        app.close()


def test_status_and_requeue_race_a_worker_that_finishes_meanwhile() -> None:
    from gatorapp.backends.memory import MemoryBackend

    class Racing(MemoryBackend):
        """A worker finishes the task just as the reader or the requeue acts."""

        def locate(self, queue, task_id):
            self.finish(queue, task_id)
            return super().locate(queue, task_id)

        def dead_requeue(self, queue, task_id, data=None):
            done = super().dead_requeue(queue, task_id, data)
            self.finish(queue, task_id)
            return done

        def finish(self, queue, task_id):
            if self.take(queue, task_id) is not None:
                self.put_results([(task_id, success(4, "t", 1), 60.0)])

    app = App("memory://", backend_class=Racing, results=True)
    try:
        add, boom, *_ = tasks(app)
        h = add.delay(2, 2)
        # gone from its queue between the status's two looks: it succeeded
        assert h.status() == "succeeded"
        dead = boom.options(retries=0).delay()
        app.drain()
        assert app.requeue_dead("default", dead.id)
        # its new result outlives the requeue that forgot the dead one
        assert dead.get(timeout=1) == 4
    finally:
        app.close()


def test_eager_fills_the_same_handle(store_url: str) -> None:
    app = App(store_url, results=True, eager=True)
    add, boom, *_ = tasks(app)
    h = add.delay(2, 3)
    assert h.get() == 5 and h.status() == "succeeded" and h.result == 5
    assert app.result(h.id).get(timeout=1) == 5
    with pytest.raises(KeyError):
        boom.options(task_id="eager-boom").delay()  # re-raised to the caller, as before
    with pytest.raises(TaskFailed, match="KeyError"):
        app.result("eager-boom").get(timeout=1)
    app.close()


def test_eager_without_results_still_returns_the_value() -> None:
    app = App("memory://", eager=True)

    @app.task
    def add(a, b):
        return a + b

    h = add.delay(2, 3)
    assert h.get() == 5 and h.status() == "succeeded"
    with pytest.raises(ConfigurationError, match="keeps no results"):
        app.result(h.id)


def test_a_separate_result_store(tmp_path) -> None:
    app = App("memory://", results=f"sqlite:///{tmp_path}/results.db")

    @app.task
    def add(a, b):
        return a + b

    h = add.delay(2, 3)
    app.drain()
    assert h.get(timeout=1) == 5
    assert app.result_store() is not app.backend
    app.close()


def test_configuration_errors(tmp_path) -> None:
    app = App("memory://")
    with pytest.raises(ConfigurationError, match="keeps no results"):

        @app.task(store_result=True)
        def nope():
            return 1

    with pytest.raises(ConfigurationError, match="keeps no results"):

        @app.task(result_ttl=60)
        def nope_either():
            return 1

    @app.task
    def plain():
        return 1

    with pytest.raises(ConfigurationError, match="keeps none"):
        plain.options(result_ttl=60).delay()
    with pytest.raises(ConfigurationError, match="result_ttl"):
        App("memory://", results=True, result_ttl=-1)
    with pytest.raises(ConfigurationError, match="results"):
        App("memory://", results="maybe")


def test_sqs_needs_a_result_store_of_its_own(sqs_url: str, tmp_path) -> None:
    with pytest.raises(ConfigurationError, match="cannot keep results"):
        App(sqs_url, results=True)
    app = App(sqs_url, results=f"sqlite:///{tmp_path}/results.db")

    @app.task(queue="results-sqs")
    def add(a, b):
        return a + b

    h = add.delay(2, 3)
    app.drain(["results-sqs"])
    assert h.get(timeout=5) == 5
    app.close()


@pytest.fixture
def results_app(tmp_path, monkeypatch) -> Iterator[Any]:
    """tests/apps/results_app.py on a SQLite file that worker processes share."""
    monkeypatch.setenv("GATORAPP_TEST_URL", f"sqlite:///{tmp_path}/q.db")
    monkeypatch.syspath_prepend(str(APPS))
    sys.modules.pop("results_app", None)
    import results_app

    yield results_app
    results_app.app.close()
    sys.modules.pop("results_app", None)


def test_get_across_processes(results_app) -> None:
    """A worker process writes; this process's get() polls the SQLite file."""
    env = {**os.environ, "PYTHONPATH": str(APPS)}
    h = results_app.add.delay(40, 2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gatorapp", "worker", "-A", "results_app", "--burst"], env=env
    )
    assert h.get(timeout=60) == 42
    assert proc.wait(60) == 0


def test_the_result_command(results_app) -> None:
    env = {**os.environ, "PYTHONPATH": str(APPS)}

    ok = results_app.add.delay(2, 3)
    bad = results_app.add.delay(2, "x")

    def result(*argv: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "gatorapp", "result", "-A", "results_app", *argv]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)

    queued = result(ok.id)
    assert queued.returncode == 0 and "status:    queued" in queued.stdout
    results_app.app.drain()
    done = result(ok.id)
    assert done.returncode == 0
    assert "status:    succeeded" in done.stdout and "value:     5" in done.stdout
    failed = result(bad.id)
    assert failed.returncode == 1
    assert "status:    dead" in failed.stdout
    assert "TypeError: unsupported operand" in failed.stdout
    unknown = result("no-such-id", "--json")
    assert unknown.returncode == 1 and '"status": "unknown"' in unknown.stdout
    import json

    done_json = json.loads(result(ok.id, "--wait", "1", "--json").stdout)
    assert (done_json["status"], done_json["value"]) == ("succeeded", 5)
    assert "attempts" not in done_json  # (not kept for a success, so not made up)
    bad_json = json.loads(result(bad.id, "--json").stdout)
    assert (bad_json["status"], bad_json["attempts"]) == ("dead", 1)


def test_a_record_that_is_not_ours_reads_as_unknown() -> None:
    for record in (b"\xc1", b"\xc1\xcb\x00", b"\x93\x01\x02\x03", b"\xa3abc"):
        assert read(record).status == "unknown"
