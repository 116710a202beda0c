"""The App contract, in process: registration, .delay(), .options(), delays,
eager runs, app.options(), get/cancel and the errors that keep bad input out
of the queue. Hooks, retries and dead letters are in test_retries.py; the
envelope, custom task classes and hostile payloads in test_envelope.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import tenacity

from gatorapp import (
    App,
    ConfigurationError,
    PayloadTooLarge,
    Rejected,
    SerializationError,
    Task,
    UnknownTaskError,
)
from gatorapp.backends.memory import MemoryBackend

CALLS: list[tuple[str, object]] = []


@pytest.fixture(autouse=True)
def _clear_calls() -> Iterator[None]:
    CALLS.clear()
    yield
    CALLS.clear()


@pytest.fixture
def app(url: str) -> Iterator[App]:
    a = App(url)
    yield a
    a.close()


def on_error_hook(task: Task, err: BaseException) -> None:
    CALLS.append(("on_error", task.retries))


def waiting(app: App, queue: str = "default") -> tuple[int, int]:
    s = app.backend.stats(queue)
    return s.ready, s.delayed


def peek(app: App, queue: str, task_id: str) -> Task:
    """Decode a queued task without running it (takes it off the queue)."""
    data = app.backend.take(queue, task_id)
    assert data is not None, f"{task_id} is not waiting in {queue}"
    return app.decode(data)[0]


# -- registration ----------------------------------------------------------------------------------


def test_bare_and_parametrized_decorators(app: App) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        """Adds."""
        return a + b

    @app.task(queue="emails", retries=3)
    def send(user_id: int) -> int:
        return user_id

    assert add.name.endswith("test_bare_and_parametrized_decorators.<locals>.add")
    assert add.queue == "default" and add.tdef.retries == 0
    assert (send.queue, send.tdef.retries) == ("emails", 3)
    assert add.__name__ == "add" and add.__doc__ == "Adds."
    assert set(app.tasks) == {add.name, send.name}
    assert app.queues() == ["default", "emails"]


def test_explicit_name(app: App) -> None:
    @app.task(name="math.add")
    def add(a: int, b: int) -> int:
        return a + b

    h = add.delay(1, 2)
    assert h.name == "math.add"
    assert peek(app, "default", h.id).name == "math.add"


def test_plain_call_runs_locally_and_enqueues_nothing(app: App) -> None:
    @app.task(retries=2)
    def add(a: int, b: int) -> int:
        CALLS.append(("add", a + b))
        return a + b

    assert add(2, 3) == 5
    assert CALLS == [("add", 5)]
    assert waiting(app) == (0, 0)
    with pytest.raises(TypeError):
        add(1)  # type: ignore[call-arg]  # a plain call raises like the function


def test_delay_returns_a_handle_and_a_worker_runs_it(app: App) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        CALLS.append(("add", a + b))
        return a + b

    h = add.delay(2, 3)
    assert isinstance(h.id, str) and h.id
    assert (h.name, h.queue, h.run_at, h.result) == (add.name, "default", None, None)
    assert CALLS == []
    assert waiting(app) == (1, 0)
    assert app.drain() == 1
    assert CALLS == [("add", 5)]
    assert waiting(app) == (0, 0)


def test_kwargs_and_containers_travel(app: App) -> None:
    @app.task
    def echo(*args: object, **kwargs: object) -> None:
        CALLS.append(("echo", (args, kwargs)))

    echo.delay(1, "two", b"\x00three", [4, {"five": 5.5}], None, True, flag=False, x={"y": [1]})
    echo.delay((1, 2))  # a tuple arrives as a list, as in any msgpack or JSON queue
    app.drain()
    assert CALLS == [
        (
            "echo",
            (
                (1, "two", b"\x00three", [4, {"five": 5.5}], None, True),
                {"flag": False, "x": {"y": [1]}},
            ),
        ),
        ("echo", (([1, 2],), {})),
    ]


def test_distinct_ids(app: App) -> None:
    @app.task
    def noop() -> None:
        pass

    assert len({noop.delay().id for _ in range(50)}) == 50


def test_default_queue(url: str) -> None:
    app = App(url, default_queue="notifications")
    try:

        @app.task
        def send(user_id: int) -> None:
            CALLS.append(("send", user_id))

        @app.task(queue="images")
        def thumb(path: str) -> None:
            CALLS.append(("thumb", path))

        assert send.queue == "notifications"
        assert send.delay(7).queue == "notifications"
        thumb.delay("a.png")
        assert app.backend.len("notifications") == 1
        assert app.backend.len("images") == 1
        assert app.backend.len("default") == 0
        app.drain()
        assert sorted(CALLS) == [("send", 7), ("thumb", "a.png")]
    finally:
        app.close()


def test_map_and_enqueue_many(app: App) -> None:
    @app.task
    def square(x: int) -> None:
        CALLS.append(("square", x * x))

    handles = square.map([1, 2, 3])
    assert len({h.id for h in handles}) == 3
    app.enqueue_many(square, [(4,), (5,)], queue="bulk")
    assert app.backend.len("bulk") == 2
    app.drain(["default", "bulk"])
    assert sorted(v for _, v in CALLS) == [1, 4, 9, 16, 25]


# -- .options() ------------------------------------------------------------------------------------


def test_options_queue_and_retries(app: App) -> None:
    app.hook(on_error_hook)

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    h = add.options(queue="urgent", retries=5, on_error=on_error_hook).delay(2, 3)
    assert h.queue == "urgent"
    assert app.backend.len("urgent") == 1 and app.backend.len("default") == 0
    task = peek(app, "urgent", h.id)
    assert (task.queue, task.retries, task.func_args) == ("urgent", 5, [2, 3])
    assert task.on_error == app.registry.hook_names[on_error_hook]


def test_options_chain_and_do_not_leak(app: App) -> None:
    @app.task(queue="q1")
    def add(a: int, b: int) -> int:
        return a + b

    bound = add.options(queue="q2")
    assert bound.options(retries=1).delay(1, 1).queue == "q2"
    assert add.delay(1, 1).queue == "q1"  # the task's own defaults are untouched


def test_options_task_id(app: App) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    h = add.options(task_id="order-42").delay(1, 2)
    assert h.id == "order-42"
    # Enqueue is idempotent by (queue, task id): the second is a no-op.
    add.options(task_id="order-42").delay(100, 200)
    assert app.backend.len("default") == 1
    assert peek(app, "default", "order-42").func_args == [1, 2]


@pytest.mark.parametrize("bad", [{"foo": 1}, {"queue_name": "x"}, {"delay": 3}])
def test_unknown_option_raises(app: App, bad: dict[str, object]) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    with pytest.raises(ConfigurationError, match="unknown task option"):
        add.options(**bad)
    with pytest.raises(ConfigurationError, match="unknown task option"):
        app.options(**bad)


@pytest.mark.parametrize(
    "opts",
    [
        {"retries": -1},
        {"retries": 1.5},
        {"retries": True},
        {"retries": 100},  # the app's max_attempts
        {"delay_by": -1},
        {"delay_by": "soon"},
        {"delay_by": float("nan")},
        {"delay_until": "tomorrow"},
        {"is_async": "maybe"},
        {"queue": "x" * 500},
        {"task_id": 123},
        {"task_id": b"bytes"},
    ],
)
def test_bad_option_values_raise_and_enqueue_nothing(app: App, opts: dict[str, object]) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    with pytest.raises(ConfigurationError):
        add.options(**opts).delay(1, 2)
    assert app.backend.len(str(opts.get("queue", "default"))) == 0


def test_bad_retries_at_decoration(app: App) -> None:
    with pytest.raises(ConfigurationError):

        @app.task(retries=-1)
        def f() -> None:
            pass


# -- delays ----------------------------------------------------------------------------------------


def test_delay_by_seconds_and_timedelta(app: App) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    now = time.time()
    h1 = add.options(delay_by=30).delay(1, 2)
    h2 = add.options(delay_by=timedelta(minutes=1)).delay(1, 2)
    h3 = add.options(delay_by=0).delay(1, 2)
    assert h1.run_at == pytest.approx(now + 30, abs=2)
    assert h2.run_at == pytest.approx(now + 60, abs=2)
    assert h3.run_at is None
    assert waiting(app) == (1, 2)
    assert app.drain() == 1  # only the one due now


def test_delay_until_aware_and_epoch(app: App) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    when = datetime.now(timezone.utc) + timedelta(hours=1)
    h = add.options(delay_until=when).delay(1, 2)
    assert h.run_at == pytest.approx(when.timestamp(), abs=0.001)
    other_zone = when.astimezone(timezone(timedelta(hours=-6)))
    assert add.options(delay_until=other_zone).delay(1, 2).run_at == pytest.approx(h.run_at)
    epoch = time.time() + 120
    assert add.options(delay_until=epoch).delay(1, 2).run_at == pytest.approx(epoch)
    # Already past: ready now.
    assert add.options(delay_until=time.time() - 10).delay(1, 2).run_at is None
    assert waiting(app) == (1, 3)


def test_naive_datetime_is_utc(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    # A local zone far from UTC shows the naive datetime is not read as local time.
    monkeypatch.setenv("TZ", "America/Chicago")
    time.tzset()
    try:

        @app.task
        def add(a: int, b: int) -> int:
            return a + b

        naive = datetime(2030, 1, 2, 3, 4, 5)
        h = add.options(delay_until=naive).delay(1, 2)
        assert h.run_at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc).timestamp()
    finally:
        monkeypatch.undo()
        time.tzset()


def test_delay_by_and_delay_until_together_is_an_error(app: App) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    with pytest.raises(ConfigurationError, match="not both"):
        add.options(delay_by=10, delay_until=time.time() + 10).delay(1, 2)
    with (
        pytest.raises(ConfigurationError, match="not both"),
        app.options(delay_by=10, delay_until=time.time() + 10) as opts,
    ):
        opts.task(add, 1, 2)
    assert waiting(app) == (0, 0)


def test_delayed_task_runs_once_due_and_does_not_block_others(app: App) -> None:
    @app.task
    def mark(x: str) -> None:
        CALLS.append(("mark", x))

    mark.options(delay_by=0.3).delay("later")
    mark.delay("now")
    app.drain()
    assert CALLS == [("mark", "now")]
    time.sleep(0.4)
    app.drain()
    assert CALLS == [("mark", "now"), ("mark", "later")]


# -- eager runs ------------------------------------------------------------------------------------


def log_start(task: Task) -> None:
    CALLS.append(("on_start", task.attempt))


def log_success(task: Task, result: object) -> None:
    CALLS.append(("on_success", result))


def log_error(task: Task, err: BaseException) -> None:
    CALLS.append(("on_error", type(err).__name__))


class Flaky(Exception):
    pass


def test_is_async_false_runs_now(app: App) -> None:
    @app.task(on_start=log_start, on_success=log_success)
    def add(a: int, b: int) -> int:
        CALLS.append(("add", a + b))
        return a + b

    h = add.options(is_async=False).delay(2, 3)
    assert h.result == 5
    assert h.task is not None and h.task.status == "success"
    assert CALLS == [("on_start", 1), ("add", 5), ("on_success", 5)]
    assert waiting(app) == (0, 0)
    # Delays do not apply to a run that happens now.
    assert add.options(is_async=False, delay_by=3600).delay(1, 1).result == 2
    # Strings, as read from environment variables, are understood.
    assert add.options(is_async="false").delay(1, 2).result == 3
    assert add.options(is_async="true").delay(1, 2).result is None
    assert waiting(app) == (1, 0)


def test_is_async_false_retries_then_succeeds(app: App) -> None:
    attempts: list[int] = []

    # The default backoff is exponential: an eager run must not sleep through it.
    @app.task(retries=3, on_error=log_error)
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise Flaky("not yet")
        return "done"

    started = time.monotonic()
    h = flaky.options(is_async=False).delay()
    assert time.monotonic() - started < 1
    assert h.result == "done"
    assert len(attempts) == 3
    assert CALLS == [("on_error", "Flaky"), ("on_error", "Flaky")]


def test_is_async_false_final_failure_reraises_the_tasks_own_exception(app: App) -> None:
    @app.task(retries=1, on_error=log_error)
    def boom(n: int) -> None:
        CALLS.append(("boom", n))
        raise Flaky(f"failed {n}")

    with pytest.raises(Flaky, match="failed 7"):
        boom.options(is_async=False).delay(7)
    assert CALLS == [("boom", 7), ("on_error", "Flaky"), ("boom", 7), ("on_error", "Flaky")]
    s = app.backend.stats("default")
    assert (s.ready, s.delayed, s.dead) == (0, 0, 0)


def test_eager_app(url: str) -> None:
    app = App(url, eager=True)
    try:

        @app.task
        def add(a: int, b: int) -> int:
            return a + b

        assert add.delay(2, 3).result == 5
        assert [h.result for h in add.starmap([(1, 1), (2, 2)])] == [2, 4]
        assert app.backend.len("default") == 0
    finally:
        app.close()


# -- app.options() ---------------------------------------------------------------------------------


def test_app_options_context_manager(app: App) -> None:
    @app.task(on_error=on_error_hook)
    def add(a: int, b: int) -> int:
        return a + b

    with app.options(retries=2, on_error=on_error_hook) as opts:
        h1 = opts.task(add, 2, 3)
        h2 = opts.task(add.name, 4, 5)  # by registered name too
    t1 = peek(app, "default", h1.id)
    hook_name = app.registry.hook_names[on_error_hook]
    assert (t1.retries, t1.func_args, t1.on_error) == (2, [2, 3], hook_name)
    assert peek(app, "default", h2.id).func_args == [4, 5]


def test_app_options_queue_and_eager(app: App) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    with app.options(queue="elsewhere") as opts:
        opts.task(add, 1, 2)
    assert app.backend.len("elsewhere") == 1
    with app.options(is_async=False) as opts:
        assert opts.task(add, 2, 3).result == 5


def test_app_options_unregistered_function(app: App) -> None:
    def not_a_task() -> None:
        pass

    with pytest.raises(UnknownTaskError), app.options() as opts:
        opts.task(not_a_task)


# -- arguments and payloads that cannot go in -----------------------------------------------------


@pytest.mark.parametrize(
    "arg",
    [object(), {1, 2}, datetime.now(), 2**70, {1: "int key"}, {(1, 2): "tuple key"}],
    ids=["object", "set", "datetime", "bigint", "int-key", "tuple-key"],
)
def test_unencodable_arguments_fail_at_delay(app: App, arg: object) -> None:
    @app.task
    def take(x: object) -> None:
        pass

    with pytest.raises(TypeError) as info:
        take.delay(arg)
    assert isinstance(info.value, SerializationError)
    with pytest.raises(SerializationError):
        take.delay(x=[arg])
    with pytest.raises(SerializationError):
        take.options(is_async=False).delay(arg)
    assert waiting(app) == (0, 0)


def test_deep_nesting_fails_at_delay_not_in_the_worker(app: App) -> None:
    @app.task
    def take(x: object) -> None:
        CALLS.append(("take", 1))

    deep: object = 1
    for _ in range(100):
        deep = [deep]
    with pytest.raises(SerializationError):
        take.delay(deep)
    ok: object = 1
    for _ in range(30):  # 60 levels: within the limit
        ok = {"k": [ok]}
    take.delay(ok)
    app.drain()
    assert CALLS == [("take", 1)]
    assert app.backend.stats("default").dead == 0


def test_payload_too_large(url: str) -> None:
    app = App(url, max_payload=1000)
    try:

        @app.task
        def take(x: str) -> None:
            pass

        with pytest.raises(PayloadTooLarge, match="max_payload"):
            take.delay("x" * 2000)
        assert waiting(app) == (0, 0)
        take.delay("x" * 100)
        assert waiting(app) == (1, 0)
    finally:
        app.close()


@pytest.mark.parametrize(
    "url", ["nonsense", "localhost:6379", "foo://bar", "sqlite://host/x.db", 42]
)
def test_bad_url_is_a_configuration_error(url: object) -> None:
    with pytest.raises(ConfigurationError):
        App(url, lease=1).backend  # type: ignore[arg-type]  # noqa: B018


def test_bad_app_arguments() -> None:
    with pytest.raises(ConfigurationError):
        App("memory://", lease=0)
    with pytest.raises(ConfigurationError):
        App("memory://", task_class=dict)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        App("memory://", eager="sometimes")


def test_bad_task_definitions(app: App) -> None:
    with pytest.raises(ConfigurationError):
        app.task(retry_on="ValueError")(lambda: None)  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError):
        app.task(backoff=5)(lambda: None)  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError):
        app.task(lease=0)(lambda: None)  # type: ignore[call-overload]


def test_tenacity_backoff_accepted(app: App) -> None:
    @app.task(backoff=tenacity.wait_exponential(multiplier=1, max=60), retry_on=(Flaky,))
    def f() -> None:
        pass

    assert f.tdef.retry_on == (Flaky,)


# -- get and cancel --------------------------------------------------------------------------------


def test_get_runs_a_waiting_task_now(app: App) -> None:
    @app.task(on_success=log_success)
    def add(a: int, b: int) -> int:
        return a + b

    h = add.options(delay_by=3600).delay(2, 3)
    other = add.delay(1, 1)
    task = app.get(h.id)
    assert task is not None
    assert (task.task_id, task.result, task.status) == (h.id, 5, "success")
    assert CALLS == [("on_success", 5)]
    assert app.get(h.id) is None  # gone
    assert app.get("unknown-id") is None
    assert waiting(app) == (1, 0)
    found = app.get(other.id, queue="default")
    assert found is not None and found.result == 2
    assert app.get(other.id, queue="default") is None


def test_get_in_another_queue(app: App) -> None:
    @app.task(queue="emails")
    def send(n: int) -> int:
        return n

    h = send.delay(3)
    assert app.get(h.id, queue="default") is None
    assert waiting(app, "emails") == (1, 0)
    task = app.get(h.id)  # looks in every queue the app knows
    assert task is not None and task.result == 3


def test_get_reraises_a_failing_task(app: App) -> None:
    @app.task
    def boom() -> None:
        raise Flaky("no")

    h = boom.delay()
    with pytest.raises(Flaky):
        app.get(h.id)


def test_cancel_removes_unrun(app: App) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        CALLS.append(("add", a + b))
        return a + b

    h = add.delay(2, 3)
    keep = add.delay(1, 1)
    task = app.cancel(h.id)
    assert task is not None
    assert (task.task_id, task.name, task.func_args, task.status) == (
        h.id,
        add.name,
        [2, 3],
        "canceled",
    )
    assert app.cancel(h.id) is None
    assert app.cancel("unknown-id") is None
    app.drain()
    assert CALLS == [("add", 2)]
    assert app.cancel(keep.id) is None  # already ran


def test_cancel_and_get_leave_a_running_task_alone(app: App) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    h = add.delay(2, 3)
    (r,) = app.backend.reserve(["default"], 1, 30.0, "other-worker")
    assert app.cancel(h.id) is None
    assert app.get(h.id) is None
    assert app.backend.ack([r]) == [True]


def test_get_of_a_payload_that_cannot_run_is_a_dead_letter(app: App) -> None:
    stranger = Task("not.registered", [1])
    app.backend.push("default", stranger.task_id, stranger.serialize())
    with pytest.raises(Rejected) as info:
        app.get(stranger.task_id)
    assert info.value.reason == "unknown_task"
    letter = app.backend.dead_get("default", stranger.task_id)
    assert letter is not None and letter.reason == "unknown_task"


# -- threads ---------------------------------------------------------------------------------------


class SlowToBuild(MemoryBackend):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        time.sleep(0.05)  # widens the window in which threads race to build it
        super().__init__(*args, **kwargs)


def test_threads_enqueueing_on_a_fresh_app_share_one_backend() -> None:
    app = App("memory://", backend_class=SlowToBuild)

    @app.task
    def f() -> None:
        pass

    start = threading.Barrier(8)

    def enqueue() -> None:
        start.wait()
        f.delay()

    threads = [threading.Thread(target=enqueue) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    assert app.backend.len("default") == 8
