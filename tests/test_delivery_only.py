"""A backend with delivery alone runs tasks; what needs administration says so.

The administration protocols (QueueAdmin, TakeById, DeadLetterAdmin) are
optional: a backend without them runs, retries and buries tasks as any
other, and each call that needs one raises NotAvailable naming what the
backend lacks, in the API and on the command line (exit status 2)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gatorapp import testing
from gatorapp.backends.protocols import DeadLetterAdmin, QueueAdmin, TakeById
from gatorapp.cli import main
from gatorapp.errors import NotAvailable

sys.path.insert(0, str(Path(__file__).parent / "apps"))
import delivery_only_app as subject


@pytest.fixture(autouse=True)
def fresh() -> None:
    subject.app.backend.inner = type(subject.app.backend.inner)()
    subject.ran.clear()


def test_it_runs_retries_and_buries_tasks() -> None:
    backend = subject.app.backend
    assert not isinstance(backend, QueueAdmin | TakeById | DeadLetterAdmin)
    subject.double.delay(21)
    subject.double.delay(-1)  # fails twice: a dead letter
    assert testing.drain(subject.app) == 3
    assert subject.ran == [21]
    (letter,) = backend.inner.dead_list("default")
    assert letter.reason == "retries_exhausted" and "negative" in letter.error


def test_what_needs_administration_says_what_is_missing() -> None:
    task_id = subject.double.delay(1).id
    with pytest.raises(NotAvailable, match="DeliveryOnly keeps no way to take a task by id"):
        subject.app.get(task_id)
    with pytest.raises(NotAvailable, match="DeliveryOnly keeps no queue counts"):
        subject.app.backend.len("default")
    with pytest.raises(NotAvailable, match="DeliveryOnly keeps no dead letters"):
        subject.app.requeue_dead("default", task_id)
    assert subject.app.backend.pop("default") is not None  # (delivery: there)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["status"], "keeps no queue counts"),
        (["dead", "ls"], "keeps no dead letters"),
    ],
)
def test_the_command_line_says_so_in_one_line(argv, words, capsys) -> None:
    assert main([*argv, "-A", "delivery_only_app"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gatorapp: error: DeliveryOnly") and words in err, err
    assert "Traceback" not in err


def test_the_dashboard_shows_no_counts_rather_than_failing() -> None:
    import asyncio

    import httpx

    from gatorapp.dashboard import create

    async def look() -> httpx.Response:
        transport = httpx.ASGITransport(app=create(subject.app))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            return await http.get("/api/overview")

    reply = asyncio.run(look())
    assert reply.status_code == 200, reply.text
    assert reply.json()["queues"] == [] and "keeps no queue counts" in reply.json()["counts"]
