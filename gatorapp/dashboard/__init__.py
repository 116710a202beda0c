"""The web dashboard (``gatorapp dashboard``, the ``dashboard`` extra).

One page, drawn once by the server and kept live by a few lines of script
that poll ``/api/overview`` every two seconds and write what comes back into
the page as text (``textContent``: data never becomes HTML). Queues with their
counts and a throughput chart, the workers alive and what they run, the dead
letters with show / requeue / purge, and a task looked up by id. The JSON
API under ``/api/`` is the page's, and a script's with a bearer token.

Starlette and uvicorn serve it, Jinja2 (escaping on) draws the page; no
front-end build step, nothing fetched from anywhere but the dashboard
itself. Who may do what: :mod:`gatorapp.dashboard.auth`.
"""

from __future__ import annotations

from typing import Any

from ..errors import MissingDependencyError


def create(app: Any, token: str | None = None) -> Any:
    """The dashboard of ``app`` as an ASGI application (Starlette)."""
    try:
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            'the dashboard needs starlette, uvicorn and jinja2: pip install "gatorapp[dashboard]"'
        ) from None
    from .web import build

    return build(app, token)
