"""The contract suite every built-in backend passes, run on DictBackend."""

from collections.abc import Iterator

import pytest
from dict_backend import DictBackend
from gatorapp import App
from gatorapp.testing import drain
from gatorapp.testing.contract import BackendContract


class TestDictBackend(BackendContract):
    TICK = 0.2  # (in memory: the timing tests may take short steps)
    MARGIN = 0.1

    @pytest.fixture
    def backend(self) -> Iterator[DictBackend]:
        b = DictBackend()
        yield b
        b.close()


def test_an_app_runs_on_it() -> None:
    app = App("dict://", backend_class=DictBackend)
    seen = []

    @app.task(retries=1)
    def add(a: int, b: int) -> None:
        seen.append(a + b)

    add.delay(1, 2)
    assert app.backend.len("default") == 1  # (QueueAdmin gives the five methods' len)
    assert drain(app) == 1 and seen == [3]
