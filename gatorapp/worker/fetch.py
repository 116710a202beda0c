"""Fetching: how many tasks a worker holds, and the one call that settles and refills.

A worker keeps a local buffer of reserved tasks. It refills the buffer when it
falls to a low-water mark, up to a high-water mark, in one backend call that
also settles the outbox (:meth:`~gatorapp.backends.Backend.settle_and_reserve`),
so a deep queue costs one round trip per batch, not two per task.

The high-water mark is ``concurrency + prefetch``. An explicit ``prefetch``
is kept as given. By default it adapts to how long tasks take: the worker
holds about :data:`WINDOW` seconds of work ahead of its threads (never more
than :data:`MAX_PREFETCH` tasks, nor more than a quarter of the lease), so
fast tasks come in large batches while slow ones are left for other workers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import tenacity

from ..backends import Backend, Reservation
from ..errors import BackendError, ConfigurationError
from ..execution import backoff_seconds
from .held import Held
from .outbox import Batch, Outbox

log = logging.getLogger("gatorapp.worker")

#: Seconds of work a worker holds ahead of its threads (adaptive prefetch).
WINDOW = 0.25
#: The most tasks held ahead of the threads, and so the largest batch.
MAX_PREFETCH = 500
#: A worker running tasks in its own thread overlaps a refill with no fewer tasks.
OVERLAP_MIN = 16
#: The share of a batch such a worker runs while its settle-and-reserve call
#: travels and Redis does its part: three quarters keep it from waiting for
#: the reply (a quarter left it waiting about a third of the time on Redis,
#: and more with results). A SIGKILL can then make up to this much more than
#: a batch run again.
OVERLAP = 0.75

RECONNECT_BACKOFF = tenacity.wait_exponential(multiplier=0.1, max=5) + tenacity.wait_random(0, 0.1)


class Fetcher:
    """The buffer's water marks, and the settle-and-reserve call.

    :param concurrency: tasks run at once.
    :param prefetch: tasks held ahead of them; None adapts (see the module).
    :param lease: the worker's lease, which bounds what it may hold ahead.
    :param refill_early: refill before the buffer is empty (threads keep
        running while the loop fetches); a worker that runs tasks in its own
        thread refills when the buffer is empty.
    :param result_store: where result records go, when not the backend.
    """

    def __init__(
        self,
        backend: Backend,
        queues: Sequence[str],
        worker_id: str,
        *,
        concurrency: int,
        prefetch: int | None,
        lease: float,
        refill_early: bool,
        result_store: Backend | None = None,
    ) -> None:
        self.backend = backend
        #: where result records go (the task backend's own call when the same)
        self.result_store = result_store or backend
        self.queues = list(queues)
        self.worker_id = worker_id
        self.lease = lease
        self.concurrency = concurrency
        self.adaptive = prefetch is None
        self.prefetch = concurrency if prefetch is None else prefetch
        self.window = min(WINDOW, lease / 4)
        self.refill_early = refill_early
        self._per_task: float | None = None  # average seconds per task (EWMA)

    @property
    def high(self) -> int:
        return self.concurrency + self.prefetch

    @property
    def low(self) -> int:
        """Refill when this few tasks are buffered or running."""
        if self.refill_early:
            return self.concurrency + self.prefetch // 2
        # A worker that runs tasks in its own thread sends the refill with
        # OVERLAP of the batch left and runs it while the call travels.
        return int(self.high * OVERLAP)

    def want(self, pending: int, budget: int | None = None) -> int:
        """How many to reserve now, with ``pending`` tasks buffered or running."""
        if pending > self.low:
            return 0
        if not self.refill_early and 0 < pending < OVERLAP_MIN:
            # A handful it runs first: the refill then settles them too, and a
            # worker fed one task at a time makes one call per task, not two.
            return 0
        # Threads keep running what is pending: top up to the high-water mark.
        # A worker running tasks itself asks for a whole batch, since it runs
        # what is left while the call travels; so it may hold up to
        # (1 + OVERLAP) batches at once (the bound docs/operations.md gives).
        n = self.high - pending if self.refill_early else self.high
        if budget is not None:
            n = min(n, budget)
        return max(0, n)

    def observe(self, tasks: int, seconds: float) -> None:
        """``tasks`` took ``seconds`` of one thread's time: adapt the prefetch."""
        if tasks <= 0 or not self.adaptive:
            return
        sample = seconds / tasks
        avg = self._per_task
        avg = sample if avg is None else 0.7 * avg + 0.3 * sample
        self._per_task = avg
        ahead = self.window * self.concurrency / avg if avg > 0 else MAX_PREFETCH
        self.prefetch = max(0, min(MAX_PREFETCH, int(ahead)))

    def exchange(self, outbox: Outbox, held: Held, want: int) -> list[Reservation]:
        """Send what the outbox holds and reserve up to ``want`` tasks, in one call.

        On failure the outbox keeps its entries (sent again next time) and the
        error propagates.
        """
        return self.begin(outbox, held, want)()

    def begin(self, outbox: Outbox, held: Held, want: int) -> Callable[[], list[Reservation]]:
        """:meth:`exchange`, started now and finished by the function returned:
        the caller may run tasks in between, while the call travels."""
        batch = outbox.take()
        if batch is None and not want:
            return list
        results = batch.results if batch else []
        try:
            if results and self.result_store is not self.backend:
                self.result_store.put_results(results)  # (first: see gatorapp.results)
                results = []
            finish = self.backend.begin_settle_and_reserve(
                batch.acks if batch else (),
                batch.retries if batch else (),
                batch.buries if batch else (),
                self.queues,
                want,
                self.lease,
                self.worker_id,
                **({"results": results} if results else {}),
            )
        except BaseException:
            if batch is not None:
                outbox.unsent(batch)
            raise

        def finished() -> list[Reservation]:
            try:
                settled, got = finish()
            except BaseException:
                if batch is not None:
                    outbox.unsent(batch)
                raise
            if batch is not None:
                outbox.sent(batch, settled)
            if log.isEnabledFor(logging.DEBUG):
                self._trace(batch, want, got)
            return self._got(held, got)

        return finished

    def _trace(self, batch: Batch | None, want: int, got: list[Reservation]) -> None:
        """What one settle-and-reserve call did, at DEBUG (once per call, never per task)."""
        if batch is not None:
            log.debug(
                "worker %s settled %d ack(s), %d retry(ies), %d dead letter(s)",
                self.worker_id,
                len(batch.acks),
                len(batch.retries),
                len(batch.buries),
            )
        if want:
            log.debug(
                "worker %s reserved %d of %d task(s) asked for on %s (prefetch %d%s)",
                self.worker_id,
                len(got),
                want,
                ",".join(self.queues),
                self.prefetch,
                ", adaptive" if self.adaptive else "",
            )

    @staticmethod
    def _got(held: Held, got: list[Reservation]) -> list[Reservation]:
        if got:
            held.add(got)
        return got


def hand_back(fetcher: Fetcher, outbox: Outbox, held: Held) -> int:
    """A cold stop: settle what has finished, then hand back everything else
    held (buffered or running), so it runs again at once elsewhere. Best effort:
    what cannot be sent comes back when its lease expires. Returns how many
    tasks were handed back."""
    # Outcomes first: a task that already finished must not be handed back to
    # run again. Then hand back only what has no outcome.
    try:
        fetcher.exchange(outbox, held, 0)
    except Exception:
        pass
    settling = outbox.pending()
    rest = [r for r in held.snapshot() if id(r) not in settling]
    try:
        fetcher.backend.release(rest)
        fetcher.backend.stop_waiting()
    except Exception:
        pass  # their leases expire instead
    return len(rest)


class Outage:
    """A backend that fails: logged once, retried with backoff until it answers."""

    def __init__(self, ident: str) -> None:
        self.ident = ident
        self.down = False
        self._since = 0.0
        self._attempts = 0

    def failed(self, what: str, exc: Exception, *, fatal: bool) -> None:
        """Note a failure; raise it instead when waiting cannot help."""
        if isinstance(exc, ConfigurationError):
            raise exc  # a bad URL or path does not heal by waiting
        if fatal:
            log.error("%s: backend %s failed: %s", self.ident, what, exc)
            raise exc
        if not self.down:
            # A BackendError says what it is; anything else (a custom client's
            # bug) gets its traceback, once per outage.
            log.error(
                "%s: backend %s failed, retrying with backoff: %s",
                self.ident,
                what,
                exc if isinstance(exc, BackendError) else f"{type(exc).__name__}: {exc}",
                exc_info=None if isinstance(exc, BackendError) else exc,
            )
            self.down = True
            self._since = time.monotonic()
            self._attempts = 0

    def ok(self) -> None:
        if self.down:
            log.warning(
                "%s: backend reachable again after %.1f s",
                self.ident,
                time.monotonic() - self._since,
            )
            self.down = False

    def backoff(self) -> float:
        """Seconds to wait before the next try (exponential with jitter, capped at 5 s)."""
        self._attempts += 1
        return backoff_seconds(RECONNECT_BACKOFF, self._attempts, BackendError())
