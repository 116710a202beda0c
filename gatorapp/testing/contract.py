"""The backend contract: one suite of tests every backend runs.

The backends gatorapp ships run it (``tests/test_contract.py``), and so can a
backend written anywhere else: subclass :class:`BackendContract` in a test
module and give it the ``backend`` fixture, which yields a fresh backend and
closes it afterwards::

    import pytest
    from gatorapp.testing.contract import BackendContract

    class TestMyBackend(BackendContract):
        @pytest.fixture
        def backend(self):
            b = MyBackend("mystore://...")
            yield b
            b.close()

pytest then runs every test below against it. The tests talk to the backend
only through the public :class:`gatorapp.backends.Backend` interface.

This module needs pytest, which gatorapp itself does not depend on: install it
with your tests (``pip install pytest``, or gatorapp's ``dev`` extra).
``import gatorapp.testing`` does not import this module.

What a subclass provides
------------------------
``backend`` (required)
    A fixture yielding a new :class:`~gatorapp.backends.Backend` for each test.
    It may request other fixtures (``tmp_path``, a server's URL, ...). The
    default fails every test with a message saying to override it.
``limited_backend`` (optional)
    A backend on the same store that refuses encoded payloads over 100 bytes.
    The default sets ``max_payload = 100`` on ``backend``; override it to build
    one with your backend's own option instead.
``TICK``, ``SLOW_TICK``, ``MARGIN`` (optional class attributes)
    The lease and delay length of the timing tests in seconds (``SLOW_TICK``
    for a backend without ``subsecond_timing``) and the extra sleep past a
    deadline. Shorter values make the suite faster, longer ones more patient
    with a slow store.

Capabilities a backend lacks
----------------------------
A backend that cannot keep part of the contract says so on its class, with
the reason (see :class:`gatorapp.backends.Capabilities` for every name)::

    class SQSBackend(Backend):
        capabilities = Capabilities.lacking(take="SQS cannot remove a message by id")

Each test of such a part calls :func:`needs` and is skipped with the
backend's own reason. A backend lacking ``subsecond_timing`` runs the timing
tests with ``SLOW_TICK`` steps instead of skipping them. The tests of the
result store and the list of live workers are skipped for a backend that
keeps neither (``supports_results``, ``supports_workers``), and the
concurrency test for one that is not ``thread_safe``.

Every test uses queue names of its own (the ``q`` fixture), so a backend on a
shared server needs no cleanup between tests.
"""

from __future__ import annotations

from .administration import AdministrationContract
from .delivery import DeliveryContract
from .support import ContractBase, ids, needs, needs_protocol, put, reserve, results_store

__all__ = [
    "AdministrationContract",
    "BackendContract",
    "ContractBase",
    "DeliveryContract",
    "ids",
    "needs",
    "needs_protocol",
    "put",
    "reserve",
    "results_store",
]


class BackendContract(DeliveryContract, AdministrationContract):
    """The contract suite; subclass it and provide the ``backend`` fixture
    (see the module's docstring). Its name does not start with ``Test``, so
    pytest collects only the subclasses."""
