"""Result records in Redis: one key per task, with a time to live.

The key is ``{prefix}:result:<task id>`` (every result under the prefix's
hash tag). A worker writes its results with one script call per batch, in the
same pipeline (one round trip) as the settle it belongs to, before it: a task
is never gone from its queue without its result.

A reader that waits counts itself in ``{prefix}:result-waiters`` and listens on
a channel named like the key; the script publishes each record on its
channel only while someone waits (a publish costs Redis about as much as a
third of the write), so a reader wakes at once and nobody pays when nobody
waits.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from .records import Located, ResultItem
from .redis_link import bulk
from .redis_scripts import pack_args, text

PUT = """
local prefix = ARGV[1]
local items = cmsgpack.unpack(ARGV[2])
local waiting = tonumber(redis.call('GET', ARGV[3]) or '0') > 0
for i = 1, #items, 3 do
  local key = prefix .. items[i]
  redis.call('PSETEX', key, items[i + 2], items[i + 1])
  if waiting then redis.call('PUBLISH', key, items[i + 1]) end
end
return #items / 3
"""
PUT_SHA = hashlib.sha1(PUT.encode()).hexdigest()

# A waiter counts itself in and out. The count expires, in case a reader dies
# waiting, and its expiry is only ever made longer (PTTL is -1 with none set).
# (Scripts rather than INCR and PEXPIRE ... NX/GT, which need Redis 7.)
ENTER = """
redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
"""
LEAVE = """
if redis.call('DECR', KEYS[1]) <= 0 then redis.call('DEL', KEYS[1]) end
"""


def key_prefix(prefix: str) -> str:
    return "{" + prefix + "}:result:"


def waiters_key(prefix: str) -> str:
    return "{" + prefix + "}:result-waiters"


def put_command(prefix: str, items: Sequence[ResultItem]) -> bytes:
    """The packed call that stores ``items`` (EVALSHA: a server that lost its
    scripts is sent :data:`PUT` by the link, see ``on_noscript``)."""
    flat: list[Any] = []
    last_ttl, ms = None, 0  # (a batch's TTLs are mostly one: converted once)
    for task_id, record, ttl in items:
        if ttl != last_ttl:
            last_ttl, ms = ttl, max(1, round(ttl * 1000))
        flat += (task_id, record, ms)
    return (
        b"*6\r\n"
        + bulk("EVALSHA")
        + bulk(PUT_SHA)
        + bulk(0)
        + bulk(key_prefix(prefix))
        + bulk(pack_args(flat))
        + bulk(waiters_key(prefix))
    )


def locate_commands(keys: Sequence[str], task_id: str) -> list[tuple[str, ...]]:
    """What :func:`locate` reads first (the queue's keys, in the order of
    redis.lua): its payload, due time and owner."""
    return [("HGET", keys[0], task_id), ("ZSCORE", keys[1], task_id), ("HGET", keys[2], task_id)]


def located(replies: Sequence[Any], keys: Sequence[str]) -> tuple[Located | None, Any]:
    """The answer of :func:`locate_commands`'s replies, or, for a leased task,
    the one command still to send (the lease's expiry; then :func:`leased`)."""
    data, due, own = replies
    if data is None:
        return None, None
    owned = text(own) if own is not None else ""  # token, then due time (redis.lua)
    if due is None and len(owned) >= 64:  # leased: running while the lease lives
        return ("ready", bytes(data)), ("ZSCORE", keys[4], owned[:64])
    if due is not None and float(due) > time.time():
        return ("delayed", bytes(data)), None
    return ("ready", bytes(data)), None


def leased(found: Located, until: Any) -> Located:
    """A leased task: running while its lease lives, else ready again."""
    return ("running", found[1]) if until is not None and float(until) > time.time() else found


def locate(
    pipeline: Callable[[str, list[Any]], list[Any]], keys: Sequence[str], task_id: str
) -> Located | None:
    """Where a task is in the queue of ``keys``: two round trips at most, for
    ``status()``, never per task."""
    found, more = located(pipeline("locate", locate_commands(keys, task_id)), keys)
    if found is None or more is None:
        return found
    return leased(found, pipeline("locate", [more])[0])


def wait(client: Any, prefix: str, key: str, timeout: float) -> bytes | None:
    """The value of ``key`` once it exists, waiting up to ``timeout`` seconds.

    Counted as a waiter and subscribed before the first look, so a write
    either comes before the look or publishes to this reader."""
    value = client.get(key)  # (there already: no need to listen)
    if value is not None or timeout <= 0:
        return None if value is None else bytes(value)
    deadline = time.monotonic() + timeout
    counter = waiters_key(prefix)
    ms = int((timeout + 60) * 1000)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        # (Counted out in any case: the reply may be lost after it counted in.
        # A count that falls to zero or below is deleted, so a spare count out
        # costs at most another reader's prompt wake, never a result.)
        client.eval(ENTER, 1, counter, ms)
        pubsub.subscribe(key)
        value = client.get(key)
        while value is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            # (Every second a look of its own, should a message be lost.)
            message = pubsub.get_message(timeout=min(left, 1.0))
            value = message["data"] if message is not None else client.get(key)
        return bytes(value)
    finally:
        pubsub.close()
        client.eval(LEAVE, 1, counter)


# -- live workers (see gatorapp.workers) ---------------------------------------
# A worker's record is the key "{prefix}:worker:<id>", which expires on the
# server's clock; the set "{prefix}:workers" indexes them, and a reader removes
# from it the ids whose keys expired.


def _workers_index(prefix: str) -> str:
    return "{" + prefix + "}:workers"


def _worker_key(prefix: str, worker_id: str) -> str:
    return "{" + prefix + "}:worker:" + worker_id


def put_worker(prefix: str, worker_id: str, record: bytes, ttl: float) -> list[tuple[Any, ...]]:
    """The commands that store a worker's record for ``ttl`` seconds."""
    return [
        ("PSETEX", _worker_key(prefix, worker_id), max(1, int(ttl * 1000)), record),
        ("SADD", _workers_index(prefix), worker_id),
    ]


def remove_worker(prefix: str, worker_id: str) -> list[tuple[Any, ...]]:
    return [
        ("DEL", _worker_key(prefix, worker_id)),
        ("SREM", _workers_index(prefix), worker_id),
    ]


def list_workers(pipeline: Callable[[str, list[Any]], list[Any]], prefix: str) -> list[bytes]:
    """The live workers' records: two round trips, and a third to forget the
    ids of workers that expired."""
    ids = sorted(text(i) for i in pipeline("workers", [("SMEMBERS", _workers_index(prefix))])[0])
    if not ids:
        return []
    records = pipeline("workers", [("MGET", *(_worker_key(prefix, i) for i in ids))])[0]
    gone = [i for i, r in zip(ids, records) if r is None]
    if gone:
        pipeline("workers", [("SREM", _workers_index(prefix), *gone)])
    return [bytes(r) for r in records if r is not None]
