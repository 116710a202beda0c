"""The task envelope: its msgpack format, custom task classes, and payloads
that were not written by gatorapp. A payload is data, never code: whatever
bytes a worker reserves end as a run of a registered task or as a dead letter
with a reason, and nothing is ever imported because a payload names it."""

from __future__ import annotations

import bz2
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatorapp import App, DecodeError, PayloadTooLarge, Rejected, SerializationError, Task
from gatorapp.envelope import ENVELOPE_VERSION, unpack

RAN: list[Any] = []
# (bad_signature and decrypt_error: random bytes may start like a sealed payload)
REASONS = {
    "decode_error",
    "unknown_task",
    "unknown_hook",
    "too_large",
    "bad_signature",
    "decrypt_error",
}


@pytest.fixture(autouse=True)
def _clear() -> Iterator[None]:
    RAN.clear()
    yield
    RAN.clear()


def make_app(url: str, **kwargs: Any) -> App:
    app = App(url, **kwargs)

    @app.task(name="jobs.add")
    def add(a: int, b: int) -> int:
        RAN.append(("add", a, b))
        return a + b

    return app


@pytest.fixture
def app(url: str) -> Iterator[App]:
    a = make_app(url)
    yield a
    a.close()


def envelope(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"v": 1, "id": "t1", "name": "jobs.add", "args": [1, 2], "kwargs": {}}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


# -- the format ------------------------------------------------------------------------------------


def test_envelope_is_a_versioned_msgpack_map(app: App) -> None:
    h = app.tasks["jobs.add"]
    handle = app.producer.send(h, (2, 3), {}, {"retries": 2})
    data = app.backend.take("default", handle.id)
    assert data is not None
    env = msgpack.unpackb(data, raw=False)
    assert env["v"] == ENVELOPE_VERSION == 1
    assert (env["id"], env["name"], env["queue"]) == (handle.id, "jobs.add", "default")
    assert (env["args"], env["kwargs"], env["retries"], env["attempt"]) == ([2, 3], {}, 2, 0)


def test_round_trip_keeps_every_field() -> None:
    t = Task(
        "jobs.add",
        [1, b"\x00", {"a": [None, 1.5]}],
        {"k": "v"},
        task_id="abc",
        queue="q",
        retries=3,
        attempt=2,
        on_start="h.start",
        on_success="h.ok",
        on_error="h.err",
        options={"lease": 5},
    )
    back = Task.deserialize(t.serialize())
    assert back.to_dict() == t.to_dict()
    assert (back.on_start, back.on_success, back.on_error) == ("h.start", "h.ok", "h.err")


def test_unknown_fields_are_ignored_and_missing_ones_defaulted(app: App) -> None:
    newer = envelope(v=2, priority=5, trace={"span": "x"}, kwargs=...)
    task, _ = app.decode(msgpack.packb(newer))
    assert (task.task_id, task.name, task.func_args, task.func_kwargs) == (
        "t1",
        "jobs.add",
        [1, 2],
        {},
    )
    assert (task.retries, task.attempt, task.queue) == (0, 0, "default")
    app.backend.push("default", "t1", msgpack.packb(newer))
    app.drain()
    assert RAN == [("add", 1, 2)]


# -- custom task classes ---------------------------------------------------------------------------


class SkinnyTask(Task):
    """The seed's SkinnyTask, fixed: bz2-compressed JSON, bytes in and out."""

    def serialize(self) -> bytes:
        data = {
            "task_id": self.task_id,
            "name": self.name,
            "queue": self.queue,
            "retries": self.retries,
            "attempt": self.attempt,
            "args": self.func_args,
            "kwargs": self.func_kwargs,
            "hooks": {"on_error": self.on_error} if self.on_error else {},
        }
        return bz2.compress(json.dumps(data).encode("utf-8"))

    @classmethod
    def deserialize(cls, data: bytes) -> SkinnyTask:
        raw = json.loads(bz2.decompress(data))
        return cls(
            raw["name"],
            raw.get("args", []),
            raw.get("kwargs", {}),
            task_id=raw["task_id"],
            queue=raw.get("queue", "default"),
            retries=raw.get("retries", 0),
            attempt=raw.get("attempt", 0),
            on_error=raw.get("hooks", {}).get("on_error"),
        )


SEEN_CLASSES: list[str] = []


def note_class(task: Task, err: BaseException) -> None:
    SEEN_CLASSES.append(type(task).__name__)


def test_custom_task_class_used_by_delay_and_worker(url: str) -> None:
    import tenacity

    SEEN_CLASSES.clear()
    app = App(url, task_class=SkinnyTask, max_payload=2000)
    try:
        app.hook(note_class)

        @app.task(name="jobs.concat")
        def concat(text: str, times: int) -> int:
            RAN.append(("concat", len(text) * times))
            return len(text) * times

        @app.task(name="jobs.flaky", retries=1, backoff=tenacity.wait_fixed(0))
        def flaky() -> None:
            RAN.append(("flaky",))
            if len(RAN) < 3:
                raise ValueError("once")

        # 20,000 characters compress far below the 2,000-byte limit.
        h = concat.delay("ab" * 10_000, 2)
        (r,) = app.backend.reserve(["default"], 1, 30.0, "peek")
        assert r.data.startswith(b"BZh")  # bz2, written by SkinnyTask.serialize
        app.backend.release([r])
        flaky.options(on_error=note_class).delay()
        assert app.drain() == 3
        assert RAN == [("concat", 40_000), ("flaky",), ("flaky",)]
        assert SEEN_CLASSES == ["SkinnyTask"]  # the worker decoded with the app's class
        assert app.backend.stats("default").dead == 0
        # Eager runs round-trip through the class too.
        assert concat.options(is_async=False).delay("x", 3).result == 3
        assert isinstance(app.cancel(concat.delay("y", 1).id), SkinnyTask)
        assert h.id
    finally:
        app.close()


def test_default_task_class_would_be_too_large(url: str) -> None:
    app = make_app(url, max_payload=2000)
    try:
        with pytest.raises(PayloadTooLarge):
            app.producer.send(app.tasks["jobs.add"], ("ab" * 10_000, 2), {}, {})
    finally:
        app.close()


class BrokenTask(Task):
    @classmethod
    def deserialize(cls, data: bytes) -> Task:
        raise KeyError("my format changed")


def test_custom_class_that_cannot_decode_is_a_dead_letter(url: str) -> None:
    app = App(url, task_class=BrokenTask)
    try:

        @app.task
        def f() -> None:
            RAN.append("f")

        h = f.delay()
        app.drain()
        assert RAN == []
        letter = app.backend.dead_get("default", h.id)
        assert letter is not None and letter.reason == "decode_error"
        assert "my format changed" in letter.error
    finally:
        app.close()


# -- payloads never cause imports ------------------------------------------------------------------


def test_payload_naming_a_function_imports_and_runs_nothing(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    called: list[Any] = []
    monkeypatch.setattr(os, "system", lambda *a: called.append(a))
    app.tasks["jobs.add"].fn(0, 0)  # warm up: the worker's own imports happen first
    app.producer.send(app.tasks["jobs.add"], (0, 0), {}, {})
    app.drain()
    RAN.clear()

    before = set(sys.modules)
    names = ["os.system", "subprocess.run", "gatorapp_not_a_module.evil", "builtins.eval", "jobs"]
    ids = []
    for name in names:
        t = Task(name, ["echo owned"])
        ids.append(t.task_id)
        app.backend.push("default", t.task_id, t.serialize())
    hooked = Task("jobs.add", [1, 2], on_error="os.system")
    app.backend.push("default", hooked.task_id, hooked.serialize())
    app.producer.send(app.tasks["jobs.add"], (1, 1), {}, {})
    app.drain()

    assert set(sys.modules) == before
    assert "gatorapp_not_a_module" not in sys.modules
    assert called == []
    assert RAN == [("add", 1, 1)]  # the worker went on to the valid task
    for task_id in ids:
        letter = app.backend.dead_get("default", task_id)
        assert letter is not None and letter.reason == "unknown_task"
    letter = app.backend.dead_get("default", hooked.task_id)
    assert letter is not None and letter.reason == "unknown_hook"


# -- hostile payloads ------------------------------------------------------------------------------


def nested(depth: int, leaf: Any = 1) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


VALID = msgpack.packb(envelope())

HOSTILE: dict[str, bytes] = {
    "empty": b"",
    "reserved byte": b"\xc1",
    "truncated map": VALID[:-3],
    "truncated header": b"\xdf\xff\xff\xff\xff",  # map32 claiming 4 billion entries
    "huge array": b"\xdd\xff\xff\xff\xff\x00",
    "trailing bytes": VALID + b"\x00",
    "ext type": msgpack.packb(envelope(args=[msgpack.ExtType(5, b"obj")])),
    "ext envelope": msgpack.packb(msgpack.ExtType(1, b"\x00" * 8)),
    "timestamp": msgpack.packb(envelope(args=[msgpack.Timestamp(1, 0)])),
    "timestamp in kwargs": msgpack.packb(envelope(kwargs={"when": msgpack.Timestamp(0, 5)})),
    "timestamp in opts": msgpack.packb(envelope(opts={"t": msgpack.Timestamp(0, 0)})),
    "not a map": msgpack.packb([1, "jobs.add", [1, 2]]),
    "a string": msgpack.packb("jobs.add"),
    "nil": msgpack.packb(None),
    "int keys": b"\x81\x01\x02",
    "no id": msgpack.packb(envelope(id=...)),
    "id not str": msgpack.packb(envelope(id=5)),
    "empty id": msgpack.packb(envelope(id="")),
    "no name": msgpack.packb(envelope(name=...)),
    "name not str": msgpack.packb(envelope(name=["jobs", "add"])),
    "name is bytes": msgpack.packb(envelope(name=b"jobs.add"), use_bin_type=True),
    "args a map": msgpack.packb(envelope(args={"a": 1})),
    "kwargs a list": msgpack.packb(envelope(kwargs=[1])),
    "kwargs bytes keys": msgpack.packb(envelope(kwargs={b"a": 1}), use_bin_type=True),
    "retries negative": msgpack.packb(envelope(retries=-1)),
    "retries a string": msgpack.packb(envelope(retries="3")),
    "retries a bool": msgpack.packb(envelope(retries=True)),
    "retries a float": msgpack.packb(envelope(retries=1.0)),
    "hooks a list": msgpack.packb(envelope(hooks=["os.system"])),
    "hook not str": msgpack.packb(envelope(hooks={"on_error": 5})),
    "opts a list": msgpack.packb(envelope(opts=[1])),
    "deep args": msgpack.packb(envelope(args=[nested(100)])),
    "deep kwargs": msgpack.packb(envelope(kwargs={"x": nested(100)})),
    "deeper than msgpack allows": b"\x91" * 5000 + b"\x00",
    "deep maps": b"\x81\xa1k" * 3000 + b"\x00",
    "unknown name": msgpack.packb(envelope(name="os.system")),
    "unknown hook": msgpack.packb(envelope(hooks={"on_start": "os.system"})),
    "json": b'{"id": "t1", "name": "jobs.add"}',
    "bz2": bz2.compress(b"x"),
}


@pytest.mark.parametrize("payload", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_payload_is_rejected_with_a_reason(payload: bytes) -> None:
    app = make_app("memory://")
    with pytest.raises(Rejected) as info:
        app.decode(payload)
    assert info.value.reason in REASONS
    assert info.value.error


def test_attempt_limit_holds_for_a_forged_retry_budget() -> None:
    import tenacity

    app = make_app("memory://", max_attempts=5)

    @app.task(name="jobs.fail", backoff=tenacity.wait_fixed(0))
    def fail() -> None:
        RAN.append("fail")
        raise ValueError("x")

    forged = Task("jobs.fail", retries=10**9, task_id="forged").serialize()
    app.backend.push("default", "forged", forged)
    assert app.drain() == 5
    assert RAN == ["fail"] * 5
    letter = app.backend.dead_get("default", "forged")
    assert letter is not None and letter.reason == "attempt_limit"


def test_hostile_payloads_through_a_worker(url: str) -> None:
    app = make_app(url)
    try:
        for i, payload in enumerate(HOSTILE.values()):
            app.backend.push("default", f"h{i}", payload)
        app.producer.send(app.tasks["jobs.add"], (2, 2), {}, {})
        app.drain()
        assert RAN == [("add", 2, 2)]
        letters = {d.task_id: d for d in app.backend.dead_list("default")}
        # Each hostile payload is a dead letter with a reason (the id a payload
        # claims for itself does not matter: the backend's id is kept).
        assert set(letters) == {f"h{i}" for i in range(len(HOSTILE))}
        assert {d.reason for d in letters.values()} <= REASONS
        assert app.backend.stats("default").ready == 0
    finally:
        app.close()


plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text() | st.binary() | st.integers(-9, 9), children, max_size=4)
    ),
    max_leaves=12,
)
extras = st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)) | st.builds(
    msgpack.Timestamp, st.integers(0, 2**32 - 1), st.integers(0, 999_999_999)
)
values = st.recursive(
    plain | extras,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3)
    ),
    max_leaves=8,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "v": values,
        "id": st.text(max_size=5) | values,
        "name": st.sampled_from(["jobs.add", "os.system", ""]) | values,
        "queue": values,
        "args": st.lists(values, max_size=3) | values,
        "kwargs": st.dictionaries(st.text(max_size=3), values, max_size=3) | values,
        "retries": st.integers(-3, 3) | values,
        "attempt": st.integers(-3, 3) | values,
        "hooks": st.dictionaries(st.sampled_from(["on_start", "on_error", "x"]), values) | values,
        "opts": values,
    },
)


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True, strict_types=False)


def _decode_or_reject(app: App, payload: bytes) -> None:
    try:
        task, tdef = app.decode(payload)
    except Rejected as exc:
        assert exc.reason in REASONS and exc.error
        return
    # It decoded: then it is a well-formed task of a registered name.
    assert isinstance(task, Task) and tdef.name == task.name == "jobs.add"
    assert isinstance(task.func_args, list) and isinstance(task.func_kwargs, dict)
    # And re-encoding it must work, so a retry cannot fail where the first run did not.
    Task.deserialize(task.serialize())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(envelope_fields=fields)
def test_fuzzed_envelopes_decode_or_are_rejected(envelope_fields: dict[str, Any]) -> None:
    app = make_app("memory://")
    _decode_or_reject(app, _pack(envelope_fields))


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=64) | values.map(_pack))
def test_fuzzed_bytes_decode_or_are_rejected(data: bytes) -> None:
    _decode_or_reject(make_app("memory://"), data)


@settings(max_examples=100, deadline=None)
@given(cut=st.integers(0, len(VALID) - 1), junk=st.binary(max_size=3))
def test_truncated_and_spliced_payloads(cut: int, junk: bytes) -> None:
    app = make_app("memory://")
    _decode_or_reject(app, VALID[:cut])
    _decode_or_reject(app, VALID[:cut] + junk + VALID[cut:])


def test_unpack_refuses_what_is_not_plain_data() -> None:
    for payload in (HOSTILE["ext type"], HOSTILE["reserved byte"], HOSTILE["truncated map"]):
        try:
            value = unpack(payload)
        except DecodeError:
            continue
        with pytest.raises(DecodeError):
            Task.from_dict(value)


def test_bulk_envelopes_are_byte_for_byte_the_single_ones() -> None:
    from gatorapp.envelope import envelope_dict, pack_envelope, pack_envelopes

    calls = [
        ((1,), {}),
        ((), {}),
        (("a", [1, {"x": b"y"}]), {"k": 2.5}),
        ((None, True, -(2**40)), {}),
    ]
    ids = [f"{i:032x}" for i in range(len(calls))] + ["custom id"]
    calls.append((("x" * 300,), {}))
    for hooks in (None, {"on_error": "mod.hook"}):
        for opts in (None, {"retries": 3}):
            got = pack_envelopes(ids, "mod.fn", "q", calls, 2, hooks, opts)
            want = [
                pack_envelope(envelope_dict(i, "mod.fn", "q", list(a), k, 2, 0, hooks, opts))
                for i, (a, k) in zip(ids, calls)
            ]
            assert got == want
    with pytest.raises(SerializationError):
        pack_envelopes(["a"], "mod.fn", "q", [((object(),), {})], 0)


def test_packing_a_large_value_keeps_no_large_buffer_behind() -> None:
    # Packing reuses a buffer per thread; one large value must not leave a
    # thread holding a buffer of its size for good.
    import gc
    import tracemalloc

    from gatorapp.envelope import pack

    pack(1)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        assert len(pack(b"x" * (4 << 20))) > 4 << 20
        gc.collect()
        assert tracemalloc.get_traced_memory()[0] - before < 1 << 20
    finally:
        tracemalloc.stop()
