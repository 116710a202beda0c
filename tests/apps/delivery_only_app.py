"""An app on a backend that implements delivery only: the eight primitives
and nothing of the administration protocols (it keeps its tasks in a memory
backend it holds, reached through the public delivery calls alone)."""

from collections.abc import Sequence

import tenacity

from gatorapp import App
from gatorapp.backends import Backend, Burial, Message, Reservation, RetryItem
from gatorapp.backends.memory import MemoryBackend


class DeliveryOnly(Backend):
    def __init__(self, url: str = "delivery-only://", **kwargs: int) -> None:
        super().__init__(url, **kwargs)
        self.inner = MemoryBackend()

    def _enqueue(self, messages: Sequence[Message]) -> None:
        self.inner.enqueue(messages)

    def _reserve(self, queue: str, limit: int, lease: float, worker_id: str) -> list[Reservation]:
        return self.inner.reserve([queue], limit, lease, worker_id)

    def _ack(self, reservations: Sequence[Reservation]) -> list[bool]:
        return self.inner.ack(reservations)

    def _retry(self, items: Sequence[RetryItem]) -> list[bool]:
        return self.inner.retry(items)

    def _release(self, reservations: Sequence[Reservation]) -> list[bool]:
        return self.inner.release(reservations)

    def _extend(self, reservations: Sequence[Reservation]) -> list[bool]:
        return self.inner.extend(reservations)

    def _bury(self, items: Sequence[Burial]) -> list[bool]:
        return self.inner.bury(items)

    def _dead_add(self, queue: str, task_id: str, data: bytes, reason: str, error: str) -> None:
        self.inner.dead_add(queue, task_id, data, reason, error)


app = App("delivery-only://", backend_class=DeliveryOnly)
ran: list[int] = []


@app.task(retries=1, backoff=tenacity.wait_none())
def double(n: int) -> int:
    if n < 0:
        raise ValueError("negative")
    ran.append(n)
    return 2 * n
