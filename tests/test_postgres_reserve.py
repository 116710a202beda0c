"""The PostgreSQL backend's reserve and settle statements: one statement for
several queues, earlier queues first, then due time, then enqueue order; and
the schema's migration from version 1."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from gatorapp.backends import Message
from gatorapp.backends.postgres import PostgresBackend
from gatorapp.backends.postgres_schema import SCHEMA_VERSION, create_tables
from gatorapp.errors import ConfigurationError

pytestmark = pytest.mark.slow


@pytest.fixture
def backend(postgres_url: str):
    b = PostgresBackend(postgres_url)
    yield b
    b.close()


def test_one_reserve_takes_earlier_queues_first(backend) -> None:
    now = time.time()
    backend.enqueue([Message("low", f"l{i}", b"x", now - 100 - i) for i in range(3)])
    backend.enqueue([Message("high", f"h{i}", b"x") for i in range(3)])
    backend.enqueue([Message("high", "h-early", b"x", now - 50)])
    backend.enqueue([Message("high", "h-later", b"x", now + 3600)])  # not due
    got = backend.reserve(["high", "low"], 6, 30, "w")
    assert [(r.queue, r.task_id) for r in got] == [
        ("high", "h-early"),
        ("high", "h0"),
        ("high", "h1"),
        ("high", "h2"),
        ("low", "l2"),
        ("low", "l1"),
    ]
    # The first queue fills a small batch by itself.
    assert backend.ack(got) == [True] * 6
    backend.enqueue([Message("high", "h3", b"x"), Message("high", "h4", b"x")])
    assert [r.task_id for r in backend.reserve(["high", "low"], 2, 30, "w")] == ["h3", "h4"]
    assert [r.task_id for r in backend.reserve(["high", "low"], 5, 30, "w")] == ["l0"]
    assert backend.reserve(["high", "low"], 5, 30, "w") == []


def test_the_order_of_the_queues_given_decides(backend) -> None:
    backend.enqueue([Message("a", "a1", b"x"), Message("b", "b1", b"x")])
    assert [r.task_id for r in backend.reserve(["b", "a"], 1, 30, "w")] == ["b1"]
    assert [r.task_id for r in backend.reserve(["b", "a"], 1, 30, "w")] == ["a1"]


def test_settle_and_reserve_in_one_call(backend) -> None:
    backend.enqueue([Message("a", f"t{i}", b"x") for i in range(4)])
    first = backend.reserve(["a"], 2, 30, "w")
    settled, got = backend.settle_and_reserve(first, [], [], ["a"], 10, 30, "w")
    assert settled.acked == [True, True]
    assert [r.task_id for r in got] == ["t2", "t3"]
    # A repeat of the same settlements: those rows are gone.
    settled, again = backend.begin_settle_and_reserve(first, [], [], ["a"], 10, 30, "w")()
    assert settled.acked == [False, False] and again == []


def test_a_token_or_row_it_never_gave_is_refused(backend) -> None:
    backend.enqueue([Message("a", "t", b"x")])
    (r,) = backend.reserve(["a"], 1, 30, "w")
    assert isinstance(r.handle, int)  # (the row: settles find it by its key)
    wrong = [r._replace(token=t) for t in ("junk", "", "1.")]
    wrong += [r._replace(handle=h) for h in (None, 0, r.handle + 1, str(r.handle), 2**70)]
    for bad in wrong:
        assert backend.extend([bad]) == [False]
        assert backend.ack([bad]) == [False]
    assert backend.ack([r]) == [True]


def test_reserve_reads_the_due_index_in_order(backend, postgres_url) -> None:
    backend.enqueue([Message("a", f"t{i}", b"x") for i in range(5000)])
    backend.enqueue([Message("b", f"t{i}", b"x") for i in range(5000)])
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("ANALYZE gatorapp_tasks")
        from gatorapp.backends.postgres_sql import RESERVE

        with conn.transaction():
            plan = "\n".join(
                r[0]
                for r in conn.execute(
                    "EXPLAIN (ANALYZE, COSTS OFF) " + RESERVE, ("tok", 30, ["a", "b"], 10, 10)
                )
            )
            conn.execute("ROLLBACK")  # (never keep the leases: EXPLAIN ANALYZE ran it)
    assert "gatorapp_tasks_due" in plan, plan
    assert "Sort" not in plan, plan  # (the index's order, no sort of every due task)


def test_a_version_1_database_is_migrated(postgres_url) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        create_tables(conn)
        conn.execute("ALTER TABLE gatorapp_tasks RESET (fillfactor)")
        conn.execute("UPDATE gatorapp_schema SET version = 1")
    b = PostgresBackend(postgres_url)
    try:
        b.enqueue([Message("a", "t", b"x")])
    finally:
        b.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert conn.execute("SELECT max(version) FROM gatorapp_schema").fetchone() == (
            SCHEMA_VERSION,
        )
        assert conn.execute("SELECT count(*) FROM gatorapp_schema").fetchone() == (1,)
        (options,) = conn.execute(
            "SELECT reloptions FROM pg_class WHERE relname = 'gatorapp_tasks'"
        ).fetchone()
        assert "fillfactor=50" in options


def vacuums(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'gatorapp_tasks'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_process_that_deleted_enough_rows_vacuums_the_table(postgres_url, monkeypatch) -> None:
    monkeypatch.setattr("gatorapp.backends.postgres.VACUUM_EVERY", 10)
    monkeypatch.setattr("gatorapp.backends.postgres.VACUUM_LIVE", 1)
    before = vacuums(postgres_url)
    for flag, wanted in (("?vacuum=0", False), ("", True)):
        b = PostgresBackend(postgres_url + flag)
        assert b.vacuum is wanted
        try:
            b.enqueue([Message("q", f"t{i}", b"x") for i in range(14)])
            got = b.reserve(["q"], 12, 30, "w")
            assert b.ack(got) == [True] * 12
        finally:
            b.close()  # (waits for the vacuum it started)
        deadline = time.monotonic() + 10  # (statistics reach the view within a second or so)
        while vacuums(postgres_url) == before and wanted and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (vacuums(postgres_url) > before) is wanted


def test_vacuum_takes_on_or_off(postgres_url) -> None:
    from gatorapp.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="vacuum="):
        PostgresBackend(postgres_url + "?vacuum=maybe")


def test_settles_read_rows_by_key_when_the_planner_thinks_the_table_empty(
    backend, postgres_url
) -> None:
    # A table vacuumed while nearly empty, of many pages: the planner's row
    # estimate is near zero however many tasks it holds since.
    backend.enqueue([Message("a", f"old{i}", b"x" * 200) for i in range(20000)])
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DELETE FROM gatorapp_tasks")
        conn.execute("VACUUM ANALYZE gatorapp_tasks")
    backend.enqueue([Message("a", f"t{i}", b"x") for i in range(5000)])
    got = backend.reserve(["a"], 100, 30, "w")
    from gatorapp.backends.postgres_sql import ACK

    seqs, tokens = [r.handle for r in got], [r.token for r in got]
    conn = backend.conn  # (the backend's own connection, as a settle uses it)
    plan = "\n".join(
        r[0] for r in conn.execute("EXPLAIN (COSTS OFF) " + ACK, (seqs, tokens, seqs), binary=True)
    )
    assert "Seq Scan on gatorapp_tasks" not in plan, plan
    from gatorapp.backends.postgres_sql import RESERVE

    plan = "\n".join(
        r[0] for r in conn.execute("EXPLAIN (COSTS OFF) " + RESERVE, ("tok", 30, ["a"], 10, 10))
    )
    assert "Seq Scan on gatorapp_tasks" not in plan and "Sort" not in plan, plan
    assert backend.ack(got) == [True] * 100


def test_planner_settings_are_on_its_own_connections_only_and_can_be_left_alone(
    postgres_url,
) -> None:
    for url, expected in ((postgres_url, "off"), (postgres_url + "?planner=0", "on")):
        b = PostgresBackend(url)
        try:
            assert b.conn.execute("SHOW enable_seqscan").fetchone() == (expected,)
            assert b.conn.execute("SHOW enable_bitmapscan").fetchone() == (expected,)
        finally:
            b.close()
    with psycopg.connect(postgres_url) as conn:  # (anyone else's: untouched)
        assert conn.execute("SHOW enable_seqscan").fetchone() == ("on",)
    with pytest.raises(ConfigurationError, match="planner= takes 1 or 0"):
        PostgresBackend(postgres_url + "?planner=maybe")


def test_a_role_that_may_only_read_and_write_the_tables_runs(postgres_url, caplog) -> None:
    # Tables made (and owned) by one role; producers and workers connect as
    # another that may not create or alter anything.
    owner = PostgresBackend(postgres_url)
    owner.enqueue([Message("a", "made", b"x")])
    owner.close()
    role = f"app_{uuid.uuid4().hex[:8]}"
    db = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"REVOKE CREATE ON SCHEMA public FROM PUBLIC, {role}")
        conn.execute(f'GRANT CONNECT ON DATABASE "{db}" TO {role}')
        conn.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
        )
        conn.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}")
    limited = postgres_url.replace("://gatorapp@", f"://{role}@")
    assert limited != postgres_url
    b = PostgresBackend(limited)
    try:
        b.enqueue([Message("a", "t", b"x")])
        assert [r.task_id for r in b.reserve(["a"], 10, 30, "w")] == ["made", "t"]
    finally:
        b.close()
    # Tables of the version before: the storage settings need the owner; it
    # goes on without them, and says so.
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE gatorapp_schema SET version = 1")
    b = PostgresBackend(limited)
    try:
        with caplog.at_level("WARNING", logger="gatorapp.backends"):
            b.enqueue([Message("a", "u", b"x")])
        assert "may not alter them" in caplog.text
        assert b.stats("a").running == 2
    finally:
        b.close()
