"""Prometheus metrics (gatorapp.metrics): real worker processes serving
``/metrics``, scraped with a real HTTP client; the counts are checked
against the ledger of what ran."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import free_port
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from worker_proc import env_for, output, start_worker, stop, wait_for

from gatorapp import App
from gatorapp.metrics import GAUGE_CACHE, CountsWriter, Folder, instrument
from gatorapp.tally import ENQUEUED, Tally, merge

pytestmark = pytest.mark.slow

N_OK, N_ONCE, N_NEVER, N_FAN = 300, 60, 30, 10
FAN_OUT = 4  # (tests/apps/metrics_app.py: each fan task enqueues four ok tasks)


@pytest.fixture
def setup(shared_url: str, tmp_path: Path):
    url = shared_url
    app = App(url)
    registered = {}
    # Same names and retries as tests/apps/metrics_app.py; this process only enqueues.
    for name, retries in (("ok", 0), ("once", 1), ("never", 1), ("fan", 0)):

        def fn(key): ...

        registered[name] = app.task(fn, name=f"metrics_app.{name}", retries=retries)
    ledger = tmp_path / "ledger.txt"
    return app, registered, env_for(url, ledger), ledger


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, labels); the text must parse."""
    reply = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return parse(reply.text)


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples, name: str, **match: str) -> float:
    return sum(
        v
        for (n, labels), v in samples.items()
        if n == name and all(dict(labels).get(k) == want for k, want in match.items())
    )


def enqueue_all(tasks) -> None:
    tasks["ok"].map([f"ok-{i}" for i in range(N_OK)])
    tasks["once"].map([f"once-{i}" for i in range(N_ONCE)])
    tasks["never"].map([f"never-{i}" for i in range(N_NEVER)])
    tasks["fan"].map([f"fan-{i}" for i in range(N_FAN)])


def attempts(ledger: Path) -> int:
    return sum(1 for line in ledger.read_text().splitlines() if line.startswith("attempt"))


@pytest.mark.parametrize("processes", [1, 2])
def test_counts_add_up_to_the_ledger(setup, processes: int) -> None:
    app, tasks, env, ledger = setup
    # This process counts what it enqueues, the worker what its tasks enqueue.
    producer = CollectorRegistry()
    instrument(app, producer)
    enqueue_all(tasks)
    enqueued_here = total(
        parse(generate_latest(producer).decode()), "gatorapp_tasks_enqueued_total"
    )
    assert enqueued_here == N_OK + N_ONCE + N_NEVER + N_FAN
    everything = enqueued_here + N_FAN * FAN_OUT
    port = free_port()
    args = ["-p", str(processes), "-c", "2", "--metrics-port", str(port)]
    proc = start_worker(env, *args, app="metrics_app")
    try:
        seen: list[float] = []

        def drained() -> bool:
            try:
                samples = scrape(port)
            except httpx.HTTPError:
                return False
            except AssertionError as exc:  # (the worker's log says why it failed)
                proc.terminate()
                raise AssertionError(output(proc)) from exc
            done = total(samples, "gatorapp_tasks_succeeded_total") + total(
                samples, "gatorapp_tasks_dead_total"
            )
            seen.append(done)
            return done == everything

        assert wait_for(drained, 60, interval=0.2), (seen[-3:], output(proc))
        assert seen == sorted(seen)  # counters only grow, scrape after scrape
        assert any(0 < done < everything for done in seen)  # (scraped during the drain)
        time.sleep(GAUGE_CACHE + 0.1)  # (the queue gauges of a second ago are reused)
        samples = scrape(port)
    finally:
        code, out = stop(proc)
    assert code == 0, out
    started = total(samples, "gatorapp_tasks_started_total")
    succeeded = total(samples, "gatorapp_tasks_succeeded_total")
    failed = total(samples, "gatorapp_tasks_failed_total")
    retried = total(samples, "gatorapp_tasks_retried_total")
    dead = total(samples, "gatorapp_tasks_dead_total")
    enqueued_there = total(samples, "gatorapp_tasks_enqueued_total")
    # The ledger: every attempt that ran, as the tasks wrote it.
    ran = N_OK + 2 * N_ONCE + 2 * N_NEVER + N_FAN * (1 + FAN_OUT)
    assert started == attempts(ledger) == ran
    assert started == succeeded + failed
    assert failed == retried + dead == N_ONCE + 2 * N_NEVER
    # Each task enqueued, here or by a task, ended once.
    assert enqueued_there == N_FAN * FAN_OUT
    assert total(samples, "gatorapp_tasks_enqueued_total", task="metrics_app.ok") == enqueued_there
    assert succeeded + dead == enqueued_here + enqueued_there
    assert total(samples, "gatorapp_tasks_retried_total", task="metrics_app.once") == N_ONCE
    assert total(samples, "gatorapp_tasks_retried_total", task="metrics_app.never") == N_NEVER
    assert (
        total(samples, "gatorapp_tasks_dead_total", reason="retries_exhausted", queue="default")
        == N_NEVER
    )
    assert total(samples, "gatorapp_task_duration_seconds_count") == started
    assert total(samples, "gatorapp_task_duration_seconds_bucket", le="+Inf") == started
    # The queue gauges, read from the backend when scraped.
    assert total(samples, "gatorapp_backend_up") == 1
    assert total(samples, "gatorapp_queue_dead", queue="default") == N_NEVER
    assert total(samples, "gatorapp_queue_ready", queue="default") == 0
    assert total(samples, "gatorapp_workers") == processes


def test_a_process_replaced_for_a_task_past_its_timeout_keeps_its_counts(
    tmp_path: Path,
) -> None:
    # The process ends at once (os._exit): its last counts, the late attempt's
    # failure among them, are written first, and the supervisor keeps them.
    url = f"sqlite:///{tmp_path}/q.db"
    env = env_for(url, tmp_path / "ledger.txt")
    app = App(url)
    ok = app.task(lambda key: None, name="metrics_app.ok")
    late = app.task(lambda key: None, name="metrics_app.late")
    late.delay("late")
    ok.map([f"ok-{i}" for i in range(20)])
    port = free_port()
    proc = start_worker(env, "-p", "2", "--metrics-port", str(port), app="metrics_app")
    try:

        def ended() -> bool:
            try:
                samples = scrape(port)
            except httpx.HTTPError:
                return False
            return (
                total(samples, "gatorapp_tasks_dead_total") == 1
                and total(samples, "gatorapp_tasks_succeeded_total") == 20
                and total(samples, "gatorapp_workers") == 2  # (the new one is up)
            )

        assert wait_for(ended, 30, interval=0.2), output(proc)
        samples = scrape(port)
    finally:
        code, out = stop(proc)
    assert code == 0, out
    assert "past its timeout" in out
    assert total(samples, "gatorapp_tasks_started_total") == 21
    assert total(samples, "gatorapp_tasks_failed_total", task="metrics_app.late") == 1
    assert total(samples, "gatorapp_tasks_dead_total", task="metrics_app.late") == 1


def test_gatorapp_metrics_serves_queue_gauges_with_no_worker(setup) -> None:
    _, tasks, env, _ = setup
    tasks["ok"].delay("first")
    time.sleep(1.5)  # (how late the queue runs: since its oldest ready task became due)
    tasks["ok"].delay("now")
    tasks["ok"].options(delay_by=3600).delay("later")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gatorapp", "metrics", "-A", "metrics_app", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_for(lambda: _up(port), 30)
        samples = scrape(port)
    finally:
        code, out = stop(proc)
    assert code == 0, out
    assert total(samples, "gatorapp_queue_ready", queue="default") == 2
    assert total(samples, "gatorapp_queue_delayed", queue="default") == 1
    age = total(samples, "gatorapp_queue_oldest_ready_age_seconds", queue="default")
    assert 1.5 <= age < 60
    assert total(samples, "gatorapp_workers") == 0
    # No task runs there: no task counts, only gauges.
    assert not any(name.startswith("gatorapp_tasks_") for name, _ in samples)


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_producer_counts_its_enqueues_in_its_own_registry() -> None:
    app = App("memory://")

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    registry = CollectorRegistry()
    instrument(app, registry)
    add.delay(1, 2)
    add.map([(i, i) for i in range(9)])
    text = generate_latest(registry).decode()
    name = f'gatorapp_tasks_enqueued_total{{queue="default",task="{add.name}"}} 10.0'
    assert name in text


def test_metrics_without_prometheus_client_say_what_to_install(tmp_path: Path) -> None:
    env = env_for(f"sqlite:///{tmp_path}/q.db", tmp_path / "ledger.txt")
    code = (
        "import sys; sys.modules['prometheus_client'] = None; "
        "from gatorapp.cli import main; "
        "sys.exit(main(['worker', '-A', 'metrics_app', '--burst', '--metrics-port', '1']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert 'pip install "gatorapp[metrics]"' in done.stderr


def test_async_tasks_and_threads_are_counted_alike() -> None:
    import asyncio

    from gatorapp import Worker
    from gatorapp.metrics import families

    app = App("memory://")

    @app.task
    async def wait(i: int) -> int:
        await asyncio.sleep(0)
        return i

    @app.task(retries=0)
    def fail(i: int) -> None:
        raise ValueError(i)

    tally = Tally()
    wait.map(range(40))
    fail.map(range(10))
    Worker(app, burst=True, concurrency=4, tally=tally).run_forever()
    got = {f.name: f for f in families(tally.snapshot())}

    def value(name: str, task: str) -> float:
        return sum(s.value for s in got[name].samples if s.labels.get("task") == task)

    assert value("gatorapp_tasks_started", wait.name) == 40
    assert value("gatorapp_tasks_succeeded", wait.name) == 40
    assert value("gatorapp_tasks_failed", fail.name) == 10
    assert value("gatorapp_tasks_dead", fail.name) == 10


def test_queue_gauges_on_sqs_leave_out_what_it_cannot_tell(sqs_url) -> None:
    from gatorapp.metrics import Gauges

    app = App(sqs_url)

    @app.task
    def noop() -> None: ...

    noop.delay()
    got = {f.name: f for f in Gauges(app).families()}
    assert [s.value for s in got["gatorapp_backend_up"].samples] == [1]
    assert got["gatorapp_queue_ready"].samples  # (approximate, as SQS counts)
    assert not got["gatorapp_queue_oldest_ready_age_seconds"].samples
    assert "gatorapp_workers" not in got  # (SQS keeps no list, and no result store here)


def folder_total(folder: Folder) -> int:
    rows = merge(folder.snapshots())["rows"]
    return sum(row[2 + ENQUEUED] for row in rows)


def test_a_process_that_gets_an_old_pid_again_adds_to_its_counts(tmp_path: Path) -> None:
    # Two processes of one supervisor, the second with the first's pid (here
    # both are this process): the first one's counts stay counted.
    for n in (3, 4):
        tally = Tally()
        tally.enqueued("default", "t", n)
        CountsWriter(tally, str(tmp_path)).write()
    assert folder_total(Folder(str(tmp_path))) == 7


def test_the_counts_of_ended_processes_are_summed_once_and_their_files_go(
    tmp_path: Path,
) -> None:
    folder = Folder(str(tmp_path))
    live = Tally()
    live_writer = CountsWriter(live, str(tmp_path))
    live_writer.write()
    # Five processes that count, write and end, one after the other (as a
    # supervisor replaces them), the last one without its final write.
    code = (
        "import os, sys; from gatorapp.metrics import CountsWriter; "
        "from gatorapp.tally import Tally; t = Tally(); w = CountsWriter(t, sys.argv[1]); "
        "w.start(); t.enqueued('default', 't', int(sys.argv[2])); w.write(); "
        "t.enqueued('default', 't', 100) if sys.argv[2] == '5' else w.stop()"
    )
    for n in range(1, 6):
        subprocess.run([sys.executable, "-c", code, str(tmp_path), str(n)], check=True)
        assert folder_total(folder) == n * (n + 1) // 2
    live.enqueued("default", "t", 1000)
    live_writer.write()
    assert folder_total(folder) == 15 + 1000
    assert folder_total(folder) == 15 + 1000  # (a scrape after a scrape: the same)
    # Left: the live process's counts; the ended ones' are in the sum.
    assert [p.name for p in tmp_path.iterdir()] == [live_writer.path.name]
