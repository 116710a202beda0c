"""Edge cases of App: get() of a failing task, options precedence, limits."""

from __future__ import annotations

import pytest

from gatorapp import App, ConfigurationError


def test_get_of_a_task_that_fails_leaves_a_dead_letter_and_raises():
    app = App("memory://")

    @app.task
    def boom():
        raise KeyError("gone")

    h = boom.options(delay_by=60).delay()
    with pytest.raises(KeyError):
        app.get(h.id)
    (letter,) = app.backend.dead_list("default")
    assert (letter.task_id, letter.reason) == (h.id, "retries_exhausted")
    assert "KeyError" in letter.error
    assert app.requeue_dead("default", h.id)
    assert app.backend.stats("default").ready == 1


def test_options_bound_to_the_task_win_over_the_context():
    app = App("memory://")

    @app.task
    def add(a, b):
        return a + b

    with app.options(queue="ctx", retries=2) as opts:
        h = opts.task(add.options(queue="own"), 1, 2)
    assert h.queue == "own"
    assert app.backend.len("own") == 1


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"max_deliveries": 0}, {"lease": 0}])
def test_limits_are_validated(kwargs):
    with pytest.raises(ConfigurationError):
        App("memory://", **kwargs)


def test_alligator_task_forms_are_refused_with_the_gatorapp_spelling() -> None:
    from gatorapp import App, ConfigurationError, Task

    app = App("memory://")

    def send_email(address):
        return address

    with pytest.raises(ConfigurationError, match=r"enqueue with send_email.delay\(42\)"):
        app.task(send_email, 42)
    registered = app.task(send_email)
    with pytest.raises(ConfigurationError, match=r"is a task already.*send_email.delay"):
        app.task(registered)  # Alligator's enqueue with no arguments

    class Plain(Task):
        def deserialize(self, data):  # forgot @classmethod
            return super().deserialize(data)

    with pytest.raises(ConfigurationError, match="deserialize must be a @classmethod"):
        App("memory://", task_class=Plain)

    with pytest.raises(ImportError, match=r"gatorapp has no Gator; use App: app = App\(url\)"):
        from gatorapp import Gator  # noqa: F401
