"""Hooks, retries and dead letters, through a real worker (``app.drain()``).

Retries are re-enqueued with a backoff delay; these tests use
``tenacity.wait_fixed(0)`` so a burst worker picks them up at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tenacity

from gatorapp import App, ConfigurationError, Retry, Task, Worker

NOW = tenacity.wait_fixed(0)
EVENTS: list[tuple[object, ...]] = []


@pytest.fixture(autouse=True)
def _clear_events() -> Iterator[None]:
    EVENTS.clear()
    yield
    EVENTS.clear()


@pytest.fixture
def app(url: str) -> Iterator[App]:
    a = App(url)
    yield a
    a.close()


class FeedUnavailable(Exception):
    pass


class FeedNotFound(Exception):
    pass


# Hooks live at module level: workers find hooks by registered name.
def log_start(task: Task) -> None:
    EVENTS.append(("on_start", task.attempt, task.retries))


def log_success(task: Task, result: object) -> None:
    EVENTS.append(("on_success", result))


def log_error(task: Task, err: BaseException) -> None:
    EVENTS.append(("on_error", type(err).__name__, task.attempt, task.retries))


def maybe_retry_error(task: Task, err: BaseException) -> None:
    # The seed's example: grant another attempt when the feed is unavailable.
    EVENTS.append(("maybe_retry", task.attempt, task.retries))
    if isinstance(err, FeedUnavailable):
        task.retries += 1


def broken_success(task: Task, result: object) -> None:
    EVENTS.append(("broken_success", result))
    raise RuntimeError("on_success hook is broken")


def broken_start(task: Task) -> None:
    EVENTS.append(("broken_start", task.attempt))
    raise RuntimeError("on_start hook is broken")


def broken_error(task: Task, err: BaseException) -> None:
    EVENTS.append(("broken_error", task.attempt))
    raise RuntimeError("on_error hook is broken")


def dead(app: App, queue: str = "default") -> dict[str, tuple[str, str]]:
    return {d.task_id: (d.reason, d.error) for d in app.backend.dead_list(queue)}


# -- hooks -----------------------------------------------------------------------------------------


def test_hook_order_on_success(app: App) -> None:
    @app.task(on_start=log_start, on_success=log_success, on_error=log_error)
    def add(a: int, b: int) -> int:
        EVENTS.append(("add",))
        return a + b

    add.delay(2, 3)
    assert app.drain() == 1
    assert EVENTS == [("on_start", 1, 0), ("add",), ("on_success", 5)]


def test_hook_order_on_error_with_retries(app: App) -> None:
    @app.task(
        retries=1, backoff=NOW, on_start=log_start, on_success=log_success, on_error=log_error
    )
    def fail() -> None:
        EVENTS.append(("fail",))
        raise FeedNotFound("gone")

    fail.delay()
    assert app.drain() == 2
    # on_error sees the retries left before this failure is counted.
    assert EVENTS == [
        ("on_start", 1, 1),
        ("fail",),
        ("on_error", "FeedNotFound", 1, 1),
        ("on_start", 2, 0),
        ("fail",),
        ("on_error", "FeedNotFound", 2, 0),
    ]


def test_hooks_chosen_at_enqueue_override_decoration(app: App) -> None:
    app.hook(log_error)

    @app.task(on_error=maybe_retry_error)
    def fail() -> None:
        raise FeedNotFound("gone")

    fail.options(on_error=log_error).delay()
    app.drain()
    assert EVENTS == [("on_error", "FeedNotFound", 1, 0)]


def test_exception_in_on_success_does_not_rerun_the_task(app: App) -> None:
    @app.task(retries=3, backoff=NOW, on_success=broken_success)
    def add(a: int, b: int) -> int:
        EVENTS.append(("add",))
        return a + b

    add.delay(2, 3)
    assert app.drain() == 1
    assert EVENTS == [("add",), ("broken_success", 5)]
    s = app.backend.stats("default")
    assert (s.ready, s.delayed, s.running, s.dead) == (0, 0, 0, 0)


def test_exception_in_on_success_eager(app: App) -> None:
    @app.task(retries=3, on_success=broken_success)
    def add(a: int, b: int) -> int:
        EVENTS.append(("add",))
        return a + b

    assert add.options(is_async=False).delay(2, 3).result == 5
    assert EVENTS == [("add",), ("broken_success", 5)]


def test_exception_in_on_start_fails_the_attempt_before_the_function(app: App) -> None:
    @app.task(retries=1, backoff=NOW, on_start=broken_start, on_error=log_error)
    def add(a: int, b: int) -> int:
        EVENTS.append(("add",))
        return a + b

    h = add.delay(2, 3)
    assert app.drain() == 2
    assert EVENTS == [
        ("broken_start", 1),
        ("on_error", "RuntimeError", 1, 1),
        ("broken_start", 2),
        ("on_error", "RuntimeError", 2, 0),
    ]
    assert dead(app)[h.id][0] == "retries_exhausted"


def test_exception_in_on_error_still_retries(app: App) -> None:
    @app.task(retries=1, backoff=NOW, on_error=broken_error)
    def fail() -> None:
        raise FeedNotFound("gone")

    fail.delay()
    assert app.drain() == 2
    assert EVENTS == [("broken_error", 1), ("broken_error", 2)]
    assert app.backend.stats("default").dead == 1


def test_on_error_may_grant_retries_bounded_by_max_attempts(url: str) -> None:
    app = App(url, max_attempts=4)
    try:

        @app.task(on_error=maybe_retry_error, backoff=NOW)
        def fetch_feeds() -> None:
            raise FeedUnavailable("503")

        h = fetch_feeds.delay()
        assert app.drain() == 4
        assert [e[1] for e in EVENTS] == [1, 2, 3, 4]
        reason, error = dead(app)[h.id]
        assert reason == "attempt_limit"
        assert "FeedUnavailable" in error
    finally:
        app.close()


def test_on_error_granted_retry_then_success(app: App) -> None:
    @app.task(on_error=maybe_retry_error, backoff=NOW)
    def fetch_feeds() -> int:
        if len(EVENTS) < 2:
            raise FeedUnavailable("503")
        return 7

    fetch_feeds.delay()
    assert app.drain() == 3
    assert app.backend.stats("default").dead == 0


def test_on_error_bound_in_eager_mode(url: str) -> None:
    app = App(url, max_attempts=3)
    try:

        @app.task(on_error=maybe_retry_error)
        def fetch_feeds() -> None:
            raise FeedUnavailable("503")

        with pytest.raises(FeedUnavailable):
            fetch_feeds.options(is_async=False).delay()
        assert len(EVENTS) == 3
    finally:
        app.close()


def test_app_options_with_hooks_the_seed_way(app: App) -> None:
    app.hook(log_start)
    app.hook(log_success)
    app.hook(maybe_retry_error)

    @app.task(backoff=NOW)
    def fetch_feeds(feeds: list[str]) -> int:
        if not any(e[0] == "maybe_retry" for e in EVENTS):
            raise FeedUnavailable(feeds[0])
        return len(feeds)

    with app.options(
        on_start=log_start, on_success=log_success, on_error=maybe_retry_error
    ) as opts:
        opts.task(fetch_feeds, ["http://a/feed", "http://b/feed"])
    assert app.drain() == 2
    assert EVENTS == [
        ("on_start", 1, 0),
        ("maybe_retry", 1, 0),
        ("on_start", 2, 0),
        ("on_success", 2),
    ]


# -- hook registration -----------------------------------------------------------------------------


def unregistered_hook(task: Task, err: BaseException) -> None:
    pass


def named_hook(task: Task, err: BaseException) -> None:
    EVENTS.append(("named", type(err).__name__))


def test_lambda_and_nested_hooks_fail_at_decoration(app: App) -> None:
    def nested(task: Task, err: BaseException) -> None:
        pass

    for bad in (lambda task, err: None, nested):
        with pytest.raises(ConfigurationError, match="module level"):

            @app.task(on_error=bad)
            def f() -> None:
                pass

        with pytest.raises(ConfigurationError, match="module level"):
            app.hook(bad)


def test_unresolvable_hooks_fail_at_enqueue_and_enqueue_nothing(app: App) -> None:
    def nested(task: Task, err: BaseException) -> None:
        pass

    @app.task
    def f() -> None:
        pass

    for bad in (unregistered_hook, "no.such.hook", lambda task, err: None, nested, 42):
        with pytest.raises(ConfigurationError):
            f.options(on_error=bad).delay()
        with pytest.raises(ConfigurationError), app.options(on_start=bad) as opts:
            opts.task(f)
    assert app.backend.len("default") == 0


def test_registered_hooks_by_function_and_by_name(app: App) -> None:
    hook = app.hook(log_error)
    assert hook is log_error  # the decorator gives the function back

    app.hook(name="errors.log")(named_hook)

    @app.task
    def fail() -> None:
        raise FeedNotFound("x")

    fail.options(on_error=log_error).delay()
    fail.options(on_error="errors.log").delay()
    app.drain()
    assert sorted(map(str, EVENTS)) == sorted(
        map(str, [("on_error", "FeedNotFound", 1, 0), ("named", "FeedNotFound")])
    )


def test_hooks_given_to_a_task_can_be_named_by_others(app: App) -> None:
    @app.task(on_success=log_success)
    def first() -> int:
        return 1

    @app.task
    def second() -> int:
        return 2

    second.options(on_success=log_success).delay()
    app.drain()
    assert EVENTS == [("on_success", 2)]


def test_hook_unknown_to_the_worker_is_a_dead_letter(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/q.db"
    producer, consumer = App(url), App(url)
    try:
        for a in (producer, consumer):

            @a.task(name="jobs.add")
            def add(x: int, y: int) -> int:
                EVENTS.append(("add", x + y))
                return x + y

        producer.hook(log_success)
        h = producer.tasks["jobs.add"]
        handle = producer.producer.send(h, (1, 2), {}, {"on_success": log_success})
        producer.producer.send(h, (3, 4), {}, {})
        consumer.drain()
        assert EVENTS == [("add", 7)]
        reason, error = dead(consumer)[handle.id]
        assert reason == "unknown_hook" and "log_success" in error
    finally:
        producer.close()
        consumer.close()


# -- retries ---------------------------------------------------------------------------------------


def test_retries_n_gives_n_plus_one_attempts(app: App) -> None:
    @app.task(retries=3, backoff=NOW, on_error=log_error)
    def fail(n: int) -> None:
        EVENTS.append(("fail", n))
        raise FeedNotFound(f"feed {n}")

    h = fail.delay(9)
    assert app.drain() == 4
    assert [e for e in EVENTS if e[0] == "fail"] == [("fail", 9)] * 4
    assert [e[3] for e in EVENTS if e[0] == "on_error"] == [3, 2, 1, 0]
    reason, error = dead(app)[h.id]
    assert reason == "retries_exhausted"
    assert "FeedNotFound: feed 9" in error and "Traceback" in error
    s = app.backend.stats("default")
    assert (s.ready, s.delayed, s.running, s.dead) == (0, 0, 0, 1)


def test_retries_option_overrides_the_decoration(app: App) -> None:
    @app.task(retries=5, backoff=NOW)
    def fail() -> None:
        EVENTS.append(("fail",))
        raise FeedNotFound("x")

    fail.options(retries=1).delay()
    assert app.drain() == 2
    fail.options(retries=0).delay()
    assert app.drain() == 1


def test_retry_then_success(app: App) -> None:
    @app.task(retries=5, backoff=NOW, on_success=log_success)
    def flaky() -> str:
        EVENTS.append(("try",))
        if len(EVENTS) < 3:
            raise FeedUnavailable("not yet")
        return "ok"

    flaky.delay()
    assert app.drain() == 3
    assert EVENTS[-1] == ("on_success", "ok")
    assert app.backend.stats("default").dead == 0


def test_retry_on_limits_which_exceptions_retry(app: App) -> None:
    @app.task(retries=3, backoff=NOW, retry_on=(FeedUnavailable,))
    def fetch(kind: str) -> None:
        EVENTS.append(("fetch", kind))
        raise FeedUnavailable(kind) if kind == "503" else FeedNotFound(kind)

    h404 = fetch.delay("404")
    h503 = fetch.delay("503")
    app.drain()
    assert EVENTS.count(("fetch", "404")) == 1
    assert EVENTS.count(("fetch", "503")) == 4
    letters = dead(app)
    assert letters[h404.id][0] == "not_retryable"
    assert letters[h503.id][0] == "retries_exhausted"


def test_retry_on_single_class(app: App) -> None:
    @app.task(retries=2, backoff=NOW, retry_on=FeedUnavailable)
    def fetch() -> None:
        EVENTS.append(("fetch",))
        raise FeedUnavailable("x")

    fetch.delay()
    assert app.drain() == 3


def test_raise_retry_with_delay(app: App) -> None:
    @app.task(retries=1)
    def poll() -> str:
        EVENTS.append(("poll",))
        if len(EVENTS) == 1:
            raise Retry(delay=0.3)
        return "ready"

    poll.delay()
    assert app.drain() == 1
    s = app.backend.stats("default")
    assert (s.ready, s.delayed) == (0, 1)
    time.sleep(0.4)
    assert app.drain() == 1
    assert EVENTS == [("poll",), ("poll",)]
    assert app.backend.stats("default").dead == 0


def test_raise_retry_counts_against_the_budget(app: App) -> None:
    @app.task(retries=1)
    def poll() -> None:
        EVENTS.append(("poll",))
        raise Retry(delay=0)

    h = poll.delay()
    assert app.drain() == 2
    assert dead(app)[h.id][0] == "retries_exhausted"


def test_raise_retry_ignores_retry_on(app: App) -> None:
    @app.task(retries=1, retry_on=FeedUnavailable)
    def poll() -> None:
        EVENTS.append(("poll",))
        raise Retry(delay=0, reason="not ready")

    poll.delay()
    assert app.drain() == 2


def test_backoff_delays_the_retry_without_blocking_the_worker(app: App) -> None:
    @app.task(retries=1, backoff=tenacity.wait_fixed(60))
    def fail() -> None:
        EVENTS.append(("fail",))
        raise FeedUnavailable("x")

    @app.task
    def ok(n: int) -> None:
        EVENTS.append(("ok", n))

    fail.delay()
    for n in range(3):
        ok.delay(n)
    started = time.monotonic()
    assert app.drain() == 4
    assert time.monotonic() - started < 5
    assert EVENTS == [("fail",), ("ok", 0), ("ok", 1), ("ok", 2)]
    s = app.backend.stats("default")
    assert (s.ready, s.delayed, s.dead) == (0, 1, 0)


def test_default_backoff_is_exponential_with_jitter(app: App) -> None:
    from gatorapp.execution import DEFAULT_BACKOFF, backoff_seconds

    waits = [backoff_seconds(DEFAULT_BACKOFF, n, ValueError()) for n in (1, 2, 3, 20)]
    assert 1 <= waits[0] <= 2 and 2 <= waits[1] <= 3 and 4 <= waits[2] <= 5
    assert waits[3] <= 301


# -- dead letters ----------------------------------------------------------------------------------


def test_unknown_task_name_is_a_dead_letter_and_the_worker_goes_on(app: App) -> None:
    @app.task
    def ok(n: int) -> None:
        EVENTS.append(("ok", n))

    stranger = Task("somewhere.else.task", [1], queue="default")
    app.backend.push("default", stranger.task_id, stranger.serialize())
    ok.delay(1)
    assert app.drain() == 1
    assert EVENTS == [("ok", 1)]
    reason, error = dead(app)[stranger.task_id]
    assert reason == "unknown_task" and "somewhere.else.task" in error


def test_undecodable_payload_is_a_dead_letter_and_the_worker_goes_on(app: App) -> None:
    @app.task
    def ok(n: int) -> None:
        EVENTS.append(("ok", n))

    app.backend.push("default", "junk-1", b"\xc1 not msgpack")
    app.backend.push("default", "junk-2", b"")
    ok.delay(1)
    app.backend.push("default", "junk-3", b'{"json": "is not msgpack"}')
    ok.delay(2)
    app.drain()
    assert EVENTS == [("ok", 1), ("ok", 2)]
    letters = dead(app)
    assert {k: v[0] for k, v in letters.items()} == {
        "junk-1": "decode_error",
        "junk-2": "decode_error",
        "junk-3": "decode_error",
    }
    assert app.backend.dead_get("default", "junk-1").data == b"\xc1 not msgpack"  # type: ignore[union-attr]


def test_requeue_dead_restores_the_retry_budget(app: App) -> None:
    @app.task(retries=2, backoff=NOW)
    def flaky() -> str:
        EVENTS.append(("try",))
        if len(EVENTS) < 6:
            raise FeedUnavailable("down")
        return "up"

    h = flaky.delay()
    assert app.drain() == 3
    assert dead(app)[h.id][0] == "retries_exhausted"
    assert app.requeue_dead("default", h.id) is True
    assert app.backend.dead_get("default", h.id) is None
    # Attempts 4 and 5 fail, 6 succeeds: the budget of 2 retries was given back.
    assert app.drain() == 3
    assert dead(app) == {}
    assert app.requeue_dead("default", h.id) is False
    assert app.requeue_dead("default", "unknown") is False


def test_requeue_dead_restores_the_budget_chosen_at_enqueue(app: App) -> None:
    @app.task(backoff=NOW)  # no retries by default
    def fail() -> None:
        EVENTS.append(("fail",))
        raise FeedUnavailable("down")

    h = fail.options(retries=2).delay()
    assert app.drain() == 3
    assert app.requeue_dead("default", h.id) is True
    assert app.drain() == 3
    assert dead(app)[h.id][0] == "retries_exhausted"


def test_requeue_dead_counts_attempts_afresh(url: str) -> None:
    # Near the max_attempts cap, a requeued task still gets its whole budget.
    app = App(url, max_attempts=3)
    try:

        @app.task(retries=2, backoff=NOW)
        def fail() -> None:
            EVENTS.append(("fail",))
            raise FeedUnavailable("down")

        h = fail.delay()
        assert app.drain() == 3
        for _ in range(2):
            assert app.requeue_dead("default", h.id) is True
            assert app.drain() == 3
            assert dead(app)[h.id][0] == "retries_exhausted"
    finally:
        app.close()


def test_requeue_dead_of_an_undecodable_payload_keeps_it_as_it_was(app: App) -> None:
    app.backend.push("default", "junk", b"\xc1")
    app.drain()
    assert app.requeue_dead("default", "junk") is True
    assert app.backend.pop("default") == b"\xc1"


def test_requeue_after_registering_the_missing_task(url: str) -> None:
    app = App(url)
    try:
        stranger = Task("late.arrival", [5])
        app.backend.push("default", stranger.task_id, stranger.serialize())
        app.drain()
        assert dead(app)[stranger.task_id][0] == "unknown_task"

        @app.task(name="late.arrival")
        def late(n: int) -> None:
            EVENTS.append(("late", n))

        assert app.requeue_dead("default", stranger.task_id) is True
        app.drain()
        assert EVENTS == [("late", 5)]
    finally:
        app.close()


def test_system_exit_in_a_task_is_a_dead_letter(app: App) -> None:
    @app.task(retries=3)
    def quits() -> None:
        raise SystemExit(3)

    @app.task
    def ok() -> None:
        EVENTS.append(("ok",))

    h = quits.delay()
    ok.delay()
    app.drain()
    assert EVENTS == [("ok",)]
    assert dead(app)[h.id][0] == "crashed"


def test_max_deliveries_buries_a_task_whose_workers_keep_dying(url: str) -> None:
    app = App(url, max_deliveries=2, lease=0.2)
    try:

        @app.task
        def ok() -> None:
            EVENTS.append(("ok",))

        h = ok.delay()
        for _ in range(2):  # two workers took it and died
            assert app.backend.reserve(["default"], 1, 0.2, "dying")
            time.sleep(0.3)
        Worker(app, burst=True).run_forever()
        assert EVENTS == []
        assert dead(app)[h.id][0] == "worker_lost"
    finally:
        app.close()


def test_a_retried_attempt_logs_a_warning_and_its_traceback_at_debug(caplog) -> None:
    import logging

    import tenacity

    from gatorapp import App

    app = App("memory://")
    calls: list[int] = []

    @app.task(retries=1, backoff=tenacity.wait_none())
    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            {}["missing"]

    caplog.set_level(logging.DEBUG, "gatorapp.worker")
    flaky.delay()
    app.drain()
    assert len(calls) == 2
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "failed (attempt 1); retrying" in warning.getMessage()
    assert "KeyError: 'missing'" in warning.getMessage()
    tracebacks = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("Traceback" in m and "KeyError" in m for m in tracebacks)
