"""The Redis backend's administration: take by id, results, the list of
workers, periodic ticks, dead letters and counts (the optional protocols of
:mod:`gatorapp.backends.protocols`), over the calls its delivery part makes
(:class:`RedisAdmin` lists them)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import redis

from ..errors import BackendError
from . import redis_results
from .base import check_queue_name
from .records import DeadLetter, Located, Message, QueueStats, ResultItem
from .redis_aio import AsyncLink
from .redis_link import Link
from .redis_scripts import DEAD, Calls, text


class RedisAdmin:
    """The administration methods (a mixin: it comes before ``Backend``
    among the backend's bases, so these replace the base's defaults)."""

    prefix: str
    calls: Calls
    # (The delivery part's own checks, the base backend's.)
    check_queue: Callable[[str], str]
    check_size: Callable[[bytes], None]

    @property
    @abstractmethod
    def client(self) -> redis.Redis: ...

    @property
    @abstractmethod
    def link(self) -> Link: ...

    @property
    @abstractmethod
    def alink(self) -> AsyncLink: ...

    @abstractmethod
    def error(self, what: str, exc: redis.RedisError) -> BackendError: ...

    @abstractmethod
    def io(self, what: str) -> AbstractContextManager[None]: ...

    @abstractmethod
    def pipeline(self, what: str, commands: Sequence[Sequence[Any] | bytes]) -> list[Any]: ...

    @abstractmethod
    def run(self, name: str, queue: str, args: Sequence[Any]) -> Any: ...

    @abstractmethod
    def recorded(self, what: str, calls: list[tuple[str, str, list[Any]]]) -> list[Any]: ...

    @abstractmethod
    def register(self, queues: set[str]) -> None: ...

    def take(self, queue: str, task_id: str) -> bytes | None:
        queue = check_queue_name(queue)
        (data,) = self.recorded("take", [("take", queue, [task_id])])
        if data is None:
            return None
        # get() and cancel() are seldom followed by another call on the queue
        # from this process: delete the record now. Best effort: the task is
        # out of Redis already and must reach the caller; the record expires.
        spent = self.calls.take_spent(queue)
        try:
            self.link.call("DEL", *spent)
        except redis.RedisError:
            pass
        return bytes(data)

    # -- results (see redis_results) ---------------------------------------------
    def put_results(self, items: Sequence[ResultItem]) -> None:
        if items:
            self.pipeline("result write", [redis_results.put_command(self.prefix, items)])

    def _result_key(self, task_id: str) -> str:
        return redis_results.key_prefix(self.prefix) + task_id

    def get_result(self, task_id: str) -> bytes | None:
        value = self.pipeline("result read", [("GET", self._result_key(task_id))])[0]
        return None if value is None else bytes(value)

    def wait_result(self, task_id: str, timeout: float) -> bytes | None:
        with self.io("result wait"):
            return redis_results.wait(self.client, self.prefix, self._result_key(task_id), timeout)

    async def aget_result(self, task_id: str) -> bytes | None:
        try:
            value = await (await self.alink.client()).get(self._result_key(task_id))
        except redis.RedisError as exc:
            raise self.error("result read", exc) from exc
        return None if value is None else bytes(value)

    async def await_result(self, task_id: str, timeout: float) -> bytes | None:
        try:
            return await self.alink.wait(self.prefix, self._result_key(task_id), timeout)
        except redis.RedisError as exc:
            raise self.error("result wait", exc) from exc

    def forget_result(self, task_id: str) -> None:
        self.pipeline("result delete", [("DEL", self._result_key(task_id))])

    def put_worker(self, worker_id: str, record: bytes, ttl: float) -> None:
        commands = redis_results.put_worker(self.prefix, worker_id, record, ttl)
        self.pipeline("worker record", commands)

    def remove_worker(self, worker_id: str) -> None:
        self.pipeline("worker record", redis_results.remove_worker(self.prefix, worker_id))

    def list_workers(self) -> list[bytes]:
        return redis_results.list_workers(self.pipeline, self.prefix)

    def locate(self, queue: str, task_id: str) -> Located | None:
        return redis_results.locate(self.pipeline, self.calls.keys(queue), task_id)

    async def alocate(self, queue: str, task_id: str) -> Located | None:
        keys = self.calls.keys(queue)
        try:
            replies = await self.alink.pipeline(redis_results.locate_commands(keys, task_id))
            found, more = redis_results.located(replies, keys)
            if found is None or more is None:
                return found
            return redis_results.leased(found, (await self.alink.pipeline([more]))[0])
        except redis.RedisError as exc:
            raise self.error("locate", exc) from exc

    def enqueue_tick(
        self, message: Message, schedule: str, tick: float
    ) -> tuple[bool, float | None]:
        self.check_queue(message.queue)
        self.check_size(message.data)
        m = message
        args = (m.task_id, m.data, "", schedule, repr(tick))
        added, registered, last = self.pipeline(
            "enqueue", [self.calls.command("enqueue_one", m.queue, args)]
        )[0]
        if not registered:
            self.register({m.queue})
        return added == 1, float(text(last)) if last else None

    def last_tick(self, schedule: str, queue: str) -> float | None:
        (value,) = self.pipeline("ticks", [("GET", self.calls.tag(queue) + ":tick:" + schedule)])
        return None if value is None else float(text(value))

    # -- dead letters ----------------------------------------------------------
    def _dead_add(self, queue: str, task_id: str, data: bytes, reason: str, error: str) -> None:
        _, registered = self.run("dead_add", queue, [task_id, data, reason, error])
        if not registered:
            self.register({queue})

    def _dead_read(self, queue: str, args: list[Any]) -> list[DeadLetter]:
        flat = self.run("dead_read", queue, args)
        out = []
        for i in range(0, len(flat), 4):
            task_id, why = text(flat[i]), text(flat[i + 2] or b"")
            if why.startswith("\0"):  # an earlier letter of its id (see shelve)
                task_id, _, why = why[1:].partition("\0")
            reason, _, error = why.partition("\n")
            data, failed_at = bytes(flat[i + 1] or b""), float(flat[i + 3])
            out.append(DeadLetter(queue, task_id, data, reason, error, failed_at))
        return out

    def dead_list(self, queue: str, limit: int = 1000) -> list[DeadLetter]:
        return self._dead_read(queue, ["list", limit]) if limit > 0 else []

    def dead_get(self, queue: str, task_id: str) -> DeadLetter | None:
        found = self._dead_read(queue, ["get", task_id])
        return found[0] if found else None

    def dead_requeue(self, queue: str, task_id: str, data: bytes | None = None) -> bool:
        args = [task_id, "0"] if data is None else [task_id, "1", data]
        return bool(self.run("dead_requeue", queue, args))

    def dead_purge(self, queue: str, task_id: str | None = None) -> int:
        return int(self.run("dead_purge", queue, [] if task_id is None else [task_id]))

    # -- introspection -------------------------------------------------------
    def stats(self, queue: str) -> QueueStats:
        ready, delayed, running, dead, oldest = self.run("stats", queue, [])
        due = None if oldest is None else float(oldest)
        return QueueStats(int(ready), int(delayed), int(running), int(dead), due)

    def known_queues(self) -> list[str]:
        names = sorted(
            text(n) for n in self.pipeline("known_queues", [("SMEMBERS", self.calls.registry)])[0]
        )
        if not names:
            return []
        # A queue stays in the registry after it empties; list only those
        # that hold tasks or dead letters, as the other backends do.
        counts = self.pipeline(
            "known_queues",
            [("EXISTS", self.calls.keys(n)[0], self.calls.keys(n)[DEAD]) for n in names],
        )
        return [n for n, count in zip(names, counts) if count]

    def clear(self, queue_name: str) -> None:
        self.run("drop", queue_name, [])
