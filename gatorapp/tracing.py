"""Trace propagation with OpenTelemetry, when it is installed (``gatorapp[otel]``).

* Enqueueing (``.delay()``, ``.map()`` and their async forms) inside a span
  records the span's context, W3C ``traceparent`` and ``tracestate``, in the
  envelope's options under ``"trace"``. Outside a span nothing is added. In
  a process with a tracer provider the enqueue is itself a span of kind
  PRODUCER, ``<task name> publish``, and its context is the one recorded.
* A worker whose process has a tracer provider (the OpenTelemetry SDK, set
  up by the app module or ``opentelemetry-instrument``) runs each attempt in a
  span of kind CONSUMER, ``<task name> process``, whose parent is the
  enqueuer's context and which links to it too: the web request and the task
  it enqueued are one trace. A failed attempt sets the span's status to
  ERROR with the error as an event. Eager mode does the same where it runs.

Only this module imports OpenTelemetry, once, on first use. Without it every
function here returns at once (one test of a module-level value); with the
API but no tracer provider, a worker starts no span. A worker asks
:func:`tracer` once, when it starts (``gatorapp.execution.choose_attempt``);
an enqueue asks only once it found it is :func:`in_span`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any, Protocol, TypeVar

#: the envelope option that carries the enqueuer's trace context
OPTION = "trace"

_otel: Any = None  # the opentelemetry modules once imported; False: not installed


def _modules() -> Any:
    global _otel
    if _otel is None:
        try:
            from opentelemetry import context, propagate, trace
        except ImportError:
            _otel = False
        else:
            _otel = (context, propagate, trace)
    return _otel


def in_span() -> bool:
    """Whether there is a current span whose context could travel (a valid
    one: without an SDK, only a context a caller extracted and made current)."""
    otel = _modules()
    return bool(otel) and bool(otel[2].get_current_span().get_span_context().is_valid)


def carrier() -> dict[str, str] | None:
    """The current span's context as W3C headers, or None outside a span."""
    if not in_span():
        return None
    headers: dict[str, str] = {}
    _modules()[1].inject(headers)
    return headers or None


class TaskLike(Protocol):
    task_id: str
    name: str
    queue: str
    attempt: int
    options: dict[str, Any]


_tracer: Any = None  # once a provider is set (it is set once per process)
_looked = -1.0  # time.monotonic() of the last look for one


def tracer() -> Any:
    """The tracer of this process's provider, or None: no OpenTelemetry, or
    no provider set (spans would only cost). Without one it looks again at
    most once a second, since an app may set its provider after starting."""
    global _tracer, _looked
    if _tracer is not None or _otel is False:
        return _tracer
    now = time.monotonic()
    if now - _looked < 1.0:
        return None
    _looked = now
    otel = _modules()
    if not otel:
        return None
    trace = otel[2]
    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    _tracer = provider.get_tracer("gatorapp")
    return _tracer


class Sent(Protocol):
    """What :meth:`Publish.sent` reads of an enqueue's handles."""

    @property
    def id(self) -> str: ...
    @property
    def queue(self) -> str: ...


H = TypeVar("H", bound=Sent)


class Publish:
    """The PRODUCER span of one enqueue (see :func:`publishing`)."""

    __slots__ = ("headers", "span")

    def __init__(self, span: Any, headers: dict[str, str] | None) -> None:
        self.span = span
        #: the span's own context, for the envelopes
        self.headers = headers

    def sent(self, handles: list[H]) -> list[H]:
        """Name the queue and the message on the span; return ``handles``.
        (The queue is known once the enqueue chose it, after the span began.)"""
        if handles:
            self.span.set_attribute("messaging.destination.name", handles[0].queue)
            if len(handles) == 1:
                self.span.set_attribute("messaging.message.id", handles[0].id)
        return handles


@contextlib.contextmanager
def publishing(name: str, count: int) -> Iterator[Publish]:
    """A PRODUCER span around one enqueue of ``count`` calls of task
    ``name``, current while the backend is called (so a client library's own
    spans are its children). For a caller that found it is :func:`in_span`
    and has a :func:`tracer`; an error raised inside ends it as ERROR."""
    found = tracer()
    attributes: dict[str, Any] = {
        "messaging.system": "gatorapp",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "gatorapp.task.name": name,
    }
    if count != 1:
        attributes["messaging.batch.message_count"] = count
    kind = _modules()[2].SpanKind.PRODUCER
    with found.start_as_current_span(f"{name} publish", kind=kind, attributes=attributes) as span:
        yield Publish(span, carrier())


@contextlib.contextmanager
def consumer(task: TaskLike) -> Iterator[Any]:
    """A CONSUMER span around one attempt, child of (and linked to) the
    enqueuer's context; yields the span, or None when nothing is traced."""
    found = tracer()
    if found is None:
        yield None
        return
    context, propagate, trace = _modules()
    headers = task.options.get(OPTION) if task.options else None
    parent = None
    links = []
    if isinstance(headers, dict):
        parent = propagate.extract({k: v for k, v in headers.items() if isinstance(v, str)})
        linked = trace.get_current_span(parent).get_span_context()
        if linked.is_valid:
            links.append(trace.Link(linked))
        else:
            parent = None
    attributes = {
        "messaging.system": "gatorapp",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": task.queue,
        "messaging.message.id": task.task_id,
        "gatorapp.task.name": task.name,
        "gatorapp.task.attempt": task.attempt + 1,  # (the attempt about to run)
    }
    span = found.start_span(
        f"{task.name} process",
        context=parent if parent is not None else context.Context(),
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
        links=links,
    )
    token = context.attach(trace.set_span_in_context(span))
    try:
        yield span
    finally:
        context.detach(token)
        span.end()


def finish(span: Any, kind: str, summary: str, error: str, reason: str = "") -> None:
    """Say on ``span`` how the attempt ended: ``kind`` is success (nothing
    to add), retry or dead; ``summary`` the error in one line, ``error`` its
    traceback, ``reason`` why a dead letter died."""
    if span is None or kind == "success":
        return
    trace = _modules()[2]
    span.set_attribute("gatorapp.outcome", kind)
    if reason:
        span.set_attribute("gatorapp.dead.reason", reason)
    span.add_event("exception", {"exception.message": summary, "exception.stacktrace": error})
    span.set_status(trace.Status(trace.StatusCode.ERROR, summary))
