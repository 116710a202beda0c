"""The test suite's own PostgreSQL server (tests/service_postgres.py): it
starts on a free loopback port, keeps what was committed when it is killed,
and comes back on the same port."""

from __future__ import annotations

import psycopg
import pytest
from service_postgres import PostgresServer

pytestmark = pytest.mark.slow


def test_a_killed_server_comes_back_with_what_was_committed(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (n integer)")
        conn.execute("INSERT INTO kept VALUES (1), (2)")
    port = postgres_server.port
    postgres_server.restart(kill=True)
    assert postgres_server.port == port
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT sum(n) FROM kept").fetchone() == (3,)
    postgres_server.restart(kill=False)  # (a fast shutdown too)
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM kept").fetchone() == (2,)
