"""Signed envelopes: with keys, only payloads signed by one of them run."""

from __future__ import annotations

import pytest
import tenacity

from gatorapp import App, ConfigurationError, Worker, cli
from gatorapp.backends import Message
from gatorapp.envelope import Task
from gatorapp.signing import MAGIC

KEY = "k" * 32
OLD = "o" * 32


def _app(url: str, key: object = None) -> tuple[App, list]:
    app = App(url, signing_key=key) if key is not None else App(url)
    ran: list = []

    @app.task(name="job", queue="q")
    def job(x: int) -> None:
        ran.append(x)

    @app.task(name="flaky", queue="q", retries=1, backoff=tenacity.wait_none())
    def flaky(x: int) -> None:
        ran.append(("flaky", x))
        if len(ran) == 1:
            raise RuntimeError("once")

    return app, ran


def _drain(app: App) -> None:
    Worker(app, ["q"], burst=True).run_forever()


def _dead(app: App) -> dict[str, str]:
    return {d.task_id: d.reason for d in app.backend.dead_list("q")}


def test_signed_tasks_run_and_are_stored_signed(tmp_path) -> None:
    app, ran = _app(f"sqlite:///{tmp_path}/q.db", KEY)
    h = app.registry.tasks["job"].fn  # (the plain function)
    assert callable(h)
    one = app.enqueue_many(app.registry.tasks["job"].fn, [(1,), (2,)])
    stored = app.backend.reserve(["q"], 10, 30, "peek")
    assert stored and all(r.data.startswith(MAGIC) for r in stored)
    app.backend.release(stored)
    _drain(app)
    assert sorted(ran) == [1, 2] and len(one) == 2
    assert _dead(app) == {}
    app.close()


@pytest.mark.parametrize("producer_key", [None, "x" * 32], ids=["unsigned", "wrong key"])
def test_a_payload_not_signed_by_a_key_is_a_bad_signature_dead_letter(
    tmp_path, producer_key: str | None
) -> None:
    url = f"sqlite:///{tmp_path}/q.db"
    producer, _ = _app(url, producer_key)
    worker_app, ran = _app(url, KEY)
    h = producer.registry.tasks["job"]
    handle = producer.producer.send(h, (1,), {}, {})
    _drain(worker_app)
    assert ran == []
    assert _dead(worker_app) == {handle.id: "bad_signature"}
    for app in (producer, worker_app):
        app.close()


def test_a_forged_envelope_written_into_the_broker_does_not_run(tmp_path) -> None:
    # What someone with write access to the broker can do without the key.
    app, ran = _app(f"sqlite:///{tmp_path}/q.db", KEY)
    forged = Task("job", [666], task_id="forged", queue="q", retries=50).serialize()
    app.backend.enqueue([Message("q", "forged", forged)])
    app.backend.enqueue([Message("q", "forged2", MAGIC + b"\0" * 32 + forged)])
    _drain(app)
    assert ran == []
    assert _dead(app) == {"forged": "bad_signature", "forged2": "bad_signature"}
    app.close()


def test_key_rotation_the_first_key_signs_every_key_verifies(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/q.db"
    old_producer, _ = _app(url, OLD)
    old_producer.producer.send(old_producer.registry.tasks["job"], (1,), {}, {})
    rotated, ran = _app(url, [KEY, OLD])
    rotated.producer.send(rotated.registry.tasks["job"], (2,), {}, {})
    _drain(rotated)
    assert sorted(ran) == [1, 2]
    new_only, ran_new = _app(url, KEY)
    old_producer.producer.send(old_producer.registry.tasks["job"], (3,), {}, {})
    _drain(new_only)
    assert ran_new == [] and list(_dead(new_only).values()) == ["bad_signature"]
    for app in (old_producer, rotated, new_only):
        app.close()


def test_retries_and_requeued_dead_letters_stay_signed(tmp_path) -> None:
    app, ran = _app(f"sqlite:///{tmp_path}/q.db", KEY)
    app.producer.send(app.registry.tasks["flaky"], (1,), {}, {})
    _drain(app)
    assert ran == [("flaky", 1), ("flaky", 1)]  # the retry ran: it was signed too
    ran.clear()
    letter_id = app.producer.send(
        app.registry.tasks["flaky"], (2,), {}, {"retries": 0}
    ).id  # fails once, no retry: a dead letter
    _drain(app)
    assert _dead(app) == {letter_id: "retries_exhausted"}
    assert app.requeue_dead("q", letter_id)
    _drain(app)
    assert ran == [("flaky", 2), ("flaky", 2)] and _dead(app) == {}
    app.close()


def test_an_app_without_keys_refuses_signed_payloads(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/q.db"
    signed, _ = _app(url, KEY)
    handle = signed.producer.send(signed.registry.tasks["job"], (1,), {}, {})
    plain, ran = _app(url)
    _drain(plain)
    assert ran == [] and _dead(plain) == {handle.id: "bad_signature"}
    (letter,) = plain.backend.dead_list("q")
    assert "has no signing key" in letter.error
    for app in (signed, plain):
        app.close()


def test_keys_from_the_environment_and_short_keys_refused(monkeypatch) -> None:
    monkeypatch.setenv("GATORAPP_SIGNING_KEY", f"{KEY}, {OLD}")
    app = App("memory://")
    assert app.registry.signer is not None and len(app.registry.signer.keys) == 2
    with pytest.raises(ConfigurationError, match="at least 16 bytes"):
        App("memory://", signing_key="short")
    with pytest.raises(ConfigurationError, match="at least one key"):
        App("memory://", signing_key=[])


def test_eager_mode_and_dead_show_with_keys(tmp_path, capsys, monkeypatch) -> None:
    url = f"sqlite:///{tmp_path}/q.db"
    app, ran = _app(url, KEY)
    app.producer.send(app.registry.tasks["job"], (5,), {}, {"is_async": False})
    assert ran == [5]  # eager mode signs and verifies too
    ran.clear()  # (flaky fails when it is the first to run)
    h = app.producer.send(app.registry.tasks["flaky"], (9,), {}, {"retries": 0})
    _drain(app)
    (tmp_path / "signed_app.py").write_text(
        "from gatorapp import App\n"
        f"app = App({url!r}, signing_key={KEY!r})\n"
        "app.task(name='flaky', queue='q')(lambda x: None)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    capsys.readouterr()
    assert cli.main(["dead", "-A", "signed_app", "-Q", "q", "show", h.id]) == 0
    out = capsys.readouterr().out
    assert "task:      flaky" in out and "args:      [9]" in out
    app.close()
