"""The backend contract: one suite of tests every backend runs.

The backends gatorapp ships run it (``tests/test_contract.py``), and so can a
backend written anywhere else: subclass :class:`BackendContract` in a test
module and give it the ``backend`` fixture, which yields a fresh backend and
closes it afterwards::

    import pytest
    from gatorapp.testing.contract import BackendContract

    class TestMyBackend(BackendContract):
        @pytest.fixture
        def backend(self):
            b = MyBackend("mystore://...")
            yield b
            b.close()

pytest then runs every test below against it. The tests talk to the backend
only through the public :class:`gatorapp.backends.Backend` interface.

This module needs pytest, which gatorapp itself does not depend on: install it
with your tests (``pip install pytest``, or gatorapp's ``dev`` extra).
``import gatorapp.testing`` does not import this module.

What a subclass provides
------------------------
``backend`` (required)
    A fixture yielding a new :class:`~gatorapp.backends.Backend` for each test.
    It may request other fixtures (``tmp_path``, a server's URL, ...). The
    default fails every test with a message saying to override it.
``limited_backend`` (optional)
    A backend on the same store that refuses encoded payloads over 100 bytes.
    The default sets ``max_payload = 100`` on ``backend``; override it to build
    one with your backend's own option instead.
``TICK``, ``SLOW_TICK``, ``MARGIN`` (optional class attributes)
    The lease and delay length of the timing tests in seconds (``SLOW_TICK``
    for a backend without ``subsecond_timing``) and the extra sleep past a
    deadline. Shorter values make the suite faster, longer ones more patient
    with a slow store.

Capabilities a backend lacks
----------------------------
A backend that cannot keep part of the contract says so on its class, with
the reason (see :class:`gatorapp.backends.Capabilities` for every name)::

    class SQSBackend(Backend):
        capabilities = Capabilities.lacking(take="SQS cannot remove a message by id")

Each test of such a part calls :func:`needs` and is skipped with the
backend's own reason. A backend lacking ``subsecond_timing`` runs the timing
tests with ``SLOW_TICK`` steps instead of skipping them. The tests of the
result store and the list of live workers are skipped for a backend that
keeps neither (``supports_results``, ``supports_workers``), and the
concurrency test for one that is not ``thread_safe``.

Every test uses queue names of its own (the ``q`` fixture), so a backend on a
shared server needs no cleanup between tests.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from ..backends import Backend, Message, Reservation
from ..errors import ConfigurationError, PayloadTooLarge, TaskRunning

__all__ = ["BackendContract", "ids", "needs", "put", "reserve", "results_store"]

TICK = 0.3  # lease and delay length for timing tests
SLOW_TICK = 1.0  # the same for backends without subsecond_timing
MARGIN = 0.2  # extra sleep past a deadline


def needs(backend: Backend, *caps: str) -> None:
    """Skip the test, with the backend's reason, unless it keeps every one of ``caps``."""
    for cap in caps:
        reason = backend.capabilities.reason(cap)
        if reason is not None:
            pytest.skip(f"{type(backend).__name__} lacks {cap}: {reason}")


def results_store(backend: Backend) -> None:
    """Skip the test unless the backend keeps results itself."""
    if not backend.supports_results:
        pytest.skip(f"{type(backend).__name__} keeps no results (App names another store)")


def put(backend: Backend, queue: str, *ids: str, run_at: float | None = None) -> None:
    """Enqueue tasks ``ids`` on ``queue``, each with the payload ``b"data-<id>"``."""
    backend.enqueue([Message(queue, i, f"data-{i}".encode(), run_at) for i in ids])


def reserve(
    backend: Backend, queues: str | list[str], limit: int = 10, lease: float = 30.0, who: str = "w1"
) -> list[Reservation]:
    """Lease tasks from one queue or several."""
    return backend.reserve([queues] if isinstance(queues, str) else queues, limit, lease, who)


def ids(rs: list[Reservation]) -> list[str]:
    """The task ids of reservations, in their order."""
    return [r.task_id for r in rs]


class BackendContract:
    """The contract suite; subclass it and provide the ``backend`` fixture
    (see the module's docstring). Its name does not start with ``Test``, so
    pytest collects only the subclasses."""

    #: lease and delay length of the timing tests, in seconds
    TICK: ClassVar[float] = TICK
    #: the same for a backend without ``subsecond_timing``
    SLOW_TICK: ClassVar[float] = SLOW_TICK
    #: extra sleep past a deadline, in seconds
    MARGIN: ClassVar[float] = MARGIN

    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        """The backend under test: override this fixture in your subclass."""
        pytest.fail(
            f"{type(self).__name__} must provide the backend under test: override the "
            "'backend' fixture (a method decorated with @pytest.fixture that yields "
            "a new Backend and closes it afterwards); see gatorapp.testing.contract",
            pytrace=False,
        )

    @pytest.fixture
    def limited_backend(self, backend: Backend) -> Iterator[Backend]:
        """The backend under test, refusing encoded payloads over 100 bytes.
        Override it to build the backend with your own size option."""
        backend.max_payload = 100
        yield backend

    @pytest.fixture
    def q(self) -> str:
        """A queue name no other test uses."""
        return f"contract-{uuid.uuid4().hex[:10]}"

    def tick(self, backend: Backend) -> float:
        """The timing tests' lease and delay length for ``backend``."""
        return self.SLOW_TICK if not backend.capabilities.subsecond_timing else self.TICK

    # -- enqueue and reserve -----------------------------------------------------------------------

    def test_enqueue_then_reserve(self, backend: Backend, q: str) -> None:
        backend.enqueue([Message(q, "t1", b"payload")])
        (r,) = reserve(backend, q)
        assert (r.queue, r.task_id, r.data) == (q, "t1", b"payload")
        assert isinstance(r.token, str) and r.token
        assert r.deliveries == 1
        assert reserve(backend, q) == []  # leased: nobody else gets it

    @pytest.mark.parametrize(
        "message, says",
        [
            (("t1", "a str"), "payload must be bytes"),
            (("t1", 1.5), "payload must be bytes"),
            (("", b"x"), "task id must be a non-empty string"),
        ],
    )
    def test_enqueue_refuses_what_no_worker_could_run(
        self, backend: Backend, q: str, message: tuple[str, Any], says: str
    ) -> None:
        task_id, data = message
        with pytest.raises(ConfigurationError, match=says):
            backend.enqueue([Message(q, "ok", b"x"), Message(q, task_id, data)])
        with pytest.raises(ConfigurationError, match=says):
            backend.push(q, task_id, data)
        assert reserve(backend, q) == []  # nothing of the call was stored

    def test_reserve_empty_and_unknown_queue(self, backend: Backend, q: str) -> None:
        assert reserve(backend, q) == []
        assert backend.ack([]) == []
        assert backend.retry([]) == []
        assert backend.release([]) == []
        assert backend.extend([]) == []
        assert backend.bury([]) == []

    def test_binary_payload_round_trips(self, backend: Backend, q: str) -> None:
        # Compressed or msgpack payloads are arbitrary bytes, not text.
        data = bytes(range(256)) + b"\x00\xff\xfe" + "é".encode()
        backend.enqueue([Message(q, "bin", data)])
        (r,) = reserve(backend, q)
        assert r.data == data and isinstance(r.data, bytes)

    def test_enqueue_of_a_running_id_as_another_task_is_refused(
        self, backend: Backend, q: str
    ) -> None:
        # Dropping it would lose the new task (its new arguments) without a word.
        needs(backend, "idempotent_enqueue")
        backend.enqueue([Message(q, "t1", b"first")])
        (r,) = reserve(backend, q)
        backend.enqueue([Message(q, "t1", b"first")])  # the same call again: nothing changes
        with pytest.raises(TaskRunning, match=r"'t1' on queue .* is running now"):
            backend.enqueue([Message(q, "other", b"x"), Message(q, "t1", b"second")])
        with pytest.raises(TaskRunning):
            backend.enqueue([Message(q, "t1", b"second")])
        assert reserve(backend, q) == []  # nothing of the refused calls was stored
        assert backend.ack([r]) == [True]
        backend.enqueue([Message(q, "t1", b"second")])  # finished: the id is free again
        assert [x.data for x in reserve(backend, q)] == [b"second"]

    def test_enqueue_is_idempotent_by_queue_and_id(self, backend: Backend, q: str) -> None:
        needs(backend, "idempotent_enqueue")
        backend.enqueue([Message(q, "same", b"first")])
        backend.enqueue([Message(q, "same", b"second")])
        backend.enqueue([Message(q, "same", b"third"), Message(q, "other", b"x")])
        got = reserve(backend, q)
        assert sorted(ids(got)) == ["other", "same"]
        assert next(r.data for r in got if r.task_id == "same") == b"first"
        # While it runs, the same task again changes nothing (another one is
        # refused: see the test below).
        backend.enqueue([Message(q, "same", b"first")])
        assert reserve(backend, q) == []
        # Once acknowledged, the id is free again.
        assert backend.ack(got) == [True, True]
        backend.enqueue([Message(q, "same", b"fifth")])
        (again,) = reserve(backend, q)
        assert again.data == b"fifth"

    def test_reserve_limit_and_fifo_order(self, backend: Backend, q: str) -> None:
        needs(backend, "fifo")
        names = [f"t{i:02d}" for i in range(12)]
        put(backend, q, *names[:6])  # one batch
        for name in names[6:]:  # and one call each
            put(backend, q, name)
        first = reserve(backend, q, limit=5)
        assert ids(first) == names[:5]
        assert ids(reserve(backend, q, limit=1)) == names[5:6]
        assert ids(reserve(backend, q, limit=100)) == names[6:]

    def test_order_is_due_time_then_enqueue_order(self, backend: Backend, q: str) -> None:
        needs(backend, "fifo")
        now = time.time()
        put(backend, q, "a", "b")  # due now
        put(backend, q, "late", run_at=now - 5)  # due earlier than a and b
        put(backend, q, "later", run_at=now - 1)
        put(backend, q, "earliest", run_at=now - 10)
        assert ids(reserve(backend, q)) == ["earliest", "late", "later", "a", "b"]

    def test_queue_priority_across_queues(self, backend: Backend, q: str) -> None:
        needs(backend, "fifo")
        high, low = q + "-high", q + "-low"
        put(backend, low, "l1", "l2", "l3")
        put(backend, high, "h1", "h2")
        got = reserve(backend, [high, low], limit=3)
        assert [(r.queue, r.task_id) for r in got] == [(high, "h1"), (high, "h2"), (low, "l1")]
        got = reserve(backend, [high, low], limit=10)
        assert [(r.queue, r.task_id) for r in got] == [(low, "l2"), (low, "l3")]

    def test_earlier_queue_first_without_fifo(self, backend: Backend, q: str) -> None:
        high, low = q + "-high", q + "-low"
        put(backend, low, "l1", "l2")
        put(backend, high, "h1")
        got = reserve(backend, [high, low], limit=2)
        assert got[0].queue == high and got[1].queue == low

    def test_queues_are_isolated(self, backend: Backend, q: str) -> None:
        qa, qb = q + "-a", q + "-b"
        backend.enqueue([Message(qa, "same", b"in-a"), Message(qb, "same", b"in-b")])
        (ra,) = reserve(backend, qa)
        assert ra.data == b"in-a"
        assert backend.ack([ra]) == [True]
        (rb,) = reserve(backend, qb)
        assert (rb.queue, rb.data) == (qb, b"in-b")
        assert backend.ack([rb]) == [True]

    def test_queues_are_isolated_for_take_and_drop(self, backend: Backend, q: str) -> None:
        needs(backend, "take", "exact_stats")
        qa, qb = q + "-a", q + "-b"
        backend.enqueue([Message(qa, "same", b"in-a"), Message(qb, "same", b"in-b")])
        assert backend.take(qa, "same") == b"in-a"
        assert backend.take(qa, "same") is None
        assert backend.len(qb) == 1
        backend.drop_all(qb)
        assert backend.len(qb) == 0
        backend.enqueue([Message(qa, "x", b"x")])
        assert backend.len(qa) == 1

    def test_payload_size_limit(self, limited_backend: Backend, q: str) -> None:
        b = limited_backend
        with pytest.raises(PayloadTooLarge):
            b.enqueue([Message(q, "ok", b"x" * 10), Message(q, "big", b"x" * 101)])
        # The batch was refused as a whole.
        assert reserve(b, q) == []
        b.enqueue([Message(q, "ok", b"x" * 100)])
        assert ids(reserve(b, q)) == ["ok"]

    # -- ack and leases ----------------------------------------------------------------------------

    def test_ack_deletes(self, backend: Backend, q: str) -> None:
        put(backend, q, "a", "b", "c")
        got = reserve(backend, q)
        assert backend.ack(got) == [True, True, True]
        assert backend.ack(got) == [False, False, False]  # already gone
        assert reserve(backend, q) == []

    def test_ack_batch_reports_each_task(self, backend: Backend, q: str) -> None:
        needs(backend, "stale_token")
        put(backend, q, "a", "b")
        ra, rb = reserve(backend, q)
        assert backend.ack([ra]) == [True]
        assert backend.ack([ra, rb]) == [False, True]

    def test_stale_token_is_refused(self, backend: Backend, q: str) -> None:
        needs(backend, "stale_token")
        t = self.tick(backend)
        put(backend, q, "a")
        (old,) = reserve(backend, q, lease=t, who="w1")
        time.sleep(t + self.MARGIN)
        (new,) = reserve(backend, q, lease=30, who="w2")  # takes over the expired lease
        assert new.token != old.token
        assert backend.extend([old]) == [False]
        assert backend.ack([old]) == [False]
        assert backend.retry([(old, b"nope", time.time())]) == [False]
        assert backend.bury([(old, "failed", "boom")]) == [False]
        assert backend.release([old]) == [False]
        assert backend.dead_get(q, "a") is None
        assert backend.ack([new]) == [True]
        assert reserve(backend, q) == []

    def test_ack_after_expiry_before_takeover_is_accepted(self, backend: Backend, q: str) -> None:
        t = self.tick(backend)
        put(backend, q, "a")
        (r,) = reserve(backend, q, lease=t)
        time.sleep(t + self.MARGIN)
        assert backend.ack([r]) == [True]
        assert reserve(backend, q) == []

    def test_lease_expiry_makes_task_reservable_again(self, backend: Backend, q: str) -> None:
        t = self.tick(backend)
        put(backend, q, "a")
        (r1,) = reserve(backend, q, lease=t, who="w1")
        assert reserve(backend, q, who="w2") == []
        time.sleep(t + self.MARGIN)
        (r2,) = reserve(backend, q, lease=t, who="w2")
        assert (r2.task_id, r2.data) == ("a", b"data-a")
        if backend.capabilities.delivery_count:
            assert (r1.deliveries, r2.deliveries) == (1, 2)
        assert backend.ack([r2]) == [True]

    def test_lease_expiry_keeps_the_task_in_its_place(self, backend: Backend, q: str) -> None:
        needs(backend, "fifo")
        t = self.tick(backend)
        put(backend, q, "a", "b")
        reserve(backend, q, limit=1, lease=t)
        time.sleep(t + self.MARGIN)
        assert ids(reserve(backend, q)) == ["a", "b"]

    def test_extend_keeps_task_from_being_taken(self, backend: Backend, q: str) -> None:
        t = self.tick(backend)
        put(backend, q, "a")
        (r,) = reserve(backend, q, lease=t, who="w1")
        assert r.lease == t
        deadline = time.time() + 2.5 * t
        while time.time() < deadline:
            time.sleep(t / 3)
            assert backend.extend([r]) == [True]
            assert reserve(backend, q, who="w2") == []
        assert backend.ack([r]) == [True]

    def test_extend_uses_each_reservations_lease(self, backend: Backend, q: str) -> None:
        t = self.tick(backend)
        put(backend, q, "a")
        (r,) = reserve(backend, q, lease=t)
        # A task with a longer lease than the worker's default.
        r = dataclasses.replace(r, lease=30.0)
        assert backend.extend([r]) == [True]
        time.sleep(t + self.MARGIN)
        assert reserve(backend, q, who="w2") == []

    # -- retry, release, bury ----------------------------------------------------------------------

    def test_retry_with_new_payload_and_delay(self, backend: Backend, q: str) -> None:
        t = self.tick(backend)
        put(backend, q, "a")
        (r,) = reserve(backend, q)
        assert backend.retry([(r, b"new-payload", time.time() + t)]) == [True]
        assert reserve(backend, q) == []  # not due yet
        if backend.capabilities.exact_stats:
            s = backend.stats(q)
            assert (s.ready, s.delayed, s.running) == (0, 1, 0)
        time.sleep(t + self.MARGIN)
        (again,) = reserve(backend, q)
        assert (again.task_id, again.data) == ("a", b"new-payload")
        if backend.capabilities.delivery_count:
            assert again.deliveries == 1
        if backend.capabilities.stale_token:
            assert backend.ack([r]) == [False]  # the first lease ended with the retry
        assert backend.ack([again]) == [True]

    def test_retry_resets_deliveries(self, backend: Backend, q: str) -> None:
        needs(backend, "delivery_count")
        t = self.tick(backend)
        put(backend, q, "a")
        reserve(backend, q, lease=t)
        time.sleep(t + self.MARGIN)
        (r,) = reserve(backend, q, lease=30)
        assert r.deliveries == 2
        assert backend.retry([(r, b"again", time.time())]) == [True]
        (r2,) = reserve(backend, q)
        assert (r2.data, r2.deliveries) == (b"again", 1)

    def test_retry_due_now_is_ready_at_once(self, backend: Backend, q: str) -> None:
        put(backend, q, "a")
        (r,) = reserve(backend, q)
        assert backend.retry([(r, b"v2", time.time())]) == [True]
        (r2,) = reserve(backend, q)
        assert r2.data == b"v2"
        if backend.capabilities.stale_token:
            assert backend.ack([r]) == [False]
        assert backend.ack([r2]) == [True]

    def test_release_gives_back_without_counting(self, backend: Backend, q: str) -> None:
        put(backend, q, "a", "b")
        got = reserve(backend, q)
        assert backend.release(got) == [True, True]
        assert backend.release(got) == [False, False]  # not held any more
        again = reserve(backend, q)
        assert sorted(ids(again)) == ["a", "b"]
        if backend.capabilities.delivery_count:
            assert [r.deliveries for r in again] == [1, 1]
        if backend.capabilities.fifo:
            assert ids(again) == ["a", "b"]  # kept their place

    def test_release_keeps_place_ahead_of_later_tasks(self, backend: Backend, q: str) -> None:
        needs(backend, "fifo")
        put(backend, q, "a")
        got = reserve(backend, q)
        put(backend, q, "b")
        backend.release(got)
        assert ids(reserve(backend, q)) == ["a", "b"]

    def test_bury_and_dead_letters(self, backend: Backend, q: str) -> None:
        put(backend, q, "a", "b")
        ra, rb = sorted(reserve(backend, q), key=lambda r: r.task_id)
        assert backend.bury([(ra, "retries_exhausted", "Traceback: boom")]) == [True]
        assert reserve(backend, q) == []  # gone from the queue
        letter = backend.dead_get(q, "a")
        assert letter is not None
        assert (letter.queue, letter.task_id, letter.data) == (q, "a", b"data-a")
        assert (letter.reason, letter.error) == ("retries_exhausted", "Traceback: boom")
        assert letter.failed_at == pytest.approx(time.time(), abs=60)
        assert backend.bury([(rb, "decode_error", "bad bytes")]) == [True]
        assert sorted(d.task_id for d in backend.dead_list(q)) == ["a", "b"]
        assert backend.dead_get(q, "nope") is None
        assert backend.dead_get(q + "-other", "a") is None
        assert backend.dead_list(q + "-other") == []
        assert len(backend.dead_list(q, limit=1)) == 1

    def test_bury_after_ack_is_refused(self, backend: Backend, q: str) -> None:
        put(backend, q, "a")
        (r,) = reserve(backend, q)
        assert backend.ack([r]) == [True]
        assert backend.bury([(r, "x", "y")]) == [False]
        assert backend.dead_get(q, "a") is None

    def test_dead_requeue(self, backend: Backend, q: str) -> None:
        put(backend, q, "a", "b")
        got = reserve(backend, q)
        backend.bury([(r, "failed", "err") for r in got])
        # Payload kept.
        assert backend.dead_requeue(q, "a") is True
        assert backend.dead_get(q, "a") is None
        assert backend.dead_requeue(q, "a") is False  # not dead any more
        # Payload replaced.
        assert backend.dead_requeue(q, "b", b"fresh") is True
        requeued = {r.task_id: r.data for r in reserve(backend, q)}
        assert requeued == {"a": b"data-a", "b": b"fresh"}
        assert backend.dead_requeue(q, "unknown") is False
        assert backend.dead_list(q) == []

    def test_dead_requeue_is_ready_now_even_if_it_was_delayed(
        self, backend: Backend, q: str
    ) -> None:
        put(backend, q, "a", run_at=time.time() - 1)
        (r,) = reserve(backend, q)
        backend.bury([(r, "failed", "err")])
        assert backend.dead_requeue(q, "a") is True
        assert ids(reserve(backend, q)) == ["a"]

    def test_dead_requeue_keeps_letter_when_id_is_queued_again(
        self, backend: Backend, q: str
    ) -> None:
        needs(backend, "idempotent_enqueue")
        put(backend, q, "a")
        (r,) = reserve(backend, q)
        backend.bury([(r, "failed", "err")])
        backend.enqueue([Message(q, "a", b"newer")])
        # Atomic: either moved or left as it was, never both or neither.
        assert backend.dead_requeue(q, "a") is False
        assert backend.dead_get(q, "a") is not None
        (again,) = reserve(backend, q)
        assert again.data == b"newer"

    def test_dead_purge(self, backend: Backend, q: str) -> None:
        put(backend, q, "a", "b", "c")
        backend.bury([(r, "failed", "err") for r in reserve(backend, q)])
        backend.dead_add(q + "-other", "x", b"x", "decode_error", "bad")
        assert backend.dead_purge(q) == 3
        assert backend.dead_list(q) == []
        assert backend.dead_purge(q) == 0
        assert backend.dead_get(q + "-other", "x") is not None

    def test_dead_add(self, backend: Backend, q: str) -> None:
        backend.dead_add(q, "never-reserved", b"\x00raw", "decode_error", "not msgpack")
        letter = backend.dead_get(q, "never-reserved")
        assert letter is not None
        assert (letter.data, letter.reason, letter.error) == (
            b"\x00raw",
            "decode_error",
            "not msgpack",
        )
        assert [d.task_id for d in backend.dead_list(q)] == ["never-reserved"]
        assert reserve(backend, q) == []
        assert backend.dead_requeue(q, "never-reserved") is True
        assert ids(reserve(backend, q)) == ["never-reserved"]

    def test_long_error_text_is_kept_or_truncated(self, backend: Backend, q: str) -> None:
        backend.dead_add(q, "a", b"x", "failed", "E" * 100_000)
        letter = backend.dead_get(q, "a")
        assert letter is not None and letter.error.startswith("EEE")

    # -- delays ------------------------------------------------------------------------------------

    def test_delayed_task_waits_until_due(self, backend: Backend, q: str) -> None:
        t = self.tick(backend)
        put(backend, q, "later", run_at=time.time() + t)
        assert reserve(backend, q) == []
        time.sleep(t + self.MARGIN)
        assert ids(reserve(backend, q)) == ["later"]

    def test_delayed_task_never_blocks_ready_ones(self, backend: Backend, q: str) -> None:
        t = self.tick(backend)
        put(backend, q, "far", run_at=time.time() + 3600)
        put(backend, q, "soon", run_at=time.time() + t)
        put(backend, q, "now1", "now2")
        assert sorted(ids(reserve(backend, q, limit=10))) == ["now1", "now2"]
        time.sleep(t + self.MARGIN)
        assert ids(reserve(backend, q, limit=10)) == ["soon"]
        assert reserve(backend, q) == []

    def test_run_at_in_the_past_is_ready(self, backend: Backend, q: str) -> None:
        put(backend, q, "past", run_at=time.time() - 3600)
        assert ids(reserve(backend, q)) == ["past"]

    def test_wait_returns(self, backend: Backend, q: str) -> None:
        started = time.time()
        backend.wait([q], 0.2)
        assert time.time() - started < 2
        put(backend, q, "a")
        started = time.time()
        backend.wait([q], 5)
        assert time.time() - started < 2  # a ready task ends the wait early

    # -- take --------------------------------------------------------------------------------------

    def test_take_removes_a_waiting_task(self, backend: Backend, q: str) -> None:
        needs(backend, "take")
        put(backend, q, "a", "b")
        put(backend, q, "delayed", run_at=time.time() + 3600)
        assert backend.take(q, "a") == b"data-a"
        assert backend.take(q, "a") is None
        assert backend.take(q, "delayed") == b"data-delayed"
        assert backend.take(q, "unknown") is None
        assert backend.take(q + "-other", "b") is None
        assert ids(reserve(backend, q)) == ["b"]

    def test_take_refuses_a_running_task(self, backend: Backend, q: str) -> None:
        needs(backend, "take")
        put(backend, q, "a")
        (r,) = reserve(backend, q)
        assert backend.take(q, "a") is None
        assert backend.ack([r]) == [True]  # still held by its worker

    def test_take_of_expired_lease(self, backend: Backend, q: str) -> None:
        needs(backend, "take", "stale_token")
        t = self.tick(backend)
        put(backend, q, "a")
        (r,) = reserve(backend, q, lease=t)
        time.sleep(t + self.MARGIN)
        # Its worker is presumed dead: the task is waiting again.
        assert backend.take(q, "a") == b"data-a"
        assert backend.ack([r]) == [False]

    # -- stats and introspection -------------------------------------------------------------------

    def test_stats_counts(self, backend: Backend, q: str) -> None:
        needs(backend, "exact_stats")
        s = backend.stats(q)
        assert (s.ready, s.delayed, s.running, s.dead) == (0, 0, 0, 0)
        put(backend, q, "r1", "r2", "r3", "run1", "dead1")
        put(backend, q, "d1", "d2", run_at=time.time() + 3600)
        # reserve in FIFO order would take r1 first; pick by id to be order-agnostic
        got = {r.task_id: r for r in reserve(backend, q, limit=10)}
        backend.release(
            [r for i, r in got.items() if i.startswith("r") and not i.startswith("run")]
        )
        backend.bury([(got["dead1"], "failed", "err")])
        s = backend.stats(q)
        assert (s.ready, s.delayed, s.running, s.dead) == (3, 2, 1, 1)
        assert backend.len(q) == 5  # waiting: ready and delayed, not running
        assert backend.stats(q + "-other").ready == 0

    def test_stats_after_lease_expiry(self, backend: Backend, q: str) -> None:
        needs(backend, "exact_stats")
        t = self.tick(backend)
        put(backend, q, "a")
        reserve(backend, q, lease=t)
        assert backend.stats(q).running == 1
        time.sleep(t + self.MARGIN)
        s = backend.stats(q)
        assert (s.ready, s.running) == (1, 0)

    def test_stats_tell_when_the_oldest_ready_task_became_due(
        self, backend: Backend, q: str
    ) -> None:
        needs(backend, "exact_stats")
        if not backend.capabilities.oldest:
            assert backend.stats(q).oldest is None
            return
        assert backend.stats(q).oldest is None
        before = time.time()
        put(backend, q, "late", run_at=before - 60)
        put(backend, q, "now")
        put(backend, q, "later", run_at=before + 3600)
        oldest = backend.stats(q).oldest
        assert oldest is not None and abs(oldest - (before - 60)) < 1
        got = reserve(backend, q, limit=1)
        assert [r.task_id for r in got] == ["late"]
        oldest = backend.stats(q).oldest
        assert oldest is not None and before - 1 < oldest <= time.time()
        backend.ack(got + reserve(backend, q, limit=1))
        assert backend.stats(q).oldest is None  # (the delayed task is not ready)

    def test_known_queues(self, backend: Backend, q: str) -> None:
        needs(backend, "known_queues")
        put(backend, q + "-tasks", "a")
        put(backend, q + "-delayed", "a", run_at=time.time() + 3600)
        backend.dead_add(q + "-dead", "x", b"x", "failed", "err")
        known = backend.known_queues()
        assert {q + "-tasks", q + "-delayed", q + "-dead"} <= set(known)
        assert all(isinstance(name, str) for name in known)

    # -- the five methods of Alligator's client protocol -------------------------------------------

    def test_seed_len_push_pop(self, backend: Backend, q: str) -> None:
        needs(backend, "exact_stats")
        assert backend.len(q) == 0
        assert backend.pop(q) is None
        assert backend.push(q, "t1", b"one") == "t1"
        assert backend.push(q, "t2", b"two") == "t2"
        assert backend.push(q, "t3", b"three", delay_until=time.time() + 3600) == "t3"
        assert backend.len(q) == 3
        first = backend.pop(q)
        second = backend.pop(q)
        assert {first, second} == {b"one", b"two"}
        if backend.capabilities.fifo:
            assert (first, second) == (b"one", b"two")
        assert backend.pop(q) is None  # t3 is not due
        assert backend.len(q) == 1

    def test_seed_pop_removes_for_good(self, backend: Backend, q: str) -> None:
        backend.push(q, "t1", b"one")
        assert backend.pop(q) == b"one"
        assert backend.pop(q) is None
        assert reserve(backend, q) == []

    def test_seed_push_delay_until(self, backend: Backend, q: str) -> None:
        t = self.tick(backend)
        backend.push(q, "t1", b"one", delay_until=time.time() + t)
        assert backend.pop(q) is None
        time.sleep(t + self.MARGIN)
        assert backend.pop(q) == b"one"

    def test_seed_get(self, backend: Backend, q: str) -> None:
        needs(backend, "take")
        backend.push(q, "t1", b"one")
        backend.push(q, "t2", b"two")
        assert backend.get(q, "t2") == b"two"
        assert backend.get(q, "t2") is None
        assert backend.get(q, "missing") is None
        assert backend.pop(q) == b"one"

    def test_seed_drop_all(self, backend: Backend, q: str) -> None:
        needs(backend, "exact_stats")
        other = q + "-other"
        backend.push(q, "t1", b"one")
        backend.push(q, "t2", b"two", delay_until=time.time() + 3600)
        backend.push(other, "t1", b"other")
        backend.dead_add(q, "dead", b"d", "failed", "err")
        backend.drop_all(q)
        assert backend.len(q) == 0
        assert backend.pop(q) is None
        assert backend.len(other) == 1  # other queues untouched
        assert backend.dead_get(q, "dead") is not None  # dead letters stay
        backend.drop_all(q + "-never-used")  # no error

    # -- concurrency -------------------------------------------------------------------------------

    def test_concurrent_reserves_never_share_a_task(self, backend: Backend, q: str) -> None:
        needs(backend, "exclusive_reserve")
        if not backend.thread_safe:
            pytest.skip(f"{type(backend).__name__} is not thread-safe")
        n = 200
        backend.enqueue([Message(q, f"t{i}", b"x") for i in range(n)])
        seen: list[str] = []
        lock = threading.Lock()

        def consume(who: str) -> None:
            while True:
                got = reserve(backend, q, limit=7, who=who)
                if not got:
                    return
                assert all(backend.ack(got))
                with lock:
                    seen.extend(ids(got))

        threads = [threading.Thread(target=consume, args=(f"w{i}",)) for i in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        assert sorted(seen) == sorted(f"t{i}" for i in range(n))

    def test_a_second_dead_letter_of_an_id_keeps_the_first(self, backend: Backend, q: str) -> None:
        # A task id that dies twice (requeued by hand, or enqueued again) keeps
        # both letters: the first one's payload and error are not overwritten.
        backend.dead_add(q, "t1", b"first", "retries_exhausted", "error one")
        time.sleep(self.tick(backend))
        backend.dead_add(q, "t1", b"second", "unknown_task", "error two")
        time.sleep(self.tick(backend))
        backend.dead_add(q, "t2", b"other", "decode_error", "error three")
        letters = backend.dead_list(q)
        assert [(d.task_id, d.data, d.error) for d in letters] == [
            ("t1", b"first", "error one"),
            ("t1", b"second", "error two"),
            ("t2", b"other", "error three"),
        ]
        newest = backend.dead_get(q, "t1")
        assert newest is not None and newest.data == b"second"
        assert backend.stats(q).dead == 3 or backend.capabilities.reason("exact_stats")
        # Requeue takes the newest; the earlier one stays, and is the newest now.
        assert backend.dead_requeue(q, "t1")
        (r,) = reserve(backend, q)
        assert r.data == b"second"
        left = backend.dead_get(q, "t1")
        assert left is not None and (left.data, left.error) == (b"first", "error one")
        assert backend.ack([r]) == [True]
        assert backend.dead_requeue(q, "t1")
        (r,) = reserve(backend, q)
        assert r.data == b"first" and backend.dead_get(q, "t1") is None
        assert backend.ack([r]) == [True]
        assert backend.dead_purge(q) == 1
        assert backend.dead_list(q) == []

    def test_dead_purge_of_one_id_deletes_its_letters_only(self, backend: Backend, q: str) -> None:
        backend.dead_add(q, "t1", b"first", "retries_exhausted", "error one")
        time.sleep(self.tick(backend))
        backend.dead_add(q, "t1", b"second", "unknown_task", "error two")
        time.sleep(self.tick(backend))
        backend.dead_add(q, "t2", b"other", "decode_error", "error three")
        backend.dead_add(q + "-other", "t1", b"elsewhere", "decode_error", "error four")
        assert backend.dead_purge(q, "t1") == 2
        assert [d.task_id for d in backend.dead_list(q)] == ["t2"]
        assert backend.dead_get(q, "t1") is None
        assert backend.dead_purge(q, "t1") == 0
        assert backend.dead_purge(q, "unknown") == 0
        assert backend.dead_get(q + "-other", "t1") is not None
        # A letter of the id that comes later is stored as usual.
        backend.dead_add(q, "t1", b"third", "decode_error", "error five")
        letter = backend.dead_get(q, "t1")
        assert letter is not None and letter.data == b"third"
        assert backend.dead_purge(q) == 2

    # -- live workers (backends with supports_workers; see gatorapp.workers) -----------------------
    def test_workers_are_listed_replaced_removed_and_expire(self, backend: Backend) -> None:
        if not backend.supports_workers:
            pytest.skip(f"{type(backend).__name__} keeps no list of workers")
        a, b = f"w-{uuid.uuid4().hex}", f"w-{uuid.uuid4().hex}"
        backend.put_worker(a, a.encode() + b"-1", 60.0)
        backend.put_worker(b, b.encode(), self.TICK)
        listed = set(backend.list_workers())
        assert {a.encode() + b"-1", b.encode()} <= listed
        backend.put_worker(a, a.encode() + b"-2", 60.0)  # a heartbeat replaces the record
        time.sleep(self.TICK + self.MARGIN)
        listed = set(backend.list_workers())
        assert a.encode() + b"-2" in listed and a.encode() + b"-1" not in listed
        assert b.encode() not in listed  # its heartbeat stopped: gone by itself
        backend.remove_worker(a)
        assert a.encode() + b"-2" not in backend.list_workers()

    # -- results (backends with supports_results; see gatorapp.results) ----------------------------
    def test_results_are_stored_read_again_replaced_and_forgotten(self, backend: Backend) -> None:
        results_store(backend)
        a, b = f"r-{uuid.uuid4().hex}", f"r-{uuid.uuid4().hex}"
        assert backend.get_result(a) is None
        backend.put_results([(a, b"one", 60.0), (b, b"two", 60.0)])
        assert backend.get_result(a) == b"one"
        assert backend.get_result(a) == b"one"  # reading deletes nothing
        backend.put_results([(a, b"again", 60.0)])
        assert backend.get_result(a) == b"again"
        backend.forget_result(a)
        assert backend.get_result(a) is None and backend.get_result(b) == b"two"

    def test_results_expire(self, backend: Backend) -> None:
        results_store(backend)
        task_id = f"r-{uuid.uuid4().hex}"
        backend.put_results([(task_id, b"soon gone", self.TICK)])
        assert backend.get_result(task_id) == b"soon gone"
        time.sleep(self.TICK + self.MARGIN)
        assert backend.get_result(task_id) is None

    def test_wait_result_wakes_when_a_result_is_stored(self, backend: Backend) -> None:
        results_store(backend)
        task_id = f"r-{uuid.uuid4().hex}"
        t0 = time.monotonic()
        assert backend.wait_result(task_id, 0.2) is None
        assert time.monotonic() - t0 >= 0.2
        timer = threading.Timer(0.3, backend.put_results, [[(task_id, b"done", 60.0)]])
        timer.start()
        try:
            assert backend.wait_result(task_id, 10) == b"done"
        finally:
            timer.join()

    def test_locate_says_where_a_task_is(self, backend: Backend, q: str) -> None:
        results_store(backend)
        put(backend, q, "now")
        put(backend, q, "later", run_at=time.time() + 3600)
        assert backend.locate(q, "now") == ("ready", b"data-now")
        assert backend.locate(q, "later") == ("delayed", b"data-later")
        (r,) = reserve(backend, q)
        assert backend.locate(q, "now") == ("running", b"data-now")
        backend.ack([r])
        assert backend.locate(q, "now") is None
        assert backend.locate(q, "never") is None
