"""Trace propagation (gatorapp.tracing): a producer process and a worker
process, each with the OpenTelemetry SDK; the spans they write show one trace
from the enqueuer's span to the task's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from worker_proc import env_for

from gatorapp import App, tracing
from gatorapp.envelope import unpack

pytestmark = pytest.mark.slow

PRODUCE = """
import json
from opentelemetry import trace
import traced_app as t

tracer = trace.get_tracer("web")
with tracer.start_as_current_span("GET /orders") as span:
    t.ok.delay(1)
    t.aok.delay(2)
    t.boom.delay()
    ctx = span.get_span_context()
t.ok.delay(3)  # outside any span
print(json.dumps({"trace": f"{ctx.trace_id:032x}", "span": f"{ctx.span_id:016x}"}))
"""


def run(env: dict[str, str], *argv: str) -> str:
    done = subprocess.run(
        [sys.executable, *argv], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_task_runs_in_a_consumer_span_of_its_enqueuers_trace(tmp_path: Path) -> None:
    env = env_for(f"sqlite:///{tmp_path}/q.db", tmp_path / "ledger.txt")
    env["GATORAPP_TEST_SPANS"] = str(tmp_path / "spans.jsonl")
    producer = json.loads(run(env, "-c", PRODUCE).strip().splitlines()[-1])
    run(env, "-m", "gatorapp", "worker", "-A", "traced_app", "--burst")
    spans = [json.loads(line) for line in (tmp_path / "spans.jsonl").read_text().splitlines()]
    consumers = {s["attributes"]["gatorapp.task.name"]: s for s in spans if s["kind"] == "CONSUMER"}
    by_arg = [s for s in spans if s["kind"] == "CONSUMER" and s["name"] == "traced_app.ok process"]
    assert len(by_arg) == 2
    traced = [s for s in by_arg if s["trace"] == producer["trace"]]
    untraced = [s for s in by_arg if s["trace"] != producer["trace"]]
    assert len(traced) == 1 and len(untraced) == 1
    (ok,) = traced
    assert ok["parent"] == producer["span"] and ok["links"] == [producer["span"]]
    assert ok["status"] == "UNSET"
    attrs = ok["attributes"]
    assert attrs["messaging.system"] == "gatorapp"
    assert attrs["messaging.destination.name"] == "default"
    assert attrs["messaging.operation.type"] == "process"
    assert attrs["gatorapp.task.attempt"] == 1 and len(attrs["messaging.message.id"]) == 32
    # The task's own span is a child of the consumer span, in the same trace.
    (inside,) = [s for s in spans if s["name"] == "inside" and s["trace"] == producer["trace"]]
    assert inside["parent"] == ok["span"]
    # Enqueued outside a span: a trace of its own, no parent, no link.
    assert untraced[0]["parent"] is None and untraced[0]["links"] == []
    # An async task, and a failure.
    aok = consumers["traced_app.aok"]
    assert aok["trace"] == producer["trace"] and aok["parent"] == producer["span"]
    boom = consumers["traced_app.boom"]
    assert boom["trace"] == producer["trace"]
    assert boom["status"] == "ERROR" and "exception" in boom["events"]
    assert boom["attributes"]["gatorapp.outcome"] == "dead"
    assert {s["pid"] for s in spans if s["kind"] == "CONSUMER"} != {
        s["pid"] for s in spans if s["name"] == "GET /orders"
    }


def test_nothing_is_recorded_outside_a_span_or_without_an_sdk(tmp_path: Path) -> None:
    # This process has the OpenTelemetry API but no tracer provider: no span
    # is ever valid, so nothing is added and no worker span is started.
    assert tracing.carrier() is None and tracing.tracer() is None
    app = App(f"sqlite:///{tmp_path}/q.db")

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    add.delay(1, 2)
    (r,) = app.backend.reserve(["default"], 1, 30, "w")
    assert "opts" not in unpack(r.data)


def test_gatorapp_runs_without_opentelemetry(tmp_path: Path) -> None:
    code = """
import sys
sys.modules["opentelemetry"] = None  # as if it were not installed
from gatorapp import App, tracing
from gatorapp.envelope import unpack
app = App("memory://")

@app.task
def add(a, b):
    return a + b

add.delay(1, 2)
(r,) = app.backend.reserve(["default"], 1, 30, "w")
app.backend.release([r])
assert "opts" not in unpack(r.data)
assert app.drain() == 1
assert tracing.carrier() is None and tracing.tracer() is None
print("ok")
"""
    assert run(dict(os.environ), "-c", code).strip() == "ok"
