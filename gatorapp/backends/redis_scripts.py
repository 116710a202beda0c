"""The Lua scripts of the Redis backend, and the calls that run them.

:data:`SCRIPTS` holds each script of ``redis.lua`` with the helpers it needs.
A :class:`Calls` knows the keys of each queue and packs a script call for it
(what never changes for a queue is packed once), and keeps the records of
earlier calls that later calls delete in passing (see ``redis.lua``).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Sequence
from importlib import resources
from typing import Any

import msgpack

from .redis_link import bulk

# The per-queue keys, in the order every script receives them (see redis.lua).
SUFFIXES = (
    "data",
    "wait",
    "own",
    "dlv",
    "leases",
    "held",
    "meta",
    "dead",
    "ddata",
    "dwhy",
    "waiters",
)
DEAD = SUFFIXES.index("dead")
META = SUFFIXES.index("meta")

# Tasks per script call: large batches are split so one call never blocks
# Redis for long (a few milliseconds; Lua's unpack() takes up to about 8,000
# values). A worker's batch (up to 500 plus its threads) fits in one call.
# Each chunk is atomic and safe to send again, and every chunk of one batch
# goes in one pipeline: one round trip.
CHUNK = 1000

# Records of calls whose replies came, kept per queue until the next call on
# that queue deletes them; more than this are left to their time to live.
MAX_SPENT = 200


def load_scripts() -> dict[str, tuple[str, str]]:
    """Script name -> (source, SHA1), from the sections of redis.lua: the
    common prelude, the helpers the script needs, then the script itself."""
    text = resources.files("gatorapp.backends").joinpath("redis.lua").read_text("utf-8")
    parts = re.split(r"^-- @@ (lib )?(\w+)\s*$", text, flags=re.MULTILINE)
    libs: dict[str, str] = {}
    scripts: dict[str, str] = {}
    for is_lib, name, body in zip(parts[1::3], parts[2::3], parts[3::3]):
        (libs if is_lib else scripts)[name] = body

    def needs(body: str) -> list[str]:
        found = re.search(r"^-- needs: (.*)$", body, flags=re.MULTILINE)
        return found.group(1).split() if found else []

    common = scripts.pop("common")
    out = {}
    for name, body in scripts.items():
        want: set[str] = set()
        todo = needs(body)
        while todo:
            lib = todo.pop()
            if lib not in want:
                want.add(lib)
                todo += needs(libs[lib])
        source = common + "".join(b for n, b in libs.items() if n in want) + body
        out[name] = (source, hashlib.sha1(source.encode()).hexdigest())
    return out


SCRIPTS = load_scripts()


def pack_args(items: Any) -> bytes:
    """A list argument for a script. Lua's cmsgpack reads msgpack's str type
    only: bytes go as str, which Lua strings carry unchanged."""
    return msgpack.packb(items, use_bin_type=False)


def new_token() -> str:
    """A batch token: 64 characters, so the scripts' own hash is a hash table
    (see redis.lua)."""
    return os.urandom(32).hex()


def text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class Calls:
    """Script calls on the queues of one key prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.registry = f"{{{prefix}}}:queues"
        self._lock = threading.Lock()
        self._keys_of: dict[str, list[str]] = {}
        self._heads: dict[tuple[str, str, int], bytes] = {}
        self._spent: dict[str, list[str]] = {}  # queue -> records no retry needs any more

    def after_fork(self) -> None:
        self._lock = threading.Lock()

    def tag(self, queue: str) -> str:
        """The hash tag all of a queue's keys start with."""
        return "{" + f"{self.prefix}:{queue}" + "}"

    def keys(self, queue: str) -> list[str]:
        keys = self._keys_of.get(queue)
        if keys is None:
            keys = self._keys_of[queue] = [f"{self.tag(queue)}:{s}" for s in SUFFIXES]
        return keys

    def command(
        self, name: str, queue: str, args: Sequence[Any], extra: Sequence[str] = ()
    ) -> bytes:
        """EVALSHA of script ``name`` on ``queue``'s keys (then ``extra`` keys),
        packed; what never changes for the queue is packed once."""
        n_keys = len(SUFFIXES) + len(extra)
        head = self._heads.get((name, queue, n_keys))
        if head is None:
            keys = b"".join(bulk(k) for k in self.keys(queue))
            call = bulk("EVALSHA") + bulk(SCRIPTS[name][1]) + bulk(n_keys) + keys
            head = self._heads[(name, queue, n_keys)] = call
        parts = [b"*%d\r\n" % (3 + n_keys + len(args)), head]
        for key in extra:
            parts.append(bulk(key))
        for arg in args:
            parts.append(bulk(arg))
        return b"".join(parts)

    # -- records of calls (replayed after a lost reply) ---------------------------------
    def record(self, queue: str) -> list[str]:
        """Keys for a recorded call: its own record, then the spent ones to delete."""
        record = f"{self.tag(queue)}:rec:{os.urandom(12).hex()}"
        return [record, *self.take_spent(queue)]

    def take_spent(self, queue: str) -> list[str]:
        """Records of earlier calls on ``queue``, for this call to delete."""
        with self._lock:
            return self._spent.pop(queue, [])

    def spend(self, queue: str, records: Sequence[str]) -> None:
        """Records a later call may delete (their replies came, or may exist)."""
        with self._lock:
            spent = self._spent.setdefault(queue, [])
            spent += records
            del spent[:-MAX_SPENT]
