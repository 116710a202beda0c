"""What part of the delivery contract a backend keeps, as a typed value.

Each field is True when the backend keeps that part; a backend that cannot
says so on its class, with the reason, and a misspelt name fails when the
class is defined (a ``TypeError``), never reads as "supported"::

    class SQSBackend(Backend):
        capabilities = Capabilities.lacking(take="SQS cannot fetch a message by id")

Callers read ``backend.capabilities.take`` (a bool the type checker sees) and
``backend.capabilities.reason("take")`` for the words to show a user. The
shared contract suite (:mod:`gatorapp.testing.contract`) skips, with that reason,
every test of a part a backend lacks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Capabilities:
    #: a second enqueue of a queued (queue, task_id) changes nothing
    idempotent_enqueue: bool = True
    #: reserve order is due time, then enqueue order, within a queue
    fifo: bool = True
    #: leases and delays under a second are honoured
    subsecond_timing: bool = True
    #: ack/retry/bury/extend from a lease taken over are refused
    stale_token: bool = True
    #: a waiting task can be removed by id (take, ``App.get``, ``App.cancel``)
    take: bool = True
    #: stats and len are exact at once, not approximate
    exact_stats: bool = True
    #: ``Reservation.deliveries`` is exact (a release does not count)
    delivery_count: bool = True
    #: concurrent reserves never hand out one task twice while its lease lives
    exclusive_reserve: bool = True
    #: known_queues() lists every queue holding anything
    known_queues: bool = True
    #: stats tell delayed and running tasks apart from ready ones
    stats_detail: bool = True
    #: stats tell when the oldest ready task became due
    oldest: bool = True
    #: locate() finds a queued task by id
    locate: bool = True
    #: why each part that is False is lacking, by field name
    why: Mapping[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def lacking(cls, **reasons: str) -> Capabilities:
        """Every part kept but those named, each given with its reason."""
        return cls().without(**reasons)

    def without(self, **reasons: str) -> Capabilities:
        """These capabilities less those named (a subclass narrowing its base's)."""
        names = NAMES
        for name in reasons:
            if name not in names:
                raise TypeError(
                    f"no capability named {name!r}; the names are: {', '.join(sorted(names))}"
                )
        flags: dict[str, bool] = dict.fromkeys(reasons, False)
        return replace(self, **flags, why=MappingProxyType({**self.why, **reasons}))

    def reason(self, name: str) -> str | None:
        """Why the backend lacks ``name``; None when it keeps it."""
        if name not in NAMES:
            raise TypeError(f"no capability named {name!r}")
        if getattr(self, name):
            return None
        return self.why.get(name, "not supported by this backend")

    def lacked(self) -> dict[str, str]:
        """Every part lacking, with its reason."""
        return {name: self.reason(name) or "" for name in NAMES if not getattr(self, name)}


NAMES = frozenset(f.name for f in fields(Capabilities) if f.name != "why")
