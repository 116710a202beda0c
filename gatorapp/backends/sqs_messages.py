"""How a gatorapp task travels as an SQS message, and how SQS measures it.

The body is the base64 of the payload (SQS bodies must be XML-legal text);
the task id rides in the ``gatorapp.id`` attribute, a due time beyond one SQS
delay in ``gatorapp.due``, and a dead letter's reason, error and time in
``gatorapp.reason``, ``gatorapp.error`` and ``gatorapp.failed_at``.

A message grows after ``.delay()``: a retry or a delay hop adds
``gatorapp.due``, a dead letter adds its reason, time and (shortened) error.
:data:`GROWTH` is that room; the size check at ``.delay()`` keeps it free, so
a task SQS accepted once is never refused on its retry or its way to the dead
letters.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..errors import ConfigurationError
from .base import truncate
from .records import DeadLetter

ID, DUE, REASON, ERROR, FAILED = (f"gatorapp.{n}" for n in "id due reason error failed_at".split())
# Characters SQS accepts in bodies and attribute values (the XML 1.0 set).
ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

NUMBER_ROOM = 24  # bytes of an epoch time as repr(float), with room to spare
REASON_MAX = 64  # characters of a dead letter's reason
ERROR_MIN = 20  # characters of error text a dead letter keeps however full it is
#: Bytes a message may gain after .delay(): the larger of a retry's gatorapp.due and
#: a dead letter's attributes (characters counted at 4 bytes, UTF-8's widest), plus a
#: few for the attempt counters a retried payload carries (they grow in msgpack).
GROWTH = (
    max(
        len(DUE) + len("Number") + NUMBER_ROOM,
        len(REASON) + len("String") + 4 * REASON_MAX
        + len(FAILED) + len("Number") + NUMBER_ROOM
        + len(ERROR) + len("String") + 4 * ERROR_MIN,
    )
    + 16
)  # fmt: skip
#: Bytes the size check at .delay() keeps for the attributes: an id of up to 64
#: characters (a generated one has 32) and GROWTH.
ID_ALLOWANCE = len(ID) + len("String") + 64 + GROWTH
#: Reason of a dead letter SQS moved there itself (a redrive policy): it carries none.
REDRIVEN = "max_receives"


def legal(text: str) -> str:
    """``text`` with characters SQS refuses replaced by U+FFFD."""
    return ILLEGAL.sub("\ufffd", text)


def attr(value: str, kind: str = "String") -> dict[str, str]:
    return {"DataType": kind, "StringValue": value}


def message_size(body: str, attrs: dict[str, dict[str, str]]) -> int:
    # How SQS measures a message: body plus each attribute's name, type and value.
    return len(body.encode()) + sum(
        len(k) + len(v["DataType"]) + len(v["StringValue"].encode()) for k, v in attrs.items()
    )


def entry_size(entry: dict[str, Any]) -> int:
    return message_size(entry["MessageBody"], entry["MessageAttributes"])


def size_with_growth(entry: dict[str, Any]) -> int:
    """The most ``entry`` can measure on a retry or as a dead letter (they drop its
    gatorapp.due and add their own attributes)."""
    attrs = {k: v for k, v in entry["MessageAttributes"].items() if k != DUE}
    return message_size(entry["MessageBody"], attrs) + GROWTH


def encoded_size(data: bytes) -> int:
    """Bytes of ``data`` in SQS, attributes included, before any id is known."""
    return 4 * math.ceil(len(data) / 3) + ID_ALLOWANCE


def task_entry(task_id: str, data: bytes, run_at: float | None, max_delay: int) -> dict[str, Any]:
    """A SendMessageBatch entry (without its batch Id) for one task."""
    if not task_id or ILLEGAL.search(task_id):
        raise ConfigurationError(f"task id {task_id!r} cannot travel in an SQS attribute")
    attrs = {ID: attr(task_id)}
    delay = 0
    now = time.time()
    if run_at is not None and run_at > now:
        delay = min(max_delay, math.ceil(run_at - now))
        attrs[DUE] = attr(repr(float(run_at)), "Number")
    body = base64.b64encode(data).decode()
    return {"MessageBody": body, "MessageAttributes": attrs, "DelaySeconds": delay}


def dead_entry(task_id: str, data: bytes, reason: str, error: str, limit: int) -> dict[str, Any]:
    """The entry of a dead letter; its error text is shortened to fit ``limit`` bytes.

    A payload too large for the dead-letter queue once in base64 (a foreign
    message's raw body grows by a third) keeps its first bytes, and the error
    says so, with the whole payload's size and SHA-256: a dead letter is
    always made, so the message never comes back.
    """
    new = _dead_entry(task_id, data, reason, error, limit)
    if entry_size(new) <= limit:
        return new
    note = (
        f"[payload cut to fit the dead-letter queue: {len(data)} bytes, "
        f"sha256 {hashlib.sha256(data).hexdigest()}] "
    )
    new = _dead_entry(task_id, b"", reason, note + truncate(legal(error), 400), limit)
    room = limit - entry_size(new) - 64  # (and the words added to the error below)
    kept = data[: max(0, room // 4 * 3)]
    attrs = new["MessageAttributes"]
    attrs[ERROR] = attr(f"{attrs[ERROR]['StringValue']} (kept the first {len(kept)} bytes)")
    new["MessageBody"] = base64.b64encode(kept).decode()
    return new


def _dead_entry(task_id: str, data: bytes, reason: str, error: str, limit: int) -> dict[str, Any]:
    new = task_entry(task_id, data, None, 0)
    attrs = new["MessageAttributes"]
    attrs[REASON] = attr(truncate(legal(reason), REASON_MAX) or "?")
    attrs[FAILED] = attr(repr(time.time()), "Number")
    room = limit - message_size(new["MessageBody"], attrs) - len(ERROR) - len("String")
    error = truncate(legal(error), max(ERROR_MIN, min(4000, room // 4)))
    if error:
        attrs[ERROR] = attr(error)
    return new


# -- received messages ------------------------------------------------------------------


def text(msg: dict[str, Any], name: str, default: str = "") -> str:
    return str(msg.get("MessageAttributes", {}).get(name, {}).get("StringValue", default))


def task_id(msg: dict[str, Any]) -> str:
    """The gatorapp task id of a received message; "" when it is not one of ours."""
    value = text(msg, ID)
    return "" if ILLEGAL.search(value) else value


def due(msg: dict[str, Any]) -> float:
    """When a received task is due (epoch seconds); 0 when it carries no usable due
    time. Only gatorapp's own messages have one: a foreign message is due now, so
    it reaches the worker, which buries it as undecodable."""
    if not task_id(msg):
        return 0.0
    try:
        value = float(text(msg, DUE, "0"))
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


def decode_body(msg: dict[str, Any]) -> bytes:
    body = str(msg.get("Body", ""))
    if ID in msg.get("MessageAttributes", {}):
        try:
            return base64.b64decode(body, validate=True)
        except ValueError:
            pass
    return body.encode()  # not ours: the worker buries it as undecodable


def letter(queue: str, msg: dict[str, Any]) -> DeadLetter:
    """A message of a dead-letter queue; one without a reason was moved there by SQS."""
    reason = text(msg, REASON)
    try:
        failed = float(text(msg, FAILED, "0"))
    except ValueError:
        failed = 0.0
    return DeadLetter(
        queue,
        text(msg, ID) or msg["MessageId"],
        decode_body(msg),
        reason or REDRIVEN,
        text(msg, ERROR)
        or ("" if reason else "moved by the queue's SQS redrive policy (too many receives)"),
        failed,
    )


# -- batching ---------------------------------------------------------------------------


def chunks(items: Sequence[Any], size: Callable[[Any], int], budget: int) -> Iterable[list[Any]]:
    """Chunks of at most 10 items whose sizes add up to at most ``budget`` (SQS batch limits)."""
    chunk: list[Any] = []
    total = 0
    for item in items:
        n = size(item)
        if chunk and (len(chunk) == 10 or total + n > budget):
            yield chunk
            chunk, total = [], 0
        chunk.append(item)
        total += n
    if chunk:
        yield chunk
