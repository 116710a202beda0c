"""The SQS backend's administration: take by id and dead letters (both by
scanning the visible messages) and counts (the optional protocols of
:mod:`gatorapp.backends.protocols`), over its queues client (``sqs``)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import BackendError
from .base import check_queue_name
from .records import DeadLetter, QueueStats
from .sqs_client import Missing, SQSQueues
from .sqs_config import SQSConfig
from .sqs_messages import (
    ID,
    decode_body,
    letter,
    task_entry,
    text,
)

SCAN_VISIBILITY = 30  # seconds a scan hides the messages it looks at
SCAN_MAX = 10_000  # messages one scan looks at, at most


class SQSAdmin:
    """The administration methods (a mixin: it comes before ``Backend``
    among the backend's bases, so these replace the base's defaults)."""

    sqs: SQSQueues
    config: SQSConfig

    @abstractmethod
    def dead_entry(
        self, url: str, task_id: str, data: bytes, reason: str, error: str
    ) -> dict[str, Any]: ...

    # -- scanning (take, dead letters) ----------------------------------------------
    def _scan(
        self, url: str, found: Callable[[dict[str, Any]], bool] | None = None, most: int = SCAN_MAX
    ) -> list[dict[str, Any]]:
        """Receive the visible messages of a queue, hiding each for SCAN_VISIBILITY
        seconds, until the queue looks empty, ``found`` matches one, or ``most``
        were seen. The caller deletes or releases every message returned."""
        seen: dict[str, dict[str, Any]] = {}
        while len(seen) < most:
            msgs = self.sqs.receive(url, 10, SCAN_VISIBILITY) or (
                self.sqs.receive(url, 10, SCAN_VISIBILITY, self.config.scan_wait)
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
            self.sqs.batch("change_message_visibility_batch", url, handles, [0] * len(handles))

    def take(self, queue: str, task_id: str) -> bytes | None:
        queue = check_queue_name(queue)
        # Only visible messages can be found: delayed and running ones are not scanned.
        url = self.sqs.url(queue, need=False)
        if url is None:
            return None
        msgs = self._scan(url, lambda m: text(m, ID) == task_id)
        match = [m for m in msgs if text(m, ID) == task_id]
        self._unhide(url, [m for m in msgs if m not in match])
        if not match:
            return None
        self.sqs.batch("delete_message_batch", url, [m["ReceiptHandle"] for m in match])
        return decode_body(match[0])

    # -- dead letters ----------------------------------------------------------------
    def _dead_add(self, queue: str, task_id: str, data: bytes, reason: str, error: str) -> None:
        url = str(self.sqs.url(queue, dead=True))
        if not all(self.sqs.send(url, [self.dead_entry(url, task_id, data, reason, error)])):
            raise BackendError(f"SQS refused the dead letter of task {task_id!r}")

    def dead_list(self, queue: str, limit: int = 1000) -> list[DeadLetter]:
        """Up to ``limit`` dead letters, oldest first: a scan of the whole dead-letter queue."""
        url = self.sqs.url(queue, dead=True, need=False)
        if url is None:
            return []
        msgs = self._scan(url, most=min(limit, SCAN_MAX))
        self._unhide(url, msgs)
        letters = sorted((letter(queue, m) for m in msgs), key=lambda d: d.failed_at)
        return letters[:limit]

    def _find_dead(
        self, queue: str, task_id: str
    ) -> tuple[str, list[dict[str, Any]], dict[str, Any] | None]:
        url = self.sqs.url(queue, dead=True, need=False)
        if url is None:
            return "", [], None
        # The whole queue: an id may have several letters, and the newest is meant.
        msgs = self._scan(url)
        matches = [m for m in msgs if text(m, ID) == task_id]
        match = max(matches, key=lambda m: letter(queue, m).failed_at, default=None)
        return url, msgs, match

    def dead_get(self, queue: str, task_id: str) -> DeadLetter | None:
        url, msgs, match = self._find_dead(queue, task_id)
        self._unhide(url, msgs)
        return None if match is None else letter(queue, match)

    def dead_requeue(self, queue: str, task_id: str, data: bytes | None = None) -> bool:
        """Send the task to its queue, then delete the dead letter (a crash in
        between leaves both: the task is not lost, the letter may be requeued twice)."""
        url, msgs, match = self._find_dead(queue, task_id)
        self._unhide(url, [m for m in msgs if m is not match])
        if match is None:
            return False
        target = str(self.sqs.url(queue))
        entry = task_entry(
            task_id, decode_body(match) if data is None else data, None, self.config.max_delay
        )
        if not all(self.sqs.send(target, [entry])):
            self._unhide(url, [match])
            return False
        self.sqs.batch("delete_message_batch", url, [match["ReceiptHandle"]])
        return True

    def dead_purge(self, queue: str, task_id: str | None = None) -> int:
        url = self.sqs.url(queue, dead=True, need=False)
        if url is None:
            return 0
        msgs = self._scan(url)
        if task_id is not None:
            self._unhide(url, [m for m in msgs if text(m, ID) != task_id])
            msgs = [m for m in msgs if text(m, ID) == task_id]
        return sum(self.sqs.batch("delete_message_batch", url, [m["ReceiptHandle"] for m in msgs]))

    # -- introspection -----------------------------------------------------------------
    def _counts(self, url: str | None) -> dict[str, int]:
        if url is None:
            return {}
        try:
            got = self.sqs.call("get_queue_attributes", QueueUrl=url, AttributeNames=["All"])
        except Missing:
            return {}
        return {k: int(v) for k, v in got["Attributes"].items() if k.startswith("Approximate")}

    def stats(self, queue: str) -> QueueStats:
        """SQS's approximate counts (they lag by up to a minute on AWS)."""
        main = self._counts(self.sqs.url(queue, need=False))
        dead = self._counts(self.sqs.url(queue, dead=True, need=False))
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
            got = self.sqs.call("list_queues", **kwargs)
            names.update(
                self.config.queue_of(u.rsplit("/", 1)[-1]) for u in got.get("QueueUrls", [])
            )
            if not got.get("NextToken"):
                return sorted(n for n in names if n)
            kwargs["NextToken"] = got["NextToken"]
