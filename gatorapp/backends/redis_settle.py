"""The Redis backend's settle calls: a batch of settlements as one script
call per queue and chunk, and their replies as one bool per item."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import chunked, truncate
from .records import Burial, Reservation, RetryItem, Settled
from .redis_scripts import CHUNK, pack_args, text

#: one settle call: ((script name, queue, args), where each answer goes:
#: (0 ack | 1 retry | 2 bury, index))
Plan = list[tuple[tuple[str, str, list[Any]], list[tuple[int, int]]]]


def count(value: bytes | str) -> int:
    """A counter Redis holds; one written by hand that is not a number counts 0
    (it must not fail the reserve of the batch it came with)."""
    try:
        return max(0, int(value))
    except ValueError:
        return 0


def settle_plan(
    acks: Sequence[Reservation], retries: Sequence[RetryItem], buries: Sequence[Burial]
) -> list[tuple[tuple[str, str, list[Any]], list[tuple[int, int]]]]:
    """One settle call per queue and chunk: ((name, queue, args), where each
    answer goes: (0 ack | 1 retry | 2 bury, index))."""
    by_queue: dict[str, list[tuple[int, int]]] = {}
    for i, r in enumerate(acks):
        by_queue.setdefault(r.queue, []).append((0, i))
    for i, item in enumerate(retries):
        by_queue.setdefault(item[0].queue, []).append((1, i))
    for i, burial in enumerate(buries):
        by_queue.setdefault(burial[0].queue, []).append((2, i))
    plan = []
    for queue, places in by_queue.items():
        for chunk in chunked(places, CHUNK):
            groups: dict[str, list[str]] = {}  # acks by batch token
            t: list[Any] = []
            b: list[Any] = []
            order: list[tuple[int, int]] = []
            ack_order: dict[str, list[tuple[int, int]]] = {}
            for k, i in chunk:
                if k == 0:
                    r = acks[i]
                    groups.setdefault(r.token, []).append(r.task_id)
                    ack_order.setdefault(r.token, []).append((0, i))
            for token_order in ack_order.values():  # the script answers acks first
                order += token_order
            for k, i in chunk:
                if k == 1:
                    rr, data, run_at = retries[i]
                    t += (rr.task_id, rr.token, data, run_at)
                    order.append((1, i))
            for k, i in chunk:
                if k == 2:
                    rb, reason, error = buries[i]
                    b += (rb.task_id, rb.token, reason, truncate(error))
                    order.append((2, i))
            a = [x for token, task_ids in groups.items() for x in (token, task_ids)]
            plan.append((("settle", queue, [pack_args([a, t, b])]), order))
    return plan


def settled(
    plan: list[tuple[Any, list[tuple[int, int]]]],
    replies: Sequence[Any],
    n_acks: int,
    n_retries: int,
    n_buries: int,
) -> Settled:
    out = ([False] * n_acks, [False] * n_retries, [False] * n_buries)
    for (_, order), reply in zip(plan, replies):
        flags = text(reply)
        for (kind, i), flag in zip(order, flags):
            out[kind][i] = flag == "1"
    return Settled(*out)
