"""What the parts of the backend contract suite share: settings, fixtures and
helpers (see :mod:`gatorapp.testing.contract`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar

import pytest

from ..backends import Backend, Message, Reservation
from ..backends.protocols import DeadLetterAdmin, QueueAdmin, TakeById

if TYPE_CHECKING:

    class Full(Backend, QueueAdmin, TakeById, DeadLetterAdmin):
        """A backend with every administration protocol, as the tests that use
        one see it (each first skips a backend without it: needs_protocol)."""

else:
    Full = Backend

TICK = 0.3  # lease and delay length for timing tests
SLOW_TICK = 1.0  # the same for backends without subsecond_timing
MARGIN = 0.2  # extra sleep past a deadline


def needs(backend: Backend, *caps: str) -> None:
    """Skip the test, with the backend's reason, unless it keeps every one of ``caps``."""
    for cap in caps:
        reason = backend.capabilities.reason(cap)
        if reason is not None:
            pytest.skip(f"{type(backend).__name__} lacks {cap}: {reason}")


def needs_protocol(backend: Backend, protocol: type) -> None:
    """Skip the test unless the backend implements ``protocol`` (one of
    gatorapp.backends.protocols: administration is optional)."""
    if not isinstance(backend, protocol):
        pytest.skip(f"{type(backend).__name__} does not implement {protocol.__name__}")


def results_store(backend: Backend) -> None:
    """Skip the test unless the backend keeps results itself."""
    if not backend.supports_results:
        pytest.skip(f"{type(backend).__name__} keeps no results (App names another store)")


def put(backend: Backend, queue: str, *ids: str, run_at: float | None = None) -> None:
    """Enqueue tasks ``ids`` on ``queue``, each with the payload ``b"data-<id>"``."""
    backend.enqueue([Message(queue, i, f"data-{i}".encode(), run_at) for i in ids])


def reserve(
    backend: Backend, queues: str | list[str], limit: int = 10, lease: float = 30.0, who: str = "w1"
) -> list[Reservation]:
    """Lease tasks from one queue or several."""
    return backend.reserve([queues] if isinstance(queues, str) else queues, limit, lease, who)


def ids(rs: list[Reservation]) -> list[str]:
    """The task ids of reservations, in their order."""
    return [r.task_id for r in rs]


class ContractBase:
    """The fixtures and settings every part of the suite shares."""

    #: lease and delay length of the timing tests, in seconds
    TICK: ClassVar[float] = TICK
    #: the same for a backend without ``subsecond_timing``
    SLOW_TICK: ClassVar[float] = SLOW_TICK
    #: extra sleep past a deadline, in seconds
    MARGIN: ClassVar[float] = MARGIN

    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        """The backend under test: override this fixture in your subclass."""
        pytest.fail(
            f"{type(self).__name__} must provide the backend under test: override the "
            "'backend' fixture (a method decorated with @pytest.fixture that yields "
            "a new Backend and closes it afterwards); see gatorapp.testing.contract",
            pytrace=False,
        )

    @pytest.fixture
    def limited_backend(self, backend: Backend) -> Iterator[Backend]:
        """The backend under test, refusing encoded payloads over 100 bytes.
        Override it to build the backend with your own size option."""
        backend.max_payload = 100
        yield backend

    @pytest.fixture
    def q(self) -> str:
        """A queue name no other test uses."""
        return f"contract-{uuid.uuid4().hex[:10]}"

    def tick(self, backend: Backend) -> float:
        """The timing tests' lease and delay length for ``backend``."""
        return self.SLOW_TICK if not backend.capabilities.subsecond_timing else self.TICK
