"""The backend contract, administration: dead letters, take by id, counts,
Alligator's five methods, results and the list of workers (see
:mod:`gatorapp.testing.contract`). Each test is skipped for a backend that
does not implement the protocol it needs."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from ..backends import Message
from ..backends.protocols import DeadLetterAdmin, QueueAdmin, TakeById
from .support import (
    ContractBase,
    Full,
    ids,
    needs,
    needs_protocol,
    put,
    reserve,
    results_store,
)


class AdministrationContract(ContractBase):
    """The tests of the optional administration protocols."""

    def test_queues_are_isolated_for_take_and_drop(self, backend: Full, q: str) -> None:
        needs_protocol(backend, QueueAdmin)
        needs_protocol(backend, TakeById)
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

    def test_bury_and_dead_letters(self, backend: Full, q: str) -> None:
        needs_protocol(backend, DeadLetterAdmin)
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

    def test_dead_requeue(self, backend: Full, q: str) -> None:
        needs_protocol(backend, DeadLetterAdmin)
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

    def test_dead_requeue_is_ready_now_even_if_it_was_delayed(self, backend: Full, q: str) -> None:
        needs_protocol(backend, DeadLetterAdmin)
        put(backend, q, "a", run_at=time.time() - 1)
        (r,) = reserve(backend, q)
        backend.bury([(r, "failed", "err")])
        assert backend.dead_requeue(q, "a") is True
        assert ids(reserve(backend, q)) == ["a"]

    def test_dead_requeue_keeps_letter_when_id_is_queued_again(self, backend: Full, q: str) -> None:
        needs_protocol(backend, DeadLetterAdmin)
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

    def test_dead_purge(self, backend: Full, q: str) -> None:
        needs_protocol(backend, DeadLetterAdmin)
        put(backend, q, "a", "b", "c")
        backend.bury([(r, "failed", "err") for r in reserve(backend, q)])
        backend.dead_add(q + "-other", "x", b"x", "decode_error", "bad")
        assert backend.dead_purge(q) == 3
        assert backend.dead_list(q) == []
        assert backend.dead_purge(q) == 0
        assert backend.dead_get(q + "-other", "x") is not None

    def test_dead_add(self, backend: Full, q: str) -> None:
        needs_protocol(backend, DeadLetterAdmin)
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

    def test_long_error_text_is_kept_or_truncated(self, backend: Full, q: str) -> None:
        needs_protocol(backend, DeadLetterAdmin)
        backend.dead_add(q, "a", b"x", "failed", "E" * 100_000)
        letter = backend.dead_get(q, "a")
        assert letter is not None and letter.error.startswith("EEE")

    def test_take_removes_a_waiting_task(self, backend: Full, q: str) -> None:
        needs_protocol(backend, TakeById)
        needs(backend, "take")
        put(backend, q, "a", "b")
        put(backend, q, "delayed", run_at=time.time() + 3600)
        assert backend.take(q, "a") == b"data-a"
        assert backend.take(q, "a") is None
        assert backend.take(q, "delayed") == b"data-delayed"
        assert backend.take(q, "unknown") is None
        assert backend.take(q + "-other", "b") is None
        assert ids(reserve(backend, q)) == ["b"]

    def test_take_refuses_a_running_task(self, backend: Full, q: str) -> None:
        needs_protocol(backend, TakeById)
        needs(backend, "take")
        put(backend, q, "a")
        (r,) = reserve(backend, q)
        assert backend.take(q, "a") is None
        assert backend.ack([r]) == [True]  # still held by its worker

    def test_take_of_expired_lease(self, backend: Full, q: str) -> None:
        needs_protocol(backend, TakeById)
        needs(backend, "take", "stale_token")
        t = self.tick(backend)
        put(backend, q, "a")
        (r,) = reserve(backend, q, lease=t)
        time.sleep(t + self.MARGIN)
        # Its worker is presumed dead: the task is waiting again.
        assert backend.take(q, "a") == b"data-a"
        assert backend.ack([r]) == [False]

    def test_stats_counts(self, backend: Full, q: str) -> None:
        needs_protocol(backend, QueueAdmin)
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

    def test_stats_after_lease_expiry(self, backend: Full, q: str) -> None:
        needs_protocol(backend, QueueAdmin)
        needs(backend, "exact_stats")
        t = self.tick(backend)
        put(backend, q, "a")
        reserve(backend, q, lease=t)
        assert backend.stats(q).running == 1
        time.sleep(t + self.MARGIN)
        s = backend.stats(q)
        assert (s.ready, s.running) == (1, 0)

    def test_stats_tell_when_the_oldest_ready_task_became_due(self, backend: Full, q: str) -> None:
        needs_protocol(backend, QueueAdmin)
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

    def test_known_queues(self, backend: Full, q: str) -> None:
        needs_protocol(backend, QueueAdmin)
        needs(backend, "known_queues")
        put(backend, q + "-tasks", "a")
        put(backend, q + "-delayed", "a", run_at=time.time() + 3600)
        backend.dead_add(q + "-dead", "x", b"x", "failed", "err")
        known = backend.known_queues()
        assert {q + "-tasks", q + "-delayed", q + "-dead"} <= set(known)
        assert all(isinstance(name, str) for name in known)

    def test_seed_len_push_pop(self, backend: Full, q: str) -> None:
        needs_protocol(backend, QueueAdmin)
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

    def test_seed_pop_removes_for_good(self, backend: Full, q: str) -> None:
        backend.push(q, "t1", b"one")
        assert backend.pop(q) == b"one"
        assert backend.pop(q) is None
        assert reserve(backend, q) == []

    def test_seed_push_delay_until(self, backend: Full, q: str) -> None:
        t = self.tick(backend)
        backend.push(q, "t1", b"one", delay_until=time.time() + t)
        assert backend.pop(q) is None
        time.sleep(t + self.MARGIN)
        assert backend.pop(q) == b"one"

    def test_seed_get(self, backend: Full, q: str) -> None:
        needs_protocol(backend, TakeById)
        needs(backend, "take")
        backend.push(q, "t1", b"one")
        backend.push(q, "t2", b"two")
        assert backend.get(q, "t2") == b"two"
        assert backend.get(q, "t2") is None
        assert backend.get(q, "missing") is None
        assert backend.pop(q) == b"one"

    def test_seed_drop_all(self, backend: Full, q: str) -> None:
        needs_protocol(backend, QueueAdmin)
        needs_protocol(backend, DeadLetterAdmin)
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

    def test_a_second_dead_letter_of_an_id_keeps_the_first(self, backend: Full, q: str) -> None:
        needs_protocol(backend, QueueAdmin)
        needs_protocol(backend, DeadLetterAdmin)
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

    def test_dead_purge_of_one_id_deletes_its_letters_only(self, backend: Full, q: str) -> None:
        needs_protocol(backend, DeadLetterAdmin)
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
    def test_workers_are_listed_replaced_removed_and_expire(self, backend: Full) -> None:
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
    def test_results_are_stored_read_again_replaced_and_forgotten(self, backend: Full) -> None:
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

    def test_results_expire(self, backend: Full) -> None:
        results_store(backend)
        task_id = f"r-{uuid.uuid4().hex}"
        backend.put_results([(task_id, b"soon gone", self.TICK)])
        assert backend.get_result(task_id) == b"soon gone"
        time.sleep(self.TICK + self.MARGIN)
        assert backend.get_result(task_id) is None

    def test_wait_result_wakes_when_a_result_is_stored(self, backend: Full) -> None:
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

    def test_locate_says_where_a_task_is(self, backend: Full, q: str) -> None:
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
