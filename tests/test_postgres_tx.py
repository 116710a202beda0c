"""Enqueueing in the caller's own PostgreSQL transaction (connection=): a
task becomes visible when the caller commits, is gone if they roll back, and
no worker ever sees it before."""

from __future__ import annotations

import psycopg
import pytest

from gatorapp import App, ConfigurationError, TaskRunning

pytestmark = pytest.mark.slow


@pytest.fixture
def app(postgres_url: str):
    a = App(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id integer PRIMARY KEY)")
    yield a
    a.close()


def test_commit_then_the_task_runs_once(app: App, postgres_url: str) -> None:
    ran: list[int] = []

    @app.task
    def ship(order: int) -> None:
        ran.append(order)

    with psycopg.connect(postgres_url) as conn:  # (a transaction is open from the first statement)
        conn.execute("INSERT INTO orders VALUES (1)")
        handle = ship.options(connection=conn).delay(1)
        ship.options(connection=conn).map([2, 3])
        # Uncommitted: no worker sees it, no count shows it.
        assert app.backend.stats("default").ready == 0
        assert app.drain() == 0
        assert app.backend.locate("default", handle.id) is None
        conn.commit()
    assert app.backend.stats("default").ready == 3
    assert app.drain() == 3 and sorted(ran) == [1, 2, 3]
    assert app.drain() == 0  # once


def test_rollback_then_the_task_never_runs(app: App, postgres_url: str) -> None:
    ran: list[int] = []

    @app.task
    def ship(order: int) -> None:
        ran.append(order)

    with psycopg.connect(postgres_url) as conn:
        conn.execute("INSERT INTO orders VALUES (7)")
        ship.options(connection=conn).delay(7)
        conn.rollback()
    assert app.backend.stats("default").ready == 0
    assert app.drain() == 0 and ran == []
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (0,)


def test_a_refused_id_leaves_the_caller_s_transaction_usable(app: App, postgres_url: str) -> None:
    @app.task
    def ship(order: int) -> None: ...

    ship.options(task_id="fixed").delay(1)
    (held,) = app.backend.reserve(["default"], 1, 60, "w")  # running now
    with psycopg.connect(postgres_url) as conn:
        conn.execute("INSERT INTO orders VALUES (9)")
        with pytest.raises(TaskRunning):
            ship.options(connection=conn, task_id="fixed").delay(2)  # other arguments
        conn.execute("INSERT INTO orders VALUES (10)")  # the transaction goes on
        conn.commit()
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (2,)
    app.backend.ack([held])


def test_other_backends_and_other_objects_say_what_to_do(app: App, tmp_path) -> None:
    @app.task
    def ship(order: int) -> None: ...

    with pytest.raises(ConfigurationError, match="psycopg 3 Connection"):
        ship.options(connection=object()).delay(1)
    other = App(f"sqlite:///{tmp_path}/q.db")
    job = other.task(lambda: None, name="job")
    with pytest.raises(ConfigurationError, match="enqueue after your transaction commits"):
        job.options(connection=object()).delay()
