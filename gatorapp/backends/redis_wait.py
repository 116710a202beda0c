"""Idle workers on Redis: waiting on an inbox, and tasks handed to a waiter.

A thread of a worker that finds nothing to reserve registers as a waiter on
each of its queues (its entry in the queue's ``waiters`` set, "<listener>|<lease>")
and blocks in BLPOP on an inbox of its own there. The enqueue script leases a
task due now to one waiter and puts it in that inbox; anything else that
makes tasks ready puts an empty string there, which only wakes it. The thread
keeps what it was handed (its stash) for its next reserve, which also takes
its entries away. See ``redis.lua`` (listen, unlisten, collect, wake_all).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import redis

from .records import Reservation
from .redis_link import Link, pack
from .redis_scripts import Calls, text

# Seconds an idle worker stays registered as a waiter after its last look:
# longer than any wait (the worker's loop waits at most 0.5 s at a time). A
# task due now is handed to a registered worker; one that died registered
# gets it only within this time, and it comes back when its lease expires.
WAIT_TTL = 2.0


class WaitState:
    """One thread's waiting state: its listener id and waiter entry, the queues
    it waits on, tasks handed to it that no reserve returned yet, and what its
    last reserve saw when it found nothing."""

    __slots__ = ("lease", "listened", "listener", "look", "member", "stash", "waits")

    def __init__(self) -> None:
        self.listener = os.urandom(8).hex()
        self.lease = 30.0
        self.member = ""
        self.listened: list[str] = []
        self.stash: list[Reservation] = []
        #: (queues, seconds until something may be ready, when): a reserve's look
        self.look: tuple[tuple[str, ...], float | None, float] | None = None
        self.waits = False  # it waits when a reserve finds nothing

    def stashed(self, limit: int) -> list[Reservation]:
        """Handed tasks a wait received, up to ``limit`` (the rest stay)."""
        if not self.stash:
            return []
        out, self.stash = self.stash[:limit], self.stash[limit:]
        return out


def handed(queue: str, blob: bytes) -> Reservation:
    """A task a waiting worker was handed: msgpack [token, lease, id, payload]."""
    token, lease, task_id, data = msgpack.unpackb(blob, raw=True)
    return Reservation(queue, text(task_id), data, text(token), 1, float(lease))


class Waiters:
    """The waiting of one backend object's threads.

    :param pipeline: sends packed commands in one round trip, raising an
        error reply as a BackendError.
    :param link: the backend's Link.
    :param release: hands tasks back to their queues.
    :param error: a redis-py error as the BackendError to raise.
    """

    def __init__(
        self,
        calls: Calls,
        pipeline: Callable[[str, Sequence[bytes]], list[Any]],
        link: Callable[[], Link],
        release: Callable[[Sequence[Reservation]], object],
        error: Callable[[str, redis.RedisError], Exception],
        poll_interval: float,
    ) -> None:
        self.calls = calls
        self.pipeline = pipeline
        self.link = link
        self.release = release
        self.error = error
        self.poll_interval = poll_interval
        self.reset()

    def reset(self) -> None:
        """Forget every thread's state (a forked child, a closed backend)."""
        self._lock = threading.Lock()
        self._local = threading.local()
        self._all: list[WaitState] = []

    def state(self) -> WaitState:
        """This thread's state."""
        state: WaitState | None = getattr(self._local, "state", None)
        if state is None:
            state = self._local.state = WaitState()
            with self._lock:
                self._all.append(state)
        return state

    def member(self) -> str:
        """This thread's waiter entry, "<listener>|<lease>"."""
        state = self.state()
        state.member = f"{state.listener}|{state.lease:.6f}"
        return state.member

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Block until a task may be ready in ``queues`` or ``timeout`` passes.

        Registers this thread as a waiter and looks, in one call per queue (or
        uses the look of the reserve that found nothing and registered it): a
        task enqueued after the look is handed to it (already leased, kept for
        the next reserve) or wakes it through its inbox, so none is missed.
        The block is a BLPOP on its inboxes, timed on this side (Redis applies
        blocking timeouts on its own clock tick, 100 ms).
        """
        state = self.state()
        if not queues or state.stash:
            return
        member = self.member()
        state.waits = True  # from now on, an empty reserve registers it too
        look, state.look = state.look, None
        if look is not None and look[0] == tuple(queues) and look[1] != 0:
            soonest = None if look[1] is None else look[1] - (time.monotonic() - look[2])
        else:
            ttl = f"{WAIT_TTL:.3f}"
            command = self.calls.command
            replies = self.pipeline("wait", [command("listen", q, [member, ttl]) for q in queues])
            state.listened = list(queues)
            got: list[Reservation] = []
            soonest = None
            for queue, (blobs, next_due) in zip(queues, replies):
                got += [handed(queue, blob) for blob in blobs]
                if next_due:
                    seconds = float(text(next_due))
                    soonest = seconds if soonest is None else min(soonest, seconds)
            if got:
                state.stash = got
                return
        if soonest is not None and soonest <= 0:
            return
        block = timeout if soonest is None else min(timeout, soonest)
        boxes = [f"{self.calls.tag(q)}:in:{state.listener}" for q in queues]
        try:
            reply = self._block(boxes, block)
        except (redis.ConnectionError, redis.TimeoutError):
            # The connection broke (Redis restarted?): if Redis is down, the
            # caller's next call says so. The pause keeps a failing wait from
            # turning the worker's loop into a busy one.
            time.sleep(min(timeout, self.poll_interval))
            return
        except redis.RedisError as exc:
            raise self.error("wait", exc) from exc
        if reply:
            box, value = text(reply[0]), reply[1]
            if value:
                state.stash = [handed(queues[boxes.index(box)], value)]

    def _block(self, boxes: list[str], seconds: float) -> Any:
        """BLPOP on ``boxes`` for ``seconds`` at most, timed here."""
        link = self.link()
        with link.connection() as conn:
            conn.send_packed_command([pack(("BLPOP", *boxes, math.ceil(seconds) + 1))])
            if not conn.can_read(timeout=seconds):
                # Time's up: end the BLPOP with a wake-up of our own; a task
                # handed over meanwhile comes first, the wake-up is dropped later.
                link.call("RPUSH", boxes[0], "")
            return conn.read_response()

    def stop(self) -> None:
        """The worker stops waiting: the waiter entries of its threads go, and
        the tasks handed to them that no reserve returned go back to their
        queues. (Called from any thread: a worker stopping at once calls it
        from a thread of its own.)"""
        with self._lock:
            states = list(self._all)
        got: list[Reservation] = []
        commands: list[tuple[str, bytes]] = []
        for state in states:
            listened, state.listened = state.listened, []
            got += state.stash
            state.stash = []
            state.waits = False
            if listened and state.member:
                commands += [
                    (q, self.calls.command("unlisten", q, [state.member])) for q in listened
                ]
        if commands:
            replies = self.pipeline("stop_waiting", [c for _, c in commands])
            for (queue, _), blobs in zip(commands, replies):
                got += [handed(queue, blob) for blob in blobs]
        if got:
            self.release(got)
