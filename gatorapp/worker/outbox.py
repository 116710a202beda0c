"""The outbox: finished tasks whose outcome the backend has not confirmed yet.

Outcomes gather here and go to the backend together, acknowledgements,
retries and dead letters in one call (see
:meth:`~gatorapp.backends.Backend.settle`). The worker sends them when the
outbox holds ``max_items``, when its oldest entry is ``max_age`` seconds old,
with the next reserve (one round trip for both), or at once when the worker
would otherwise wait, so a shallow queue gets no added latency.

A task stays held (its lease renewed) until its settlement is confirmed. A
send that fails keeps its entries for the next send; an entry refused after
such a failure may be our own earlier success whose reply was lost, which is
why it is reported as "not confirmed" rather than as a takeover.

This is also where each outcome is logged: a success at DEBUG (not at all
when the worker's ``result()`` is overridden: that takes its place), a retry
at WARNING with its traceback at DEBUG, a dead letter at ERROR. Each line
carries the task's fields (see :func:`~gatorapp.worker.held.fields`).
"""

from __future__ import annotations

import logging
import reprlib
import threading
import time
from collections.abc import Sequence
from typing import Any

from .. import results
from ..backends import Burial, Reservation, ResultItem, RetryItem, Settled
from ..execution import Settlement
from ..tally import Tally
from .held import Held, fields

log = logging.getLogger("gatorapp.worker")


class Batch:
    """Settlements taken from the outbox for one backend call, and the result
    records of those tasks that keep one (stored before they are settled)."""

    __slots__ = ("acks", "buries", "results", "retries")

    def __init__(
        self,
        acks: list[Reservation],
        retries: list[RetryItem],
        buries: list[Burial],
        results: list[ResultItem],
    ) -> None:
        self.acks = acks
        self.retries = retries
        self.buries = buries
        self.results = results

    def __len__(self) -> int:
        return len(self.acks) + len(self.retries) + len(self.buries)

    def reservations(self) -> list[Reservation]:
        return [*self.acks, *(i[0] for i in self.retries), *(i[0] for i in self.buries)]


class Outbox:
    """Thread-safe: executor threads add, the worker's loop takes and sends.

    :param held: the worker's held reservations (settled ones are forgotten).
    :param max_items: send once this many outcomes wait.
    :param max_age: send once the oldest outcome waited this long (seconds).
    :param keep_results: keep successful return values for ``Worker.result``.
    """

    def __init__(
        self, held: Held, *, max_items: int = 256, max_age: float = 0.01, keep_results: bool = False
    ) -> None:
        self.held = held
        self.max_items = max_items
        self.max_age = max_age
        self.keep_results = keep_results
        #: True when several threads add: adds then take the lock. A worker that
        #: runs tasks in its loop's thread adds without it (a cold stop, the one
        #: other thread, only takes and reads).
        self.shared = True
        self.lock = threading.Lock()
        self._acks: list[Reservation] = []
        self._retries: list[RetryItem] = []
        self._buries: list[Burial] = []
        self._results: list[ResultItem] = []
        #: the largest result record stored (the store's limit, if lower)
        self.result_limit = results.MAX_RECORD
        self._first = 0.0  # time.monotonic() of the oldest waiting outcome
        self._sending: Batch | None = None
        self._resent: set[int] = set()
        #: return values of successes, when ``keep_results`` (taken by the loop)
        self.results: list[Any] = []
        #: attempts finished, failed ones included (a payload that could not run
        #: and a task buried as worker_lost are not attempts)
        self.completed = 0
        self.succeeded = 0  # attempts that succeeded (the rest failed)
        #: deliveries settled per queue (acked, retried or buried), for the
        #: worker's record: a queue's rate of tasks out (see gatorapp.workers)
        self.settled: dict[str, int] = {}
        self._debug = log.isEnabledFor(logging.DEBUG)
        #: counts for metrics (None: metrics off)
        self.tally: Tally | None = None

    def __len__(self) -> int:
        return len(self._acks) + len(self._retries) + len(self._buries)

    # -- adding ----------------------------------------------------------------
    def add(self, r: Reservation, s: Settlement) -> None:
        """Record the outcome of one delivery."""
        kind = s.kind
        if self.shared:
            with self.lock:
                self._add(r, s, kind)
        else:
            self._add(r, s, kind)
        if kind == "success":
            if self._debug and not self.keep_results:
                log.debug(
                    "task %s %s succeeded in %.3f s: %s",
                    s.name,
                    s.task_id,
                    s.duration,
                    reprlib.repr(s.result),
                    extra=fields(r, s.name, s.attempt, s.duration),
                )
        elif kind == "retry":
            extra = fields(r, s.name, s.attempt, s.duration)
            log.warning(
                "task %s %s failed (attempt %d); retrying in %.1f s: %s",
                s.name,
                s.task_id,
                s.attempt,
                s.delay,
                s.summary,
                extra=extra,
            )
            if s.error and log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "task %s %s attempt %d:\n%s",
                    s.name,
                    s.task_id,
                    s.attempt,
                    s.error,
                    extra=extra,
                )
        elif s.attempt:
            log.error(
                "task %s %s to dead letters (%s) after %d attempt(s): %s",
                s.name,
                s.task_id,
                s.reason,
                s.attempt,
                s.summary,
                extra=fields(r, s.name, s.attempt, s.duration),
            )
        else:
            log.error(
                "task %s on %s to dead letters (%s): %s",
                r.task_id,
                r.queue,
                s.reason,
                s.error,
                extra=fields(r, s.name),
            )

    def _add(self, r: Reservation, s: Settlement, kind: str) -> None:
        if self.tally is not None:  # (under the lock when shared: see Tally)
            self.tally.outcome(r.queue, s)
        settled = self.settled
        settled[r.queue] = settled.get(r.queue, 0) + 1
        if not (self._acks or self._retries or self._buries):
            self._first = time.monotonic()
        if kind == "success":
            self._acks.append(r)
            self.completed += 1
            self.succeeded += 1
            if self.keep_results:
                self.results.append(s.result)
            if s.result_ttl:
                record = results.success(s.result, s.name, s.attempt, self.result_limit)
                self._results.append((r.task_id or s.task_id, record, s.result_ttl))
        elif kind == "retry":
            self._retries.append((r, s.payload or r.data, time.time() + s.delay))
            self.completed += 1
        else:
            self._buries.append((r, s.reason, s.error))
            if s.attempt:
                self.completed += 1
            if s.result_ttl:
                record = results.failure(
                    results.DEAD, s.reason, s.summary, s.error, s.name, s.attempt
                )
                self._results.append((r.task_id or s.task_id, record, s.result_ttl))

    # -- sending ---------------------------------------------------------------
    def due(self) -> bool:
        """Time to send: enough outcomes wait, or the oldest has waited long enough."""
        n = len(self._acks) + len(self._retries) + len(self._buries)
        return n > 0 and (n >= self.max_items or time.monotonic() - self._first >= self.max_age)

    def take(self) -> Batch | None:
        """Everything waiting, for one backend call (None if nothing waits)."""
        self._debug = log.isEnabledFor(logging.DEBUG)
        with self.lock:
            if not (self._acks or self._retries or self._buries):
                return None
            batch = Batch(self._acks, self._retries, self._buries, self._results)
            self._acks, self._retries, self._buries, self._results = [], [], [], []
            self._sending = batch
            return batch

    def sent(self, batch: Batch, settled: Settled) -> None:
        """The backend answered: report what it refused, forget all of it."""
        self._sending = None
        for what, items, oks in (
            ("ack", batch.acks, settled.acked),
            ("retry", [i[0] for i in batch.retries], settled.retried),
            ("bury", [i[0] for i in batch.buries], settled.buried),
        ):
            if items and not all(oks):
                self._report(what, items, oks)
        rs = batch.reservations()
        if self._resent:
            for r in rs:
                self._resent.discard(id(r))
        self.held.forget(rs)

    def unsent(self, batch: Batch) -> None:
        """The call failed: keep the batch for the next send, marked as sent once."""
        self._sending = None
        self._resent.update(id(r) for r in batch.reservations())
        with self.lock:
            if not (self._acks or self._retries or self._buries):
                self._first = time.monotonic()
            self._acks[:0] = batch.acks
            self._retries[:0] = batch.retries
            self._buries[:0] = batch.buries
            self._results[:0] = batch.results

    def pending(self) -> set[int]:
        """Identities of reservations with an outcome (waiting or being sent)."""
        with self.lock:
            keys = {id(r) for r in self._acks}
            keys.update(id(i[0]) for i in self._retries)
            keys.update(id(i[0]) for i in self._buries)
            sending = self._sending
        if sending is not None:
            keys.update(id(r) for r in sending.reservations())
        return keys

    def _report(self, what: str, rs: Sequence[Reservation], oks: Sequence[bool]) -> None:
        for r, ok in zip(rs, oks):
            if ok:
                continue
            if id(r) in self._resent:
                log.info(
                    "%s of task %s on %s not confirmed: it was done before the backend "
                    "connection broke, or the lease was taken over meanwhile",
                    what,
                    r.task_id,
                    r.queue,
                    extra=fields(r),
                )
            else:
                log.warning(
                    "%s of task %s on %s refused: its lease was taken over by another worker",
                    what,
                    r.task_id,
                    r.queue,
                    extra=fields(r),
                )
