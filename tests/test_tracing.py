"""Trace propagation (gatorapp.tracing): a producer process and a worker
process, each with the OpenTelemetry SDK; the spans they write show one trace
from the enqueuer's span to the task's.

A tracer provider can be set only once per process, and the rest of the suite
runs without one, so every test with the SDK runs in a process of its own.
This process has the OpenTelemetry API and no provider.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from worker_proc import env_for

from gatorapp import App, tracing
from gatorapp.envelope import unpack

pytestmark = pytest.mark.slow

PRODUCE = """
import asyncio
import json
from opentelemetry import trace
import traced_app as t

tracer = trace.get_tracer("web")
ids = {}
with tracer.start_as_current_span("GET /orders") as span:
    ids["ok"] = t.ok.delay(1).id
    ids["aok"] = t.aok.delay(2).id
    ids["boom"] = t.boom.delay().id
    ids["options"] = t.ok.options(retries=1).delay(4).id
    ids["map"] = [h.id for h in t.ok.map([5, 6])]
    ids["starmap"] = [h.id for h in t.ok.starmap([(7,)])]

    async def main():
        ids["adelay"] = (await t.aok.adelay(8)).id
        ids["amap"] = [h.id for h in await t.aok.amap([9, 10])]

    asyncio.run(main())
    ctx = span.get_span_context()
ids["untraced"] = t.ok.delay(3).id  # outside any span
print(json.dumps({"trace": f"{ctx.trace_id:032x}", "span": f"{ctx.span_id:016x}", "ids": ids}))
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
    by_id = {s["span"]: s for s in spans}
    consumers = {
        s["attributes"]["messaging.message.id"]: s for s in spans if s["kind"] == "CONSUMER"
    }
    ids = producer.pop("ids")
    untraced = consumers[ids.pop("untraced")]
    traced = {label: [v] if isinstance(v, str) else v for label, v in ids.items()}
    assert sum(map(len, traced.values())) == 10

    # One PRODUCER span per enqueue made in the request's span, its child; an
    # enqueue outside a span makes none.
    publishes = [s for s in spans if s["kind"] == "PRODUCER"]
    assert len(publishes) == len(traced)
    for publish in publishes:
        assert publish["trace"] == producer["trace"] and publish["parent"] == producer["span"]
        assert publish["attributes"]["messaging.operation.type"] == "send"
        assert publish["attributes"]["messaging.destination.name"] == "default"
    # Each task ran in a CONSUMER span of the same trace, child of (and linked
    # to) the PRODUCER span of its enqueue, whatever the enqueue's form.
    for label, task_ids in traced.items():
        for task_id in task_ids:
            consumer = consumers[task_id]
            publish = by_id[consumer["parent"]]
            assert consumer["trace"] == producer["trace"], label
            assert consumer["links"] == [publish["span"]], label
            assert publish["name"] == consumer["name"].replace(" process", " publish"), label
            if len(task_ids) == 1:
                assert publish["attributes"]["messaging.message.id"] == task_id, label
            else:
                assert publish["attributes"]["messaging.batch.message_count"] == len(task_ids)

    (ok_id,) = traced["ok"]
    ok = consumers[ok_id]
    assert ok["name"] == "traced_app.ok process" and ok["status"] == "UNSET"
    attrs = ok["attributes"]
    assert attrs["messaging.system"] == "gatorapp"
    assert attrs["messaging.destination.name"] == "default"
    assert attrs["messaging.operation.type"] == "process"
    assert attrs["gatorapp.task.name"] == "traced_app.ok"
    assert attrs["gatorapp.task.attempt"] == 1 and len(attrs["messaging.message.id"]) == 32
    # The task's own span is a child of the consumer span, in the same trace.
    (inside,) = [s for s in spans if s["name"] == "inside" and s["parent"] == ok["span"]]
    assert inside["trace"] == producer["trace"]
    # Enqueued outside a span: a trace of its own, no parent, no link.
    assert untraced["trace"] != producer["trace"]
    assert untraced["parent"] is None and untraced["links"] == []
    # An async task, and a failure.
    (aok_id,) = traced["aok"]
    assert consumers[aok_id]["name"] == "traced_app.aok process"
    (boom_id,) = traced["boom"]
    boom = consumers[boom_id]
    assert boom["status"] == "ERROR" and "exception" in boom["events"]
    assert boom["attributes"]["gatorapp.outcome"] == "dead"
    assert {s["pid"] for s in spans if s["kind"] == "CONSUMER"} != {
        s["pid"] for s in spans if s["name"] == "GET /orders"
    }


EAGER = """
import asyncio
import json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

from gatorapp import App, Retry

app = App("memory://", eager=True)
tracer = trace.get_tracer("test")
tries = []

@app.task
def ok(x):
    with tracer.start_as_current_span(f"inside {x}"):
        return x

@app.task
async def aok(x):
    with tracer.start_as_current_span(f"inside {x}"):
        return x

@app.task(retries=0)
def boom():
    raise ValueError("no")

@app.task(retries=1)
def flaky():
    tries.append(1)
    if len(tries) == 1:
        raise Retry(delay=0)

async def in_a_loop():
    aok.delay(3)  # eagerly inside a running loop: on a thread of its own
    await aok.adelay(4)

with tracer.start_as_current_span("request") as span:
    ok.delay(1)
    aok.delay(2)  # outside a loop: asyncio.run
    asyncio.run(in_a_loop())
    flaky.delay()
    try:
        boom.delay()
    except ValueError:
        pass
    ctx = span.get_span_context()

def record(s):
    return {
        "name": s.name,
        "kind": s.kind.name,
        "trace": s.context.trace_id,
        "span": s.context.span_id,
        "parent": s.parent.span_id if s.parent else None,
        "links": [link.context.span_id for link in s.links],
        "status": s.status.status_code.name,
        "attributes": dict(s.attributes or {}),
        "events": [e.name for e in s.events],
    }

spans = [record(s) for s in exporter.get_finished_spans()]
print(json.dumps({"trace": ctx.trace_id, "span": ctx.span_id, "spans": spans}))
"""


def test_eager_mode_runs_a_task_in_a_consumer_span_too() -> None:
    out = json.loads(run(dict(os.environ), "-c", EAGER).strip().splitlines()[-1])
    spans = out["spans"]
    assert {s["trace"] for s in spans} == {out["trace"]}  # one trace
    by_id = {s["span"]: s for s in spans}
    for x, task in [(1, "ok"), (2, "aok"), (3, "aok"), (4, "aok")]:
        (inside,) = [s for s in spans if s["name"] == f"inside {x}"]
        consumer = by_id[inside["parent"]]
        assert consumer["name"] == f"__main__.{task} process" and consumer["kind"] == "CONSUMER"
        publish = by_id[consumer["parent"]]
        assert consumer["links"] == [publish["span"]]
        assert publish["kind"] == "PRODUCER" and publish["parent"] == out["span"]
    # A retry is a second attempt's span; a failure is recorded as ERROR.
    flaky = [s for s in spans if s["name"] == "__main__.flaky process"]
    assert [s["attributes"]["gatorapp.task.attempt"] for s in flaky] == [1, 2]
    assert [s["status"] for s in flaky] == ["ERROR", "UNSET"]
    assert flaky[0]["attributes"]["gatorapp.outcome"] == "retry"
    (boom,) = [s for s in spans if s["name"] == "__main__.boom process"]
    assert boom["status"] == "ERROR" and boom["events"] == ["exception"]
    assert boom["attributes"]["gatorapp.dead.reason"] == "retries_exhausted"
    # The enqueue raised the task's error: its PRODUCER span records it too.
    (boom_publish,) = [s for s in spans if s["name"] == "__main__.boom publish"]
    assert boom_publish["status"] == "ERROR"


# A span context as a framework's instrumentation (or an extracted request
# header) makes current: valid, with no SDK in this process.
REQUEST = trace.SpanContext(
    trace_id=0x0AF7651916CD43DD8448EB211C80319C,
    span_id=0xB7AD6B7169203331,
    is_remote=False,
    trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
)

FORMS: dict[str, Callable[[App, Any], object]] = {
    "delay": lambda app, add: add.delay(1, 2),
    "options.delay": lambda app, add: add.options(queue="other").delay(1, 2),
    "map": lambda app, add: add.map([1, 2]),
    "starmap": lambda app, add: add.starmap([(1, 2), (3, 4)]),
    "options.map": lambda app, add: add.options(retries=1).map([1, 2]),
    "app.options": lambda app, add: app.options(retries=2).task(add, 1, 2),
    "enqueue_many": lambda app, add: app.enqueue_many(add, [(1, 2), (3, 4)]),
    "adelay": lambda app, add: asyncio.run(add.adelay(1, 2)),
    "amap": lambda app, add: asyncio.run(add.amap([1, 2])),
    "astarmap": lambda app, add: asyncio.run(add.astarmap([(1, 2)])),
    "options.adelay": lambda app, add: asyncio.run(add.options(queue="other").adelay(1, 2)),
}


@pytest.mark.parametrize("form", FORMS)
def test_every_enqueue_records_the_current_span_context(form: str) -> None:
    app = App("memory://")

    @app.task
    def add(a: int, b: int = 0) -> int:
        return a + b

    # No tracer provider here: the context is carried along, no span is made.
    assert tracing.tracer() is None
    with trace.use_span(trace.NonRecordingSpan(REQUEST)):
        FORMS[form](app, add)
    reserved = app.backend.reserve(["default", "other"], 10, 30, "w")
    assert reserved
    for r in reserved:
        headers = unpack(r.data)["opts"]["trace"]
        assert headers == {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


def test_nothing_is_recorded_outside_a_span_or_without_an_sdk(tmp_path: Path) -> None:
    # This process has the OpenTelemetry API but no tracer provider: no span
    # is ever valid, so nothing is added and no worker span is started.
    assert tracing.carrier() is None and tracing.tracer() is None
    app = App(f"sqlite:///{tmp_path}/q.db")

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    add.delay(1, 2)
    add.starmap([(1, 2), (3, 4)])
    with trace.get_tracer("t").start_as_current_span("no sdk"):  # a non-recording, invalid span
        add.delay(3, 4)
    for r in app.backend.reserve(["default"], 10, 30, "w"):
        assert "opts" not in unpack(r.data)


def test_gatorapp_runs_without_opentelemetry() -> None:
    code = """
import asyncio
import sys
sys.modules["opentelemetry"] = None  # as if it were not installed
from gatorapp import App, tracing
from gatorapp.envelope import unpack
app = App("memory://")

@app.task
def add(a, b):
    return a + b

add.delay(1, 2)
add.map([1, 2])
asyncio.run(add.adelay(3, 4))
for r in app.backend.reserve(["default"], 10, 30, "w"):
    assert "opts" not in unpack(r.data)
    app.backend.release([r])
assert app.drain() == 4
app.eager = True
assert add.delay(5, 6).result == 11
assert tracing.carrier() is None and tracing.tracer() is None
assert "opentelemetry.trace" not in sys.modules
print("ok")
"""
    assert run(dict(os.environ), "-c", code).strip() == "ok"
