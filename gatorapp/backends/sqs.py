"""``sqs://``: Amazon SQS through boto3 (standard queues, at-least-once).

URL: ``sqs://REGION/?endpoint_url=...&prefix=...`` (``sqs:///`` takes boto3's
default region). Credentials never go in the URL: boto3's normal chain finds
them (environment, ``~/.aws``, instance or task role; ``profile=`` picks one).
The options are in :mod:`gatorapp.backends.sqs_config` and docs/sqs.md, with
the guarantees and what SQS cannot do; the message format is in
:mod:`gatorapp.backends.sqs_messages`.

Queue ``q`` is the SQS queue ``<prefix>q``, its dead letters ``<prefix>q-dlq``.
A task is a message, the receipt handle is the lease token, and the heartbeat
renews leases with ``ChangeMessageVisibilityBatch``. SQS delays at most 900 s,
so longer delays travel in hops: a message received early is sent again with
the rest of its delay.

Every reservation's handle (a :class:`Receipt`) remembers when its receive
was sent and for how long it hid the message: what is handed to the
worker has at least two thirds of its lease left, or is renewed first, or is
not handed out at all, so the heartbeat (every lease/3) always renews a live
lease and never a copy another consumer may have received since.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..errors import BackendError, ConfigurationError, PayloadTooLarge
from .base import Backend, check_queue_name, grouped
from .capabilities import Capabilities
from .protocols import DeadLetterAdmin, QueueAdmin, TakeById
from .records import Message, Reservation
from .sqs_admin import SQSAdmin
from .sqs_client import SQSQueues
from .sqs_config import SQSConfig
from .sqs_messages import (
    ID_ALLOWANCE,
    dead_entry,
    decode_body,
    due,
    encoded_size,
    size_with_growth,
    task_entry,
    task_id,
)

log = logging.getLogger("gatorapp.sqs")

MAX_VISIBILITY = 43200  # SQS caps a visibility timeout at 12 hours


class Receipt:
    """A reservation's handle: the queue URL it was received from (and that
    queue's generation), when the receive was sent (monotonic) and for how many
    seconds it hid the message. Renewals update it in place: the worker's
    reservation stays the same object."""

    __slots__ = ("at", "gen", "seconds", "url")

    def __init__(self, url: str, gen: int, at: float, seconds: int) -> None:
        self.url, self.gen, self.at, self.seconds = url, gen, at, seconds


def receipt(r: Reservation) -> Receipt:
    handle = r.handle
    if not isinstance(handle, Receipt):  # (made by hand, not by a receive here)
        raise TypeError(f"task {r.task_id!r} was not received from SQS")
    return handle


class SQSBackend(SQSAdmin, Backend, QueueAdmin, TakeById, DeadLetterAdmin):
    capabilities = Capabilities.lacking(
        idempotent_enqueue="standard SQS queues do not deduplicate; a task id sent twice "
        "is two messages",
        fifo="standard SQS queues deliver in best-effort order",
        subsecond_timing="SQS visibility timeouts and delays are whole seconds",
        stale_token="SQS accepts a delete or visibility change with a receipt handle "
        "from an earlier receive (only this process's own finished leases are refused)",
        take="SQS cannot fetch a message by id: take scans the visible messages, so a "
        "delayed or running task cannot be taken",
        exact_stats="SQS reports approximate counts only",
        delivery_count="deliveries is always 1: SQS's ApproximateReceiveCount also counts "
        "the scans of get/cancel, so five of them would bury every waiting task; poison "
        "messages are left to an SQS redrive policy (max_receives=N)",
        exclusive_reserve="SQS standard queues may deliver one message to two receives "
        "at once (at-least-once delivery; moto does it under concurrent receives)",
        oldest="SQS gives the age of a queue's oldest message only as a CloudWatch metric "
        "(ApproximateAgeOfOldestMessage), not through its API",
        locate="SQS cannot look a message up by id without receiving it",
    )

    def __init__(self, url: str = "sqs:///", **kwargs: Any) -> None:
        max_payload = kwargs.pop("max_payload", None)
        if kwargs:
            raise ConfigurationError(f"unknown SQS backend option(s): {', '.join(kwargs)}")
        super().__init__(url)
        self.config = config = SQSConfig.parse(url)
        # Raw payload bytes that fit once base64, the attributes and the room a
        # retry or a dead letter adds are counted.
        fit = (config.max_message_size - ID_ALLOWANCE) // 4 * 3
        self.max_payload = min(fit, max_payload) if max_payload else fit
        self.sqs = SQSQueues(config)
        self._lock = threading.Lock()
        self._stash: list[Reservation] = []  # received by wait(), not yet reserved
        self._sweeper: threading.Timer | None = None
        # Tokens this process acked, retried, buried or released (oldest first).
        self._finished: dict[str, None] = {}
        self._lease_hint = 30.0
        self._limit_hint = 10
        self._turn = 0

    @property
    def client(self) -> Any:
        """The boto3 SQS client, built on first use (there is no I/O before that)."""
        return self.sqs.client

    def _gone(self, r: Reservation) -> bool:
        """True when ``r`` came from a queue that was deleted since: its message is gone."""
        handle = r.handle
        return isinstance(handle, Receipt) and handle.gen < self.sqs.gens.get(handle.url, 0)

    # -- sending ----------------------------------------------------------------------
    def check_queue(self, queue: str) -> str:
        """SQS's naming rules: A-Z a-z 0-9 _ -, and 80 characters with the prefix
        and the dead-letter suffix; no FIFO (``.fifo``) queues."""
        check_queue_name(queue)
        self.config.sqs_name(queue)
        return queue

    def check_size(self, data: bytes) -> None:
        # No I/O here: .delay() checks against max_message_size from the URL; the
        # exact check against the queue's own limit happens in _enqueue, before any send.
        if len(data) > self.max_payload:
            raise PayloadTooLarge(
                f"encoded task is {len(data)} bytes ({encoded_size(data)} in SQS after "
                f"base64, attributes and the room a retry needs); this backend takes at most "
                f"{self.max_payload} (SQS max_message_size={self.config.max_message_size}, "
                f"App(max_payload=...))"
            )

    def _entry(self, task_id: str, data: bytes, run_at: float | None) -> dict[str, Any]:
        return task_entry(task_id, data, run_at, self.config.max_delay)

    def _fits(self, url: str, entry: dict[str, Any], queue: str) -> None:
        # A retry adds gatorapp.due and a dead letter its reason: keep room for them
        # now, or SQS would refuse the task on its way back, long after .delay().
        size = size_with_growth(entry)
        limit = self.sqs.limit(url)
        if size > limit:
            raise PayloadTooLarge(
                f"task is {size} bytes in SQS (base64 body, attributes and the room a retry "
                f"or dead letter adds); queue {queue!r} takes at most {limit} (its "
                f"MaximumMessageSize)"
            )

    def _enqueue(self, messages: Sequence[Message]) -> None:
        by_url: dict[str, list[dict[str, Any]]] = {}
        for m in messages:
            entry = self._entry(m.task_id, m.data, m.run_at)
            url = self.sqs.url(m.queue)
            assert url is not None
            self._fits(url, entry, m.queue)  # the whole call is refused before any send
            by_url.setdefault(url, []).append(entry)
        refused = sum(self.sqs.send(url, entries).count(False) for url, entries in by_url.items())
        if refused:
            raise BackendError(f"SQS refused {refused} of {len(messages)} task(s); see the log")

    # -- receiving --------------------------------------------------------------------
    def _visible(
        self, queue: str, url: str, n: int, lease: float, wait: int = 0
    ) -> list[Reservation]:
        """Receive, send not-yet-due messages on their next hop, lease the rest.

        A message that is not gatorapp's (no usable ``gatorapp.id``) is leased
        like a task, keyed by its SQS message id, so the worker buries it as
        undecodable; nothing in a message can make this call fail.
        """
        seconds = self._seconds(lease)
        gen = self.sqs.gens.get(url, 0)
        at = time.monotonic()  # the lease starts after this, so it ends after at + seconds
        msgs = self.sqs.receive(url, n, seconds, wait)
        now = time.time()
        early = [m for m in msgs if due(m) > now]
        if early:  # a delay longer than max_delay: next hop, then drop this copy
            entries = [self._entry(task_id(m), decode_body(m), due(m)) for m in early]
            sent = self.sqs.send(url, entries)
            self.sqs.batch(
                "delete_message_batch",
                url,
                [m["ReceiptHandle"] for m, ok in zip(early, sent) if ok],
            )
        return [
            Reservation(
                queue,
                task_id(m) or m["MessageId"],
                decode_body(m),
                m["ReceiptHandle"],
                1,  # see capabilities.delivery_count
                lease,
                Receipt(url, gen, at, seconds),
            )
            for m in msgs
            if m not in early
        ]

    @staticmethod
    def _seconds(lease: float) -> int:
        return max(1, min(MAX_VISIBILITY, math.ceil(lease)))

    def reserve(
        self, queues: Sequence[str], limit: int, lease: float, worker_id: str
    ) -> list[Reservation]:
        """What an idle :meth:`wait` received first (in queue order), then the
        queues in order; every lease handed out is fresh (see the module doc)."""
        self._lease_hint, self._limit_hint = lease, limit
        out = self._unstash(queues, limit)
        for queue in queues:
            if len(out) >= limit:
                break
            out.extend(self._reserve(queue, limit - len(out), lease, worker_id))
        return self._fresh(out, lease)

    def _reserve(self, queue: str, limit: int, lease: float, worker_id: str) -> list[Reservation]:
        url = self.sqs.url(queue)
        assert url is not None
        out: list[Reservation] = []
        # Empty short polls are spaced out: a busy worker asks every 50 ms otherwise.
        if time.monotonic() - self.sqs.empty_at.get(url, 0) > 0.2:
            for _ in range(limit // 10 + 2):
                got = self._visible(queue, url, limit - len(out), lease)
                out.extend(got)
                if not got or len(out) >= limit:
                    break
            if not out:
                self.sqs.empty_at[url] = time.monotonic()
        return out

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Long-poll one of the queues (in turn) for up to ``wait`` seconds.

        What arrives is kept, leased, for the next :meth:`reserve`, which hands
        it out first, so no message is received twice for one wake-up. What no
        reserve takes in time is handed back (visibility 0) by a timer, before
        its lease could run out.
        """
        if not queues:
            return
        queue = queues[self._turn % len(queues)]
        self._turn += 1
        url = self.sqs.url(queue)
        assert url is not None
        # At most a third of the lease: a message that arrives late in the poll is
        # leased from then, but counted from the poll's start (see _fresh).
        # The URL's wait wins over the caller's timeout: SQS long polls come in
        # whole seconds, and a user who set a longer wait chose fewer requests
        # over a faster reaction to a stop signal (docs/sqs.md).
        third = self._seconds(self._lease_hint) // 3
        seconds = max(1, min(self.config.wait, third))
        got = self._visible(queue, url, self._limit_hint, self._lease_hint, seconds)
        if got:
            with self._lock:
                self._stash.extend(got)
                self.sqs.empty_at.pop(url, None)
            self._sweep_later()

    # -- keeping leases fresh -----------------------------------------------------------
    @staticmethod
    def _age(r: Reservation, now: float) -> float:
        """How much of ``r``'s lease has passed, counted from before its receive
        was sent (1.0: it may be over)."""
        handle = receipt(r)
        return (now - handle.at) / handle.seconds

    def _fresh(self, rs: list[Reservation], lease: float) -> list[Reservation]:
        """``rs`` with at least 2/3 of a ``lease`` left each: renewed when older than
        a third of theirs, left out when older than two thirds (a renewal might land
        after the lease ran out, on a copy another consumer received since)."""
        now = time.monotonic()
        renew: list[Reservation] = []
        skip: set[int] = set()
        for r in rs:
            if self._gone(r):  # received before its queue was deleted: the message is gone
                skip.add(id(r))
            elif self._age(r, now) > 2 / 3:
                log.info(
                    "task %s on %s not handed out: its lease (%ss) may run out first; "
                    "SQS delivers it again after that",
                    r.task_id,
                    r.queue,
                    receipt(r).seconds,
                )
                skip.add(id(r))
            elif self._age(r, now) > 1 / 3 or r.lease != lease:
                renew.append(r)
        renewed: dict[int, Reservation] = {}  # (a new lease length: a new reservation)
        if renew:
            at = time.monotonic()
            fresh = [r._replace(lease=lease) for r in renew]
            try:
                held = self._extend(fresh)
            except BackendError as exc:
                log.info("could not renew %d lease(s) before handing them out: %s", len(renew), exc)
                held = [False] * len(renew)
            for old, new, ok in zip(renew, fresh, held):
                if ok:
                    handle = receipt(new)
                    handle.at, handle.seconds = at, self._seconds(lease)
                    renewed[id(old)] = new
                else:
                    skip.add(id(old))
        return [renewed.get(id(r), r) for r in rs if id(r) not in skip]

    def _unstash(self, queues: Sequence[str], limit: int) -> list[Reservation]:
        """Up to ``limit`` stashed reservations of ``queues``, in queue order; the
        rest are handed back to SQS."""
        order = {q: i for i, q in reversed(list(enumerate(queues)))}
        with self._lock:
            stash, self._stash = self._stash, []
        mine = sorted((r for r in stash if r.queue in order), key=lambda r: order[r.queue])
        self._hand_back(mine[limit:] + [r for r in stash if r.queue not in order])
        return mine[:limit]

    def _hand_back(self, rs: Sequence[Reservation]) -> None:
        """Release stashed reservations whose lease surely still lives; the others
        are left to run out (a release could land on another consumer's copy)."""
        now = time.monotonic()
        live = [r for r in rs if not self._gone(r) and self._age(r, now) < 2 / 3]
        try:
            self._release(live)
        except BackendError as exc:
            log.info("could not hand back %d received task(s): %s", len(live), exc)

    def _sweep_later(self) -> None:
        with self._lock:
            if self._sweeper is not None or not self._stash:
                return
            oldest = min((receipt(r) for r in self._stash), key=lambda h: h.at)
            delay = oldest.at + 0.6 * oldest.seconds
            self._sweeper = timer = threading.Timer(
                max(0.05, delay - time.monotonic()), self._sweep
            )
            timer.daemon = True
        timer.start()

    def _sweep(self) -> None:
        """Hand back what the stash held past 0.6 of its lease: no reserve came for it."""
        now = time.monotonic()
        with self._lock:
            self._sweeper = None
            old = [r for r in self._stash if self._age(r, now) >= 0.6 - 0.01]
            self._stash = [r for r in self._stash if self._age(r, now) < 0.6 - 0.01]
        self._hand_back(old)
        self._sweep_later()

    # -- ending leases ----------------------------------------------------------------
    def _each(
        self,
        rs: Sequence[Reservation],
        op: str,
        finish: str,
        timeout: Callable[[Reservation], int] | None = None,
    ) -> list[bool]:
        """A receipt-handle batch per queue. Leases this process already ended are
        refused (False). Those from a queue deleted since their receive are True:
        their message went with the queue, so no other worker can hold it.

        ``finish``: "after" marks the tokens that worked as ended, "before" marks
        all of them first (so a heartbeat starting now leaves them alone), "" none.
        """
        with self._lock:
            ended = [r.token in self._finished for r in rs]
        gone = [self._gone(r) for r in rs]
        keys = [None if e or g else self._url_of(r) for r, e, g in zip(rs, ended, gone)]
        if finish == "before":
            self._finish(r.token for r, key in zip(rs, keys) if key is not None)

        def run(url: str, idx: list[int]) -> list[bool]:
            timeouts = None if timeout is None else [timeout(rs[i]) for i in idx]
            return self.sqs.batch(op, url, [rs[i].token for i in idx], timeouts)

        ok = [good or g for good, g in zip(grouped(keys, run), gone)]
        if finish == "after":
            self._finish(r.token for r, good in zip(rs, ok) if good)
        return ok

    def _url_of(self, r: Reservation) -> str:
        handle = r.handle
        return handle.url if isinstance(handle, Receipt) else str(self.sqs.url(r.queue))

    def _finish(self, tokens: Iterable[str]) -> None:
        with self._lock:
            self._finished.update(dict.fromkeys(tokens))
            while len(self._finished) > 100_000:
                del self._finished[next(iter(self._finished))]

    def _ack(self, reservations: Sequence[Reservation]) -> list[bool]:
        return self._each(reservations, "delete_message_batch", "after")

    def _release(self, reservations: Sequence[Reservation]) -> list[bool]:
        # Ended before the visibility change, so a heartbeat that starts after this
        # point skips them; one already in flight can still hide a message again
        # for a lease (SQS has no compare-and-set on visibility).
        ok = self._each(reservations, "change_message_visibility_batch", "before", lambda r: 0)
        gone = [i for i, r in enumerate(reservations) if self._gone(r)]
        if gone:  # its queue was deleted, and the message with it: send the task again
            moves = [
                (
                    reservations[i],
                    str(self.sqs.url(reservations[i].queue)),
                    self._entry(reservations[i].task_id, reservations[i].data, None),
                )
                for i in gone
            ]
            for i, sent in zip(gone, self._replace(moves, "release")):
                ok[i] = sent
        return ok

    def _extend(self, reservations: Sequence[Reservation]) -> list[bool]:
        # Renews from now; SQS refuses to keep a message hidden past 12 h after its receive.
        seconds = lambda r: self._seconds(r.lease)  # noqa: E731
        return self._each(reservations, "change_message_visibility_batch", "", seconds)

    def _replace(
        self, moves: Sequence[tuple[Reservation, str, dict[str, Any]]], what: str
    ) -> list[bool]:
        """Send each new message, then delete the reserved one it replaces.

        Send first: a crash in between leaves two copies (a duplicate run),
        never none. The lease is checked (and renewed) before anything is sent.
        A message SQS refuses leaves the reserved one as it is: leased, it comes
        back after its lease. That is logged here and reported True, since the
        task is not lost and this worker is done with it (False is a lost lease).
        """
        held = self._extend([r for r, _, _ in moves])
        keys = [target if h else None for (_, target, _), h in zip(moves, held)]
        sent = grouped(keys, lambda target, idx: self.sqs.send(target, [moves[i][2] for i in idx]))
        self._ack([r for (r, _, _), ok in zip(moves, sent) if ok])
        for (r, _, _), h, ok in zip(moves, held, sent):
            if h and not ok:
                log.error(
                    "SQS refused the %s message of task %s on %s (see the warning above): the "
                    "task stays in its queue as it was and comes back after its lease (%ss)",
                    what,
                    r.task_id,
                    r.queue,
                    self._seconds(r.lease),
                )
        return held

    def _retry(self, items: Sequence[tuple[Reservation, bytes, float]]) -> list[bool]:
        moves = [
            (
                r,
                str(self.sqs.url(r.queue)) if self._gone(r) else self._url_of(r),
                self._entry(r.task_id, d, t),
            )
            for r, d, t in items
        ]
        return self._replace(moves, "retry")

    def dead_entry(
        self, url: str, task_id: str, data: bytes, reason: str, error: str
    ) -> dict[str, Any]:
        return dead_entry(task_id, data, reason, error, self.sqs.limit(url))

    def _bury(self, items: Sequence[tuple[Reservation, str, str]]) -> list[bool]:
        moves = []
        for r, reason, error in items:
            dead = str(self.sqs.url(r.queue, dead=True))
            moves.append((r, dead, self.dead_entry(dead, r.task_id, r.data, reason, error)))
        return self._replace(moves, "dead-letter")

    def clear(self, queue_name: str) -> None:
        """PurgeQueue: deletes ready, delayed and running messages (AWS allows one
        purge per queue per 60 s and may take that long to finish)."""
        url = self.sqs.url(queue_name, need=False)
        if url is None:
            return
        with self._lock:
            self._stash = [r for r in self._stash if self._url_of(r) != url]
        try:
            self.sqs.call("purge_queue", QueueUrl=url)
        except BackendError as exc:
            if "PurgeQueueInProgress" not in str(exc):
                raise

    def stop_waiting(self) -> None:
        with self._lock:
            stash, self._stash = self._stash, []
            sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
        self._hand_back(stash)

    def close(self) -> None:
        self.stop_waiting()
        self.sqs.close()

    def after_fork(self) -> None:
        # A boto3 client's connection pool is the parent's: build a new client.
        # What the parent's idle poll received is the parent's to hand out.
        self.sqs.after_fork()
        self._lock = threading.Lock()
        self._stash = []
