"""Result records in Redis: one key per task, with a time to live.

The key is ``{prefix}:result:<task id>`` (every result under the prefix's
hash tag). A worker writes its results with one script call per batch, in the
same pipeline (one round trip) as the settle it belongs to, before it: a task
is never gone from its queue without its result. The script publishes on a
channel named like the key, so a reader blocked on it wakes at once.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

from .base import ResultItem
from .redis_link import bulk
from .redis_scripts import pack_args

PUT = """
local prefix = ARGV[1]
local items = cmsgpack.unpack(ARGV[2])
for i = 1, #items, 3 do
  local key = prefix .. items[i]
  redis.call('SET', key, items[i + 1], 'PX', items[i + 2])
  redis.call('PUBLISH', key, '1')
end
return #items / 3
"""
PUT_SHA = hashlib.sha1(PUT.encode()).hexdigest()


def key_prefix(prefix: str) -> str:
    return "{" + prefix + "}:result:"


def put_command(prefix: str, items: Sequence[ResultItem]) -> bytes:
    """The packed call that stores ``items`` (EVALSHA: a server that lost its
    scripts is sent :data:`PUT` by the link, see ``on_noscript``)."""
    flat: list[Any] = []
    for item in items:
        flat += (item.task_id, item.record, max(1, round(item.ttl * 1000)))
    return (
        b"*5\r\n"
        + bulk("EVALSHA")
        + bulk(PUT_SHA)
        + bulk(0)
        + bulk(key_prefix(prefix))
        + bulk(pack_args(flat))
    )


def wait(client: Any, key: str, timeout: float) -> bytes | None:
    """The value of ``key`` once it exists, waiting up to ``timeout`` seconds
    on its channel (subscribed before the first look, so no write is missed)."""
    deadline = time.monotonic() + timeout
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(key)
        while True:
            value = client.get(key)
            left = deadline - time.monotonic()
            if value is not None or left <= 0:
                return bytes(value) if value is not None else None
            pubsub.get_message(timeout=min(left, 1.0))  # (a lost message: look again each second)
    finally:
        pubsub.close()
