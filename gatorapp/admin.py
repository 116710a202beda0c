"""Operations on one task by id, and dead-letter requeues.

``App.get``, ``App.cancel`` and ``App.requeue_dead`` delegate here; the
``gatorapp dead`` command uses :func:`requeue_letter`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .backends.base import Backend
from .backends.protocols import dead_letters, known_queues, take_by_id
from .backends.records import DeadLetter
from .envelope import CANCELED, Task
from .errors import DecodeError, Rejected
from .execution import Outcome
from .producer import Producer
from .results import CANCELLED, failure, store_final

log = logging.getLogger("gatorapp")


def find(
    backend: Backend, queues: Sequence[str], task_id: str, queue: str | None
) -> tuple[str, bytes] | None:
    """Take a waiting task off ``queue`` (or the first of ``queues`` that has it)."""
    taker = take_by_id(backend)
    for q in [queue] if queue else list(dict.fromkeys([*queues, *known_queues(backend)])):
        data = taker.take(q, task_id)
        if data is not None:
            return q, data
    # "Not found" may only mean "not findable here": say so.
    why = backend.capabilities.reason("take") or (
        None if queue else backend.capabilities.reason("known_queues")
    )
    if why:
        log.warning("task %s not found; note that %s", task_id, why)
    return None


def run_now(
    producer: Producer, queues: Sequence[str], task_id: str, queue: str | None
) -> Task | None:
    """``App.get``: take a waiting task and run it here, as ``is_async=False`` does."""
    backend = producer.backend()
    found = find(backend, queues, task_id, queue)
    if found is None:
        return None
    q, data = found

    def bury(task: Task, outcome: Outcome) -> None:
        backend.dead_add(q, task_id, data, outcome.reason, outcome.error)

    try:
        backend.check_size(data)
    except Exception as exc:
        backend.dead_add(q, task_id, data, "too_large", str(exc))
        raise Rejected("too_large", str(exc)) from None
    try:
        return producer.run_eager(data, on_dead=bury)
    except Rejected as exc:
        backend.dead_add(q, task_id, data, exc.reason, exc.error)
        raise


def cancel(
    producer: Producer, queues: Sequence[str], task_id: str, queue: str | None
) -> Task | None:
    """``App.cancel``: remove a waiting task unrun."""
    found = find(producer.backend(), queues, task_id, queue)
    if found is None:
        return None
    q, data = found
    try:
        registry = producer.registry
        task = registry.task_class.deserialize(registry.unseal(data))
    except Exception:
        task = Task("?", task_id=task_id, queue=q)
    task.status = CANCELED
    record = failure(CANCELLED, "cancelled", "cancelled before it ran", "", task.name, task.attempt)
    tdef = producer.registry.tasks.get(task.name)
    store_final(producer.results, task, tdef.keep if tdef else None, record)
    return task


def requeue_letter(producer: Producer, letter: DeadLetter) -> bool:
    """Move a dead letter back to its queue, its retry budget restored."""
    registry = producer.registry
    data: bytes | None = None
    try:
        task, tdef = registry.decode(letter.data)
        # The budget chosen at enqueue (kept in the envelope's opts), else the
        # task's default; attempts count afresh so max_attempts does not
        # cut the restored budget short.
        budget = task.options.get("retries")
        if isinstance(budget, int) and not isinstance(budget, bool):
            task.retries = budget if 0 <= budget < registry.max_attempts else tdef.retries
        else:
            task.retries = tdef.retries
        task.attempt = 0
        data = registry.seal(task.serialize())
    except (Rejected, DecodeError):
        pass  # requeue as it was: a later deploy may know how to run it
    # Its dead record goes first: once requeued, the task may run and store
    # a new result before a later forget would delete it.
    results = producer.results
    if results is not None and results.store is not None:
        results.store().forget_result(letter.task_id)
    return dead_letters(producer.backend()).dead_requeue(letter.queue, letter.task_id, data)
