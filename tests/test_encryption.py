"""Encrypted envelopes: a broker reader sees neither task names nor arguments."""

from __future__ import annotations

import pytest
import tenacity

from gatorapp import App, ConfigurationError, Worker, cli
from gatorapp.backends import Message
from gatorapp.encryption import MAGIC, new_key

KEY = new_key()
OLD = new_key()
SECRET = "card-4111-1111"


def _app(url: str, key: object = None, signing_key: object = None) -> tuple[App, list]:
    app = App(url, encryption_key=key, signing_key=signing_key)
    ran: list = []

    @app.task(name="charge", queue="q")
    def charge(card: str) -> None:
        ran.append(card)

    @app.task(name="flaky", queue="q", retries=1, backoff=tenacity.wait_none())
    def flaky(card: str) -> None:
        ran.append(card)
        if len(ran) == 1:
            raise RuntimeError("once")

    return app, ran


def _send(app: App, name: str = "charge", **opts: object) -> str:
    return app.producer.send(app.registry.tasks[name], (SECRET,), {}, dict(opts)).id


def _drain(app: App) -> None:
    Worker(app, ["q"], burst=True).run_forever()


def _stored(app: App) -> list[bytes]:
    got = app.backend.reserve(["q"], 100, 30, "peek")
    app.backend.release(got)
    return [r.data for r in got]


def test_tasks_are_stored_encrypted_and_run(tmp_path) -> None:
    app, ran = _app(f"sqlite:///{tmp_path}/q.db", KEY)
    _send(app)
    app.enqueue_many(app.registry.tasks["charge"].fn, [(SECRET,)])
    stored = _stored(app)
    assert len(stored) == 2
    for data in stored:
        assert data.startswith(MAGIC)
        assert SECRET.encode() not in data and b"charge" not in data
    _drain(app)
    assert ran == [SECRET, SECRET]
    app.close()


def test_without_the_key_a_task_is_a_dead_letter_that_stays_encrypted(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/q.db"
    producer, _ = _app(url, KEY)
    task_id = _send(producer)
    worker_app, ran = _app(url)  # deployed without its key
    _drain(worker_app)
    assert ran == []
    (letter,) = worker_app.backend.dead_list("q")
    assert (letter.task_id, letter.reason) == (task_id, "decrypt_error")
    assert letter.data.startswith(MAGIC) and SECRET.encode() not in letter.data
    # With the key, the letter can be read and requeued.
    assert producer.requeue_dead("q", task_id)
    keyed, ran_keyed = _app(url, KEY)
    _drain(keyed)
    assert ran_keyed == [SECRET]
    for app in (producer, worker_app, keyed):
        app.close()


def test_an_altered_payload_does_not_decrypt(tmp_path) -> None:
    app, ran = _app(f"sqlite:///{tmp_path}/q.db", KEY)
    _send(app)
    (data,) = _stored(app)
    altered = data[:-1] + bytes([data[-1] ^ 1])
    app.backend.enqueue([Message("q", "altered", altered)])
    _drain(app)
    assert ran == [SECRET]  # the genuine one
    reasons = {d.task_id: d.reason for d in app.backend.dead_list("q")}
    assert reasons == {"altered": "decrypt_error"}
    app.close()


def test_key_rotation_and_plaintext_during_rollout(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/q.db"
    old, _ = _app(url, OLD)
    _send(old)
    plain, _ = _app(url)
    _send(plain)  # enqueued before encryption was turned on
    rotated, ran = _app(url, [KEY, OLD])
    _send(rotated)
    _drain(rotated)
    assert ran == [SECRET] * 3
    _send(old)
    new_only, ran_new = _app(url, KEY)
    _drain(new_only)
    assert ran_new == [] and [d.reason for d in new_only.backend.dead_list("q")] == [
        "decrypt_error"
    ]
    for app in (old, plain, rotated, new_only):
        app.close()


def test_retries_requeues_and_dead_show_with_signing_and_encryption(
    tmp_path, capsys, monkeypatch
) -> None:
    url = f"sqlite:///{tmp_path}/q.db"
    sign = "s" * 32
    app, ran = _app(url, KEY, sign)
    _send(app, "flaky")
    _drain(app)
    assert ran == [SECRET, SECRET]  # the retry was sealed the same way
    ran.clear()
    failed = _send(app, "flaky", retries=0)
    _drain(app)
    (letter,) = app.backend.dead_list("q")
    assert letter.reason == "retries_exhausted" and SECRET.encode() not in letter.data
    (tmp_path / "enc_app.py").write_text(
        "from gatorapp import App\n"
        f"app = App({url!r}, encryption_key={KEY!r}, signing_key={sign!r})\n"
    )
    (tmp_path / "nokey_app.py").write_text(
        f"from gatorapp import App\napp = App({url!r}, signing_key={sign!r})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    capsys.readouterr()
    assert cli.main(["dead", "-A", "enc_app", "-Q", "q", "show", failed]) == 0
    assert SECRET in capsys.readouterr().out
    assert cli.main(["dead", "-A", "nokey_app", "-Q", "q", "show", failed]) == 0
    out = capsys.readouterr().out
    assert SECRET not in out and "not decodable" in out
    assert app.requeue_dead("q", failed)
    ran.clear()
    ran.append("not first")  # (flaky fails only when it is the first to run)
    _drain(app)
    assert ran == ["not first", SECRET]
    app.close()


def test_keys_checked_and_read_from_the_environment(monkeypatch) -> None:
    with pytest.raises(ConfigurationError, match="16, 24 or 32 bytes"):
        App("memory://", encryption_key="not a key")
    with pytest.raises(ConfigurationError, match="16, 24 or 32 bytes"):
        App("memory://", encryption_key=b"short")
    monkeypatch.setenv("GATORAPP_ENCRYPTION_KEY", f"{KEY},{OLD}")
    app = App("memory://")
    assert app.registry.cipher is not None
    ran: list = []
    app.task(name="t")(ran.append).delay(1)
    app.drain()
    assert ran == [1]
