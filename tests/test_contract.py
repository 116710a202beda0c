"""The backend contract suite (gatorapp.testing.contract) on every built-in backend.

Each test runs once per name in ``conftest.BACKENDS`` through the
``backend_url`` fixture: a new backend joins by adding its name there and a
branch in ``backend_url``; nothing here changes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gatorapp.backends import Backend, load_backend
from gatorapp.testing.contract import BackendContract


class TestBackends(BackendContract):
    @pytest.fixture
    def backend(self, backend_url: str) -> Iterator[Backend]:
        b = load_backend(backend_url)
        yield b
        b.close()

    @pytest.fixture
    def limited_backend(self, backend_url: str) -> Iterator[Backend]:
        # Built with the option, as App(max_payload=...) builds it.
        b = load_backend(backend_url, max_payload=100)
        yield b
        b.close()
