"""The backend contract, delivery: enqueue, reserve, leases, settlements,
delays and concurrent reserves (see :mod:`gatorapp.testing.contract`)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from ..backends import Message
from ..backends.protocols import DeadLetterAdmin, QueueAdmin
from ..errors import ConfigurationError, PayloadTooLarge, TaskRunning
from .support import (
    ContractBase,
    Full,
    ids,
    needs,
    needs_protocol,
    put,
    reserve,
)


class DeliveryContract(ContractBase):
    """The tests of the delivery contract every backend keeps."""

    def test_enqueue_then_reserve(self, backend: Full, q: str) -> None:
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
        self, backend: Full, q: str, message: tuple[str, Any], says: str
    ) -> None:
        task_id, data = message
        with pytest.raises(ConfigurationError, match=says):
            backend.enqueue([Message(q, "ok", b"x"), Message(q, task_id, data)])
        with pytest.raises(ConfigurationError, match=says):
            backend.push(q, task_id, data)
        assert reserve(backend, q) == []  # nothing of the call was stored

    def test_reserve_empty_and_unknown_queue(self, backend: Full, q: str) -> None:
        assert reserve(backend, q) == []
        assert backend.ack([]) == []
        assert backend.retry([]) == []
        assert backend.release([]) == []
        assert backend.extend([]) == []
        assert backend.bury([]) == []

    def test_binary_payload_round_trips(self, backend: Full, q: str) -> None:
        # Compressed or msgpack payloads are arbitrary bytes, not text.
        data = bytes(range(256)) + b"\x00\xff\xfe" + "é".encode()
        backend.enqueue([Message(q, "bin", data)])
        (r,) = reserve(backend, q)
        assert r.data == data and isinstance(r.data, bytes)

    def test_enqueue_of_a_running_id_as_another_task_is_refused(
        self, backend: Full, q: str
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

    def test_enqueue_is_idempotent_by_queue_and_id(self, backend: Full, q: str) -> None:
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

    def test_reserve_limit_and_fifo_order(self, backend: Full, q: str) -> None:
        needs(backend, "fifo")
        names = [f"t{i:02d}" for i in range(12)]
        put(backend, q, *names[:6])  # one batch
        for name in names[6:]:  # and one call each
            put(backend, q, name)
        first = reserve(backend, q, limit=5)
        assert ids(first) == names[:5]
        assert ids(reserve(backend, q, limit=1)) == names[5:6]
        assert ids(reserve(backend, q, limit=100)) == names[6:]

    def test_order_is_due_time_then_enqueue_order(self, backend: Full, q: str) -> None:
        needs(backend, "fifo")
        now = time.time()
        put(backend, q, "a", "b")  # due now
        put(backend, q, "late", run_at=now - 5)  # due earlier than a and b
        put(backend, q, "later", run_at=now - 1)
        put(backend, q, "earliest", run_at=now - 10)
        assert ids(reserve(backend, q)) == ["earliest", "late", "later", "a", "b"]

    def test_queue_priority_across_queues(self, backend: Full, q: str) -> None:
        needs(backend, "fifo")
        high, low = q + "-high", q + "-low"
        put(backend, low, "l1", "l2", "l3")
        put(backend, high, "h1", "h2")
        got = reserve(backend, [high, low], limit=3)
        assert [(r.queue, r.task_id) for r in got] == [(high, "h1"), (high, "h2"), (low, "l1")]
        got = reserve(backend, [high, low], limit=10)
        assert [(r.queue, r.task_id) for r in got] == [(low, "l2"), (low, "l3")]

    def test_earlier_queue_first_without_fifo(self, backend: Full, q: str) -> None:
        high, low = q + "-high", q + "-low"
        put(backend, low, "l1", "l2")
        put(backend, high, "h1")
        got = reserve(backend, [high, low], limit=2)
        assert got[0].queue == high and got[1].queue == low

    def test_queues_are_isolated(self, backend: Full, q: str) -> None:
        qa, qb = q + "-a", q + "-b"
        backend.enqueue([Message(qa, "same", b"in-a"), Message(qb, "same", b"in-b")])
        (ra,) = reserve(backend, qa)
        assert ra.data == b"in-a"
        assert backend.ack([ra]) == [True]
        (rb,) = reserve(backend, qb)
        assert (rb.queue, rb.data) == (qb, b"in-b")
        assert backend.ack([rb]) == [True]

    def test_payload_size_limit(self, limited_backend: Full, q: str) -> None:
        b = limited_backend
        with pytest.raises(PayloadTooLarge):
            b.enqueue([Message(q, "ok", b"x" * 10), Message(q, "big", b"x" * 101)])
        # The batch was refused as a whole.
        assert reserve(b, q) == []
        b.enqueue([Message(q, "ok", b"x" * 100)])
        assert ids(reserve(b, q)) == ["ok"]

    def test_ack_deletes(self, backend: Full, q: str) -> None:
        put(backend, q, "a", "b", "c")
        got = reserve(backend, q)
        assert backend.ack(got) == [True, True, True]
        assert backend.ack(got) == [False, False, False]  # already gone
        assert reserve(backend, q) == []

    def test_ack_batch_reports_each_task(self, backend: Full, q: str) -> None:
        needs(backend, "stale_token")
        put(backend, q, "a", "b")
        ra, rb = reserve(backend, q)
        assert backend.ack([ra]) == [True]
        assert backend.ack([ra, rb]) == [False, True]

    def test_stale_token_is_refused(self, backend: Full, q: str) -> None:
        needs_protocol(backend, DeadLetterAdmin)
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

    def test_ack_after_expiry_before_takeover_is_accepted(self, backend: Full, q: str) -> None:
        t = self.tick(backend)
        put(backend, q, "a")
        (r,) = reserve(backend, q, lease=t)
        time.sleep(t + self.MARGIN)
        assert backend.ack([r]) == [True]
        assert reserve(backend, q) == []

    def test_lease_expiry_makes_task_reservable_again(self, backend: Full, q: str) -> None:
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

    def test_lease_expiry_keeps_the_task_in_its_place(self, backend: Full, q: str) -> None:
        needs(backend, "fifo")
        t = self.tick(backend)
        put(backend, q, "a", "b")
        reserve(backend, q, limit=1, lease=t)
        time.sleep(t + self.MARGIN)
        assert ids(reserve(backend, q)) == ["a", "b"]

    def test_extend_keeps_task_from_being_taken(self, backend: Full, q: str) -> None:
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

    def test_extend_uses_each_reservations_lease(self, backend: Full, q: str) -> None:
        t = self.tick(backend)
        put(backend, q, "a")
        (r,) = reserve(backend, q, lease=t)
        # A task with a longer lease than the worker's default.
        r = r._replace(lease=30.0)
        assert backend.extend([r]) == [True]
        time.sleep(t + self.MARGIN)
        assert reserve(backend, q, who="w2") == []

    def test_retry_with_new_payload_and_delay(self, backend: Full, q: str) -> None:
        needs_protocol(backend, QueueAdmin)
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

    def test_retry_resets_deliveries(self, backend: Full, q: str) -> None:
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

    def test_retry_due_now_is_ready_at_once(self, backend: Full, q: str) -> None:
        put(backend, q, "a")
        (r,) = reserve(backend, q)
        assert backend.retry([(r, b"v2", time.time())]) == [True]
        (r2,) = reserve(backend, q)
        assert r2.data == b"v2"
        if backend.capabilities.stale_token:
            assert backend.ack([r]) == [False]
        assert backend.ack([r2]) == [True]

    def test_release_gives_back_without_counting(self, backend: Full, q: str) -> None:
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

    def test_release_keeps_place_ahead_of_later_tasks(self, backend: Full, q: str) -> None:
        needs(backend, "fifo")
        put(backend, q, "a")
        got = reserve(backend, q)
        put(backend, q, "b")
        backend.release(got)
        assert ids(reserve(backend, q)) == ["a", "b"]

    def test_bury_after_ack_is_refused(self, backend: Full, q: str) -> None:
        needs_protocol(backend, DeadLetterAdmin)
        put(backend, q, "a")
        (r,) = reserve(backend, q)
        assert backend.ack([r]) == [True]
        assert backend.bury([(r, "x", "y")]) == [False]
        assert backend.dead_get(q, "a") is None

    def test_delayed_task_waits_until_due(self, backend: Full, q: str) -> None:
        t = self.tick(backend)
        put(backend, q, "later", run_at=time.time() + t)
        assert reserve(backend, q) == []
        time.sleep(t + self.MARGIN)
        assert ids(reserve(backend, q)) == ["later"]

    def test_delayed_task_never_blocks_ready_ones(self, backend: Full, q: str) -> None:
        t = self.tick(backend)
        put(backend, q, "far", run_at=time.time() + 3600)
        put(backend, q, "soon", run_at=time.time() + t)
        put(backend, q, "now1", "now2")
        assert sorted(ids(reserve(backend, q, limit=10))) == ["now1", "now2"]
        time.sleep(t + self.MARGIN)
        assert ids(reserve(backend, q, limit=10)) == ["soon"]
        assert reserve(backend, q) == []

    def test_run_at_in_the_past_is_ready(self, backend: Full, q: str) -> None:
        put(backend, q, "past", run_at=time.time() - 3600)
        assert ids(reserve(backend, q)) == ["past"]

    def test_wait_returns(self, backend: Full, q: str) -> None:
        started = time.time()
        backend.wait([q], 0.2)
        assert time.time() - started < 2
        put(backend, q, "a")
        started = time.time()
        backend.wait([q], 5)
        assert time.time() - started < 2  # a ready task ends the wait early

    def test_concurrent_reserves_never_share_a_task(self, backend: Full, q: str) -> None:
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
