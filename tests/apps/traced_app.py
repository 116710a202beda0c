"""An app that traces with the OpenTelemetry SDK, for tests/test_tracing.py.

Spans are written as JSON lines to ``$GATORAPP_TEST_SPANS`` as they end, by
the process that made them (producer or worker).
"""

import asyncio
import json
import os

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from gatorapp import App

app = App(os.environ.get("GATORAPP_TEST_URL", "memory://"))


class FileExporter(SpanExporter):
    def export(self, spans):
        with open(os.environ["GATORAPP_TEST_SPANS"], "a") as f:
            for s in spans:
                record = {
                    "name": s.name,
                    "kind": s.kind.name,
                    "trace": f"{s.context.trace_id:032x}",
                    "span": f"{s.context.span_id:016x}",
                    "parent": f"{s.parent.span_id:016x}" if s.parent else None,
                    "links": [f"{link.context.span_id:016x}" for link in s.links],
                    "status": s.status.status_code.name,
                    "attributes": dict(s.attributes or {}),
                    "events": [e.name for e in s.events],
                    "pid": os.getpid(),
                }
                f.write(json.dumps(record) + "\n")
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(FileExporter()))
trace.set_tracer_provider(provider)


@app.task
def ok(x):
    # The task's own spans are children of the worker's consumer span.
    with trace.get_tracer("traced_app").start_as_current_span("inside"):
        return x


@app.task(retries=0)
def boom():
    raise ValueError("no")


@app.task
async def aok(x):
    await asyncio.sleep(0)
    return x
