"""Testing your own tasks: memory:// with app.drain(), and eager mode."""

import pytest

import tasks


def test_drain_runs_what_was_queued(tmp_path, monkeypatch):
    monkeypatch.setattr(tasks, "OUTBOX", tmp_path)
    tasks.send_welcome_email.delay(1)
    tasks.send_welcome_email.delay(2)
    assert tasks.app.backend.len("emails") == 2

    assert tasks.app.drain() == 2  # runs everything ready, here and now

    assert sorted(p.name for p in tmp_path.iterdir()) == ["welcome-1.txt", "welcome-2.txt"]
    assert tasks.app.backend.len("emails") == 0


def test_get_returns_what_the_task_returned():
    handle = tasks.add.delay(2, 3)
    tasks.app.drain()
    assert handle.get(timeout=1) == 5


def test_eager_returns_the_result():
    handle = tasks.add.options(is_async=False).delay(2, 3)
    assert handle.result == 5


def test_eager_raises_the_tasks_own_error():
    with pytest.raises(ValueError, match="no such user"):
        tasks.send_welcome_email.options(is_async=False).delay(0)


def test_eager_mode_for_a_whole_test(tmp_path, monkeypatch):
    monkeypatch.setattr(tasks, "OUTBOX", tmp_path)
    monkeypatch.setattr(tasks.app, "eager", True)  # like App(eager=True)
    handle = tasks.send_welcome_email.delay(7)
    assert handle.result == str(tmp_path / "welcome-7.txt")


def test_a_plain_call_enqueues_nothing():
    assert tasks.add(2, 3) == 5
    assert tasks.app.backend.len("default") == 0
