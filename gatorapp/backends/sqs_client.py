"""The SQS calls of the ``sqs://`` backend: the boto3 client, its errors, queue
URLs (queues are created on first use when allowed) and the batch calls.

Every SQS error becomes a :class:`~gatorapp.errors.BackendError`; a queue
that does not exist is :class:`Missing` with a message saying so, and a
message SQS will not take as it is is :class:`Refused`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from ..errors import BackendError, ConfigurationError
from .sqs_config import SQS_MAX_SIZE, SQSConfig
from .sqs_messages import chunks, entry_size

log = logging.getLogger("gatorapp.sqs")

_MISSING = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
# Errors SQS gives for a message it will never take as it is (not for the call).
_REFUSED = {
    "InvalidParameterValue",
    "InvalidMessageContents",
    "MessageTooLong",
    "BatchRequestTooLong",
    "AWS.SimpleQueueService.BatchRequestTooLong",
}


class SQSQueues:
    """One boto3 client, and what this process knows of the SQS queues: their
    URLs, size limits, generations and when each last looked empty."""

    def __init__(self, config: SQSConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._client: Any = None
        self._urls: dict[str, str] = {}  # SQS queue name -> queue URL
        self._limits: dict[str, int] = {}  # queue URL -> MaximumMessageSize
        # Bumped when a queue is found missing: a reservation from an older
        # generation came from a queue that is gone, with its message.
        self.gens: dict[str, int] = {}
        self.empty_at: dict[str, float] = {}  # queue URL -> when a receive got nothing

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

    def call(self, op: str, **kwargs: Any) -> dict[str, Any]:
        """One SQS call; botocore retries throttling and connection errors itself."""
        try:
            result: dict[str, Any] = getattr(self.client, op)(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code"), error.get("Message")
            url = kwargs.get("QueueUrl")
            if code in _MISSING:
                raise self.missing(url, op) from exc
            kind = Refused if code in _REFUSED else BackendError
            raise kind(f"SQS {op} failed: {code}: {message}") from exc
        except NoCredentialsError as exc:
            raise BackendError(
                f"SQS {op} failed: {exc}. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(a local server such as moto or ElasticMQ takes any values, e.g. 'test'), "
                "or configure a profile or role; see docs/sqs.md"
            ) from exc
        except BotoCoreError as exc:
            raise BackendError(f"SQS {op} failed: {exc}") from exc
        return result

    def missing(self, url: str | None, op: str) -> Missing:
        """The error for a queue SQS says does not exist; forgets its URL, so the
        next call looks it up (and creates it, when allowed) again."""
        if url is None:  # GetQueueUrl: url() decides what a missing queue means
            return Missing(f"SQS queue missing ({op})")
        with self._lock:
            # Deleted behind our back: its messages, and so every lease on them, are gone.
            self.gens[url] = self.gens.get(url, 0) + 1
            self._limits.pop(url, None)
            for name, known in list(self._urls.items()):
                if known == url:
                    del self._urls[name]
        then = (
            "gatorapp creates it again on the next call"
            if self.config.create
            else "create it again (the URL says create=false)"
        )
        return Missing(
            f"SQS queue {url.rsplit('/', 1)[-1]!r} does not exist ({op}): it was deleted, or "
            f"the SQS server lost its queues, and the messages it held are gone; {then}"
        )

    def url(self, queue: str, dead: bool = False, need: bool = True) -> str | None:
        """URL of a queue, created when missing and ``need``; None when missing otherwise."""
        name = self.config.sqs_name(queue, dead)
        url = self._urls.get(name)
        if url is not None:
            return url
        try:
            url = str(self.call("get_queue_url", QueueName=name)["QueueUrl"])
        except Missing:
            if not need:
                return None
            if not self.config.create:
                raise BackendError(
                    f"SQS queue {name!r} does not exist and the URL says create=false"
                ) from None
            url = self.create(queue, name, dead)
        with self._lock:
            self._urls[name] = url
        return url

    def create(self, queue: str, name: str, dead: bool) -> str:
        size = SQS_MAX_SIZE if dead else self.config.max_message_size
        attrs = {
            "MaximumMessageSize": str(size),
            "MessageRetentionPeriod": str(self.config.retention),
        }
        if self.config.max_receives and not dead:
            # SQS itself moves a message received max_receives times to the dead letters.
            dlq = str(self.url(queue, dead=True))
            got = self.call("get_queue_attributes", QueueUrl=dlq, AttributeNames=["QueueArn"])
            policy = {
                "deadLetterTargetArn": got["Attributes"]["QueueArn"],
                "maxReceiveCount": str(self.config.max_receives),
            }
            attrs["RedrivePolicy"] = json.dumps(policy)
        url = str(self.call("create_queue", QueueName=name, Attributes=attrs)["QueueUrl"])
        self._limits[url] = size
        return url

    def limit(self, url: str) -> int:
        """The queue's MaximumMessageSize, looked up once per process."""
        if url not in self._limits:
            got = self.call("get_queue_attributes", QueueUrl=url, AttributeNames=["All"])
            self._limits[url] = int(got["Attributes"].get("MaximumMessageSize", SQS_MAX_SIZE))
        return self._limits[url]

    def send(self, url: str, entries: Sequence[dict[str, Any]]) -> list[bool]:
        """SendMessageBatch in chunks; True where SQS stored the message."""
        budget = min(self.limit(url), SQS_MAX_SIZE)
        ok = [False] * len(entries)
        for chunk in chunks(range(len(entries)), lambda i: entry_size(entries[i]), budget):
            batch = [{"Id": str(i), **entries[i]} for i in chunk]
            for attempt in range(3):
                try:
                    got = self.call("send_message_batch", QueueUrl=url, Entries=batch)
                except Refused as exc:
                    # SQS refuses a whole batch for one bad message: send each alone,
                    # so only that one is refused.
                    if len(batch) == 1:
                        log.warning("SQS refused a message: %s", exc)
                        break
                    for e in batch:
                        ok[int(e["Id"])] = self.send(url, [entries[int(e["Id"])]])[0]
                    break
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
            self.empty_at.pop(url, None)
        return ok

    def receive(self, url: str, n: int, visibility: int, wait: int = 0) -> list[dict[str, Any]]:
        got = self.call(
            "receive_message",
            QueueUrl=url,
            MaxNumberOfMessages=max(1, min(10, n)),
            VisibilityTimeout=visibility,
            WaitTimeSeconds=wait,
            MessageAttributeNames=["All"],
        )
        return list(got.get("Messages", []))

    def batch(
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
            for item in self.call(op, QueueUrl=url, Entries=entries).get("Successful", []):
                ok[int(item["Id"])] = True
        return ok

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def after_fork(self) -> None:
        """In a forked child: the next call builds a client of this process's own."""
        self._lock = threading.Lock()
        self._client = None


class Missing(BackendError):
    """The SQS queue does not exist."""


class Refused(BackendError):
    """SQS will not take a message as it is (too large, bad contents)."""
