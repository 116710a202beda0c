"""``sqs://``: Amazon SQS through boto3 (standard queues, at-least-once).

URL: ``sqs://REGION/?endpoint_url=...&prefix=...`` (``sqs:///`` takes boto3's
default region). Credentials never go in the URL: boto3's normal chain finds
them (environment, ``~/.aws``, instance or task role; ``profile=`` picks one).
The options are in :mod:`gatorapp.backends.sqs_config` and docs/sqs.md, with
the guarantees and what SQS cannot do.

Queue ``q`` is the SQS queue ``<prefix>q``, its dead letters ``<prefix>q-dlq``.
A task is a message: the body is the base64 of the payload (SQS bodies must be
XML-legal text), the task id is the ``gatorapp.id`` attribute, the receipt
handle is the lease token, and the heartbeat renews leases with
``ChangeMessageVisibilityBatch``. SQS delays at most 900 s, so longer delays
travel in hops: the due time rides in ``gatorapp.due`` and a message received
early is sent again with the rest of its delay.
"""

from __future__ import annotations

import base64
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

from ..errors import BackendError, ConfigurationError, PayloadTooLarge
from .base import Backend, DeadLetter, Message, QueueStats, Reservation, truncate
from .sqs_config import ID_ALLOWANCE, SQS_MAX_SIZE, SQSConfig

log = logging.getLogger("gatorapp.sqs")

ID, DUE, REASON, ERROR, FAILED = (f"gatorapp.{n}" for n in "id due reason error failed_at".split())
MAX_VISIBILITY = 43200  # SQS caps a visibility timeout at 12 hours
SCAN_VISIBILITY = 30  # seconds a scan hides the messages it looks at
SCAN_MAX = 10_000  # messages one scan looks at, at most
_MISSING = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
# Characters SQS accepts in bodies and attribute values (the XML 1.0 set).
_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _entries(items: Sequence[Any], size: Callable[[Any], int], budget: int) -> Iterable[list[Any]]:
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


def _grouped(keys: Sequence[Any], run: Callable[[Any, list[int]], list[bool]]) -> list[bool]:
    """Call ``run(key, indexes)`` once per distinct key (None: skipped, False) and
    scatter its per-item results back into one list."""
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        if key is not None:
            groups.setdefault(key, []).append(i)
    ok = [False] * len(keys)
    for key, idx in groups.items():
        for i, good in zip(idx, run(key, idx)):
            ok[i] = good
    return ok


def legal(text: str) -> str:
    """``text`` with characters SQS refuses replaced by U+FFFD."""
    return _ILLEGAL.sub("\ufffd", text)


def _attr(value: str, kind: str = "String") -> dict[str, str]:
    return {"DataType": kind, "StringValue": value}


def _message_size(body: str, attrs: dict[str, dict[str, str]]) -> int:
    # How SQS measures a message: body plus each attribute's name, type and value.
    return len(body.encode()) + sum(
        len(k) + len(v["DataType"]) + len(v["StringValue"].encode()) for k, v in attrs.items()
    )


def _decode_body(msg: dict[str, Any]) -> bytes:
    body = str(msg.get("Body", ""))
    if ID in msg.get("MessageAttributes", {}):
        try:
            return base64.b64decode(body, validate=True)
        except ValueError:
            pass
    return body.encode()  # not ours: the worker buries it as undecodable


def _text(msg: dict[str, Any], name: str, default: str = "") -> str:
    return str(msg.get("MessageAttributes", {}).get(name, {}).get("StringValue", default))


class SQSBackend(Backend):
    unsupported = {
        "idempotent_enqueue": "standard SQS queues do not deduplicate; a task id sent twice "
        "is two messages",
        "fifo": "standard SQS queues deliver in best-effort order",
        "subsecond_timing": "SQS visibility timeouts and delays are whole seconds",
        "stale_token": "SQS accepts a delete or visibility change with a receipt handle "
        "from an earlier receive (only this process's own finished leases are refused)",
        "take": "SQS cannot fetch a message by id: take scans the visible messages, so a "
        "delayed or running task cannot be taken",
        "exact_stats": "SQS reports approximate counts only",
        "delivery_count": "deliveries is SQS's ApproximateReceiveCount, which also counts "
        "releases and scans",
    }

    def __init__(self, url: str = "sqs:///", **kwargs: Any) -> None:
        max_payload = kwargs.pop("max_payload", None)
        if kwargs:
            raise ConfigurationError(f"unknown SQS backend option(s): {', '.join(kwargs)}")
        super().__init__(url)
        self.config = config = SQSConfig.parse(url)
        # Raw payload bytes that fit once base64 and the attributes are added.
        fit = (config.max_message_size - ID_ALLOWANCE) // 4 * 3
        self.max_payload = min(fit, max_payload) if max_payload else fit
        self._lock = threading.Lock()
        self._client: Any = None
        self._urls: dict[str, str] = {}  # SQS queue name -> queue URL
        self._limits: dict[str, int] = {}  # queue URL -> MaximumMessageSize
        self._stash: dict[str, list[Reservation]] = {}  # received by wait(), not yet reserved
        # Tokens this process acked, retried, buried or released (oldest first).
        self._finished: dict[str, None] = {}
        self._empty_at: dict[str, float] = {}
        self._lease_hint = 30.0
        self._limit_hint = 10
        self._turn = 0

    # -- the client -------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The boto3 SQS client, built on first use (there is no I/O before that)."""
        with self._lock:
            if self._client is None:
                retries = {
                    "mode": self.config.retry_mode,
                    "total_max_attempts": self.config.max_attempts,
                }
                # The read timeout must outlast a long poll.
                timeout = max(60, self.config.wait + 20, self.config.scan_wait + 20)
                config = Config(retries=retries, connect_timeout=10, read_timeout=timeout)
                try:
                    self._client = boto3.session.Session(profile_name=self.config.profile).client(
                        "sqs",
                        region_name=self.config.region,
                        endpoint_url=self.config.endpoint_url,
                        config=config,
                    )
                except NoRegionError:
                    raise ConfigurationError(
                        "no AWS region: put it in the URL (sqs://us-east-1/) or AWS_DEFAULT_REGION"
                    ) from None
                except BotoCoreError as exc:
                    raise ConfigurationError(f"cannot set up the SQS client: {exc}") from exc
            return self._client

    def _call(self, op: str, **kwargs: Any) -> dict[str, Any]:
        """One SQS call; botocore retries throttling and connection errors itself."""
        try:
            result: dict[str, Any] = getattr(self.client, op)(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") in _MISSING:
                with self._lock:  # deleted behind our back: look it up (or create it) again
                    for name, url in list(self._urls.items()):
                        if url == kwargs.get("QueueUrl"):
                            del self._urls[name]
                raise _Missing(f"SQS queue missing ({op})") from exc
            raise BackendError(
                f"SQS {op} failed: {error.get('Code')}: {error.get('Message')}"
            ) from exc
        except BotoCoreError as exc:
            raise BackendError(f"SQS {op} failed: {exc}") from exc
        return result

    def _url(self, queue: str, dead: bool = False, need: bool = True) -> str | None:
        """URL of a queue, created when missing and ``need``; None when missing otherwise."""
        name = self.config.sqs_name(queue, dead)
        url = self._urls.get(name)
        if url is not None:
            return url
        try:
            url = str(self._call("get_queue_url", QueueName=name)["QueueUrl"])
        except _Missing:
            if not need:
                return None
            if not self.config.create:
                raise BackendError(
                    f"SQS queue {name!r} does not exist and the URL says create=false"
                ) from None
            size = SQS_MAX_SIZE if dead else self.config.max_message_size
            attrs = {
                "MaximumMessageSize": str(size),
                "MessageRetentionPeriod": str(self.config.retention),
            }
            url = str(self._call("create_queue", QueueName=name, Attributes=attrs)["QueueUrl"])
            self._limits[url] = size
        with self._lock:
            self._urls[name] = url
        return url

    def _limit(self, url: str) -> int:
        """The queue's MaximumMessageSize, looked up once per process."""
        if url not in self._limits:
            got = self._call("get_queue_attributes", QueueUrl=url, AttributeNames=["All"])
            self._limits[url] = int(got["Attributes"].get("MaximumMessageSize", SQS_MAX_SIZE))
        return self._limits[url]

    # -- sending ----------------------------------------------------------------------
    def check_size(self, data: bytes) -> None:
        # No I/O here: .delay() checks against max_message_size from the URL; the
        # exact check against the queue's own limit happens in _enqueue, before any send.
        encoded = 4 * math.ceil(len(data) / 3) + ID_ALLOWANCE
        if len(data) > self.max_payload:
            raise PayloadTooLarge(
                f"encoded task is {len(data)} bytes ({encoded} in SQS after base64 and "
                f"attributes); this backend takes at most {self.max_payload} (SQS "
                f"max_message_size={self.config.max_message_size}, App(max_payload=...))"
            )

    def _entry(self, task_id: str, data: bytes, run_at: float | None) -> dict[str, Any]:
        if not task_id or _ILLEGAL.search(task_id):
            raise ConfigurationError(f"task id {task_id!r} cannot travel in an SQS attribute")
        attrs = {ID: _attr(task_id)}
        delay = 0
        now = time.time()
        if run_at is not None and run_at > now:
            delay = min(self.config.max_delay, math.ceil(run_at - now))
            attrs[DUE] = _attr(repr(float(run_at)), "Number")
        body = base64.b64encode(data).decode()
        return {"MessageBody": body, "MessageAttributes": attrs, "DelaySeconds": delay}

    def _fits(self, url: str, entry: dict[str, Any], queue: str) -> None:
        size = _message_size(entry["MessageBody"], entry["MessageAttributes"])
        limit = self._limit(url)
        if size > limit:
            raise PayloadTooLarge(
                f"task is {size} bytes in SQS (base64 body and attributes); queue {queue!r} "
                f"takes at most {limit} (its MaximumMessageSize)"
            )

    def _send(self, url: str, entries: Sequence[dict[str, Any]]) -> list[bool]:
        """SendMessageBatch in chunks; True where SQS stored the message."""
        budget = min(self._limit(url), SQS_MAX_SIZE)
        size = lambda i: _message_size(entries[i]["MessageBody"], entries[i]["MessageAttributes"])  # noqa: E731
        ok = [False] * len(entries)
        for chunk in _entries(range(len(entries)), size, budget):
            batch = [{"Id": str(i), **entries[i]} for i in chunk]
            for attempt in range(3):
                got = self._call("send_message_batch", QueueUrl=url, Entries=batch)
                for item in got.get("Successful", []):
                    ok[int(item["Id"])] = True
                failed = got.get("Failed", [])
                # Entries SQS failed on its side are sent again; sender faults are ours.
                batch = [
                    e
                    for e in batch
                    if any(f["Id"] == e["Id"] and not f.get("SenderFault") for f in failed)
                ]
                for f in failed:
                    log.warning("SQS refused a message: %s: %s", f.get("Code"), f.get("Message"))
                if not batch or attempt == 2:
                    break
                time.sleep(0.1 * 2**attempt)
        with self._lock:
            self._empty_at.pop(url, None)
        return ok

    def _enqueue(self, messages: Sequence[Message]) -> None:
        by_url: dict[str, list[dict[str, Any]]] = {}
        for m in messages:
            entry = self._entry(m.task_id, m.data, m.run_at)
            url = self._url(m.queue)
            assert url is not None
            self._fits(url, entry, m.queue)  # the whole call is refused before any send
            by_url.setdefault(url, []).append(entry)
        refused = sum(self._send(url, entries).count(False) for url, entries in by_url.items())
        if refused:
            raise BackendError(f"SQS refused {refused} of {len(messages)} task(s); see the log")

    # -- receiving --------------------------------------------------------------------
    def _receive(self, url: str, n: int, visibility: int, wait: int = 0) -> list[dict[str, Any]]:
        got = self._call(
            "receive_message",
            QueueUrl=url,
            MaxNumberOfMessages=max(1, min(10, n)),
            VisibilityTimeout=visibility,
            WaitTimeSeconds=wait,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return list(got.get("Messages", []))

    def _visible(
        self, queue: str, url: str, n: int, lease: float, wait: int = 0
    ) -> list[Reservation]:
        """Receive, send not-yet-due messages on their next hop, lease the rest."""
        msgs = self._receive(url, n, self._seconds(lease), wait)
        now = time.time()
        early = [m for m in msgs if float(_text(m, DUE, "0")) > now]
        if early:  # a delay longer than max_delay: next hop, then drop this copy
            entries = [
                self._entry(_text(m, ID), _decode_body(m), float(_text(m, DUE))) for m in early
            ]
            sent = self._send(url, entries)
            self._batch(
                "delete_message_batch",
                url,
                [m["ReceiptHandle"] for m, ok in zip(early, sent) if ok],
            )
        return [
            Reservation(
                queue,
                _text(m, ID) or m["MessageId"],
                _decode_body(m),
                m["ReceiptHandle"],
                int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
                lease,
                {"url": url, "message_id": m["MessageId"]},
            )
            for m in msgs
            if m not in early
        ]

    @staticmethod
    def _seconds(lease: float) -> int:
        return max(1, min(MAX_VISIBILITY, math.ceil(lease)))

    def _reserve(self, queue: str, limit: int, lease: float, worker_id: str) -> list[Reservation]:
        self._lease_hint, self._limit_hint = lease, limit
        url = self._url(queue)
        assert url is not None
        with self._lock:
            stash = self._stash.pop(url, [])
        out, rest = stash[:limit], stash[limit:]
        if rest:
            self._release(rest)
        if out and any(r.lease != lease for r in out):
            for r in out:
                r.lease = lease
            self._extend(out)
        # Empty short polls are spaced out: a busy worker asks every 50 ms otherwise.
        if len(out) < limit and time.monotonic() - self._empty_at.get(url, 0) > 0.2:
            for _ in range(limit // 10 + 2):
                got = self._visible(queue, url, limit - len(out), lease)
                out.extend(got)
                if not got or len(out) >= limit:
                    break
            if not out:
                self._empty_at[url] = time.monotonic()
        return out

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Long-poll one of the queues (in turn) for up to ``wait`` seconds.

        What arrives is kept, leased, for the next :meth:`reserve`, so no
        message is received twice for one wake-up.
        """
        if not queues:
            return
        queue = queues[self._turn % len(queues)]
        self._turn += 1
        url = self._url(queue)
        assert url is not None
        seconds = max(1, min(self.config.wait, math.ceil(timeout)))
        got = self._visible(queue, url, self._limit_hint, self._lease_hint, seconds)
        if got:
            with self._lock:
                self._stash.setdefault(url, []).extend(got)
                self._empty_at.pop(url, None)

    # -- ending leases ----------------------------------------------------------------
    def _batch(
        self, op: str, url: str, handles: Sequence[str], timeouts: Sequence[int] | None = None
    ) -> list[bool]:
        """A delete or visibility batch by receipt handle; True per handle that worked."""
        ok = [False] * len(handles)
        for start in range(0, len(handles), 10):
            entries: list[dict[str, Any]] = []
            for i in range(start, min(start + 10, len(handles))):
                entries.append({"Id": str(i), "ReceiptHandle": handles[i]})
                if timeouts is not None:
                    entries[-1]["VisibilityTimeout"] = timeouts[i]
            for item in self._call(op, QueueUrl=url, Entries=entries).get("Successful", []):
                ok[int(item["Id"])] = True
        return ok

    def _each(
        self,
        rs: Sequence[Reservation],
        op: str,
        finish: bool,
        timeout: Callable[[Reservation], int] | None = None,
    ) -> list[bool]:
        """A receipt-handle batch per queue; leases this process already ended are refused."""
        keys = [None if r.token in self._finished else self._url_of(r) for r in rs]

        def run(url: str, idx: list[int]) -> list[bool]:
            timeouts = None if timeout is None else [timeout(rs[i]) for i in idx]
            return self._batch(op, url, [rs[i].token for i in idx], timeouts)

        ok = _grouped(keys, run)
        if finish:
            self._finish(r.token for r, good in zip(rs, ok) if good)
        return ok

    def _url_of(self, r: Reservation) -> str:
        url = r.extra.get("url")
        return url if isinstance(url, str) else str(self._url(r.queue))

    def _finish(self, tokens: Iterable[str]) -> None:
        with self._lock:
            self._finished.update(dict.fromkeys(tokens))
            while len(self._finished) > 100_000:
                del self._finished[next(iter(self._finished))]

    def _ack(self, reservations: Sequence[Reservation]) -> list[bool]:
        return self._each(reservations, "delete_message_batch", True)

    def _release(self, reservations: Sequence[Reservation]) -> list[bool]:
        return self._each(reservations, "change_message_visibility_batch", True, lambda r: 0)

    def _extend(self, reservations: Sequence[Reservation]) -> list[bool]:
        # Renews from now; SQS refuses to keep a message hidden past 12 h after its receive.
        seconds = lambda r: self._seconds(r.lease)  # noqa: E731
        return self._each(reservations, "change_message_visibility_batch", False, seconds)

    def _replace(self, moves: Sequence[tuple[Reservation, str, dict[str, Any]]]) -> list[bool]:
        """Send each new message, then delete the reserved one it replaces.

        Send first: a crash in between leaves two copies (a duplicate run),
        never none. The lease is checked (and renewed) before anything is sent.
        """
        held = self._extend([r for r, _, _ in moves])
        keys = [target if h else None for (_, target, _), h in zip(moves, held)]
        ok = _grouped(keys, lambda target, idx: self._send(target, [moves[i][2] for i in idx]))
        self._ack([r for (r, _, _), sent in zip(moves, ok) if sent])
        return ok

    def _retry(self, items: Sequence[tuple[Reservation, bytes, float]]) -> list[bool]:
        return self._replace(
            [(r, self._url_of(r), self._entry(r.task_id, d, t)) for r, d, t in items]
        )

    def _dead_entry(
        self, url: str, task_id: str, data: bytes, reason: str, error: str
    ) -> dict[str, Any]:
        entry = self._entry(task_id, data, None)
        attrs = entry["MessageAttributes"]
        attrs[REASON] = _attr(legal(reason) or "?")
        attrs[FAILED] = _attr(repr(time.time()), "Number")
        room = self._limit(url) - _message_size(entry["MessageBody"], attrs) - 64
        error = truncate(legal(error), max(20, min(4000, room // 4)))
        if error:
            attrs[ERROR] = _attr(error)
        return entry

    def _bury(self, items: Sequence[tuple[Reservation, str, str]]) -> list[bool]:
        moves = []
        for r, reason, error in items:
            dead = str(self._url(r.queue, dead=True))
            moves.append((r, dead, self._dead_entry(dead, r.task_id, r.data, reason, error)))
        return self._replace(moves)

    # -- scanning (take, dead letters) ----------------------------------------------
    def _scan(
        self, url: str, found: Callable[[dict[str, Any]], bool] | None = None, most: int = SCAN_MAX
    ) -> list[dict[str, Any]]:
        """Receive the visible messages of a queue, hiding each for SCAN_VISIBILITY
        seconds, until the queue looks empty, ``found`` matches one, or ``most``
        were seen. The caller deletes or releases every message returned."""
        seen: dict[str, dict[str, Any]] = {}
        while len(seen) < most:
            msgs = self._receive(url, 10, SCAN_VISIBILITY) or (
                self._receive(url, 10, SCAN_VISIBILITY, self.config.scan_wait)
                if self.config.scan_wait
                else []
            )
            new = [m for m in msgs if m["MessageId"] not in seen]
            for m in msgs:
                seen[m["MessageId"]] = m  # a duplicate delivery: keep the newest handle
            # Only messages seen before: the first ones' visibility ran out; stop.
            if not new or (found is not None and any(found(m) for m in msgs)):
                break
        return list(seen.values())

    def _unhide(self, url: str, msgs: Iterable[dict[str, Any]]) -> None:
        handles = [m["ReceiptHandle"] for m in msgs]
        if handles:
            self._batch("change_message_visibility_batch", url, handles, [0] * len(handles))

    def _take(self, queue: str, task_id: str) -> bytes | None:
        # Only visible messages can be found: delayed and running ones are not scanned.
        url = self._url(queue, need=False)
        if url is None:
            return None
        msgs = self._scan(url, lambda m: _text(m, ID) == task_id)
        match = [m for m in msgs if _text(m, ID) == task_id]
        self._unhide(url, [m for m in msgs if m not in match])
        if not match:
            return None
        self._batch("delete_message_batch", url, [m["ReceiptHandle"] for m in match])
        return _decode_body(match[0])

    def _letter(self, queue: str, m: dict[str, Any]) -> DeadLetter:
        return DeadLetter(
            queue,
            _text(m, ID) or m["MessageId"],
            _decode_body(m),
            _text(m, REASON, "?"),
            _text(m, ERROR),
            float(_text(m, FAILED, "0")),
        )

    # -- dead letters ----------------------------------------------------------------
    def dead_add(self, queue: str, task_id: str, data: bytes, reason: str, error: str) -> None:
        url = str(self._url(queue, dead=True))
        if not all(self._send(url, [self._dead_entry(url, task_id, data, reason, error)])):
            raise BackendError(f"SQS refused the dead letter of task {task_id!r}")

    def dead_list(self, queue: str, limit: int = 1000) -> list[DeadLetter]:
        """Up to ``limit`` dead letters, oldest first: a scan of the whole dead-letter queue."""
        url = self._url(queue, dead=True, need=False)
        if url is None:
            return []
        msgs = self._scan(url, most=min(limit, SCAN_MAX))
        self._unhide(url, msgs)
        letters = sorted((self._letter(queue, m) for m in msgs), key=lambda d: d.failed_at)
        return letters[:limit]

    def _find_dead(
        self, queue: str, task_id: str
    ) -> tuple[str, list[dict[str, Any]], dict[str, Any] | None]:
        url = self._url(queue, dead=True, need=False)
        if url is None:
            return "", [], None
        msgs = self._scan(url, lambda m: _text(m, ID) == task_id)
        match = next((m for m in msgs if _text(m, ID) == task_id), None)
        return url, msgs, match

    def dead_get(self, queue: str, task_id: str) -> DeadLetter | None:
        url, msgs, match = self._find_dead(queue, task_id)
        self._unhide(url, msgs)
        return None if match is None else self._letter(queue, match)

    def dead_requeue(self, queue: str, task_id: str, data: bytes | None = None) -> bool:
        """Send the task to its queue, then delete the dead letter (a crash in
        between leaves both: the task is not lost, the letter may be requeued twice)."""
        url, msgs, match = self._find_dead(queue, task_id)
        self._unhide(url, [m for m in msgs if m is not match])
        if match is None:
            return False
        target = str(self._url(queue))
        entry = self._entry(task_id, _decode_body(match) if data is None else data, None)
        if not all(self._send(target, [entry])):
            self._unhide(url, [match])
            return False
        self._batch("delete_message_batch", url, [match["ReceiptHandle"]])
        return True

    def dead_purge(self, queue: str) -> int:
        url = self._url(queue, dead=True, need=False)
        if url is None:
            return 0
        return sum(
            self._batch("delete_message_batch", url, [m["ReceiptHandle"] for m in self._scan(url)])
        )

    # -- introspection -----------------------------------------------------------------
    def _counts(self, url: str | None) -> dict[str, int]:
        if url is None:
            return {}
        try:
            got = self._call("get_queue_attributes", QueueUrl=url, AttributeNames=["All"])
        except _Missing:
            return {}
        return {k: int(v) for k, v in got["Attributes"].items() if k.startswith("Approximate")}

    def stats(self, queue: str) -> QueueStats:
        """SQS's approximate counts (they lag by up to a minute on AWS)."""
        main = self._counts(self._url(queue, need=False))
        dead = self._counts(self._url(queue, dead=True, need=False))
        n = "ApproximateNumberOfMessages"
        return QueueStats(
            main.get(n, 0),
            main.get(n + "Delayed", 0),
            main.get(n + "NotVisible", 0),
            dead.get(n, 0) + dead.get(n + "NotVisible", 0),
        )

    def known_queues(self) -> list[str]:
        names: set[str | None] = set()
        kwargs: dict[str, Any] = {"QueueNamePrefix": self.config.prefix, "MaxResults": 1000}
        while True:
            got = self._call("list_queues", **kwargs)
            names.update(
                self.config.queue_of(u.rsplit("/", 1)[-1]) for u in got.get("QueueUrls", [])
            )
            if not got.get("NextToken"):
                return sorted(n for n in names if n)
            kwargs["NextToken"] = got["NextToken"]

    def drop_all(self, queue_name: str) -> None:
        """PurgeQueue: deletes ready, delayed and running messages (AWS allows one
        purge per queue per 60 s and may take that long to finish)."""
        url = self._url(queue_name, need=False)
        if url is None:
            return
        with self._lock:
            self._stash.pop(url, None)
        try:
            self._call("purge_queue", QueueUrl=url)
        except BackendError as exc:
            if "PurgeQueueInProgress" not in str(exc):
                raise

    def close(self) -> None:
        with self._lock:
            stash = [r for rs in self._stash.values() for r in rs]
            self._stash.clear()
        if stash:
            try:
                self._release(stash)
            except BackendError:
                pass  # their visibility timeout expires instead
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


class _Missing(BackendError):
    """The SQS queue does not exist."""
