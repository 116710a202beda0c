"""``gatorapp dashboard``: serve the web dashboard (see gatorapp.dashboard)."""

from __future__ import annotations

import argparse
import logging
import os

from ..app import App
from ..dashboard import create
from ..dashboard.auth import TOKEN_ENV, is_loopback
from ..errors import MissingDependencyError
from .common import UsageError, no_store


def cmd_dashboard(app: App, args: argparse.Namespace) -> int:
    token = args.token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(args.host) and token is None:
        raise UsageError(
            f"the dashboard listens on {args.host}, beyond this machine: give it a token "
            f"(--token TOKEN or ${TOKEN_ENV}), which every request must then carry"
        )
    if token is not None and len(token) < 16:
        raise UsageError("the dashboard's token must be at least 16 characters")
    if no_store(app):
        return 1
    asgi = create(app, token)
    try:
        import uvicorn
    except ImportError:
        raise MissingDependencyError(
            'the dashboard needs uvicorn: pip install "gatorapp[dashboard]"'
        ) from None
    where = f"http://{args.host}:{args.port}/"
    login = " (open it once with ?token=TOKEN)" if token else ""
    print(f"gatorapp: dashboard on {where}{login}; Ctrl-C stops", flush=True)
    level = logging.getLogger("gatorapp").getEffectiveLevel()
    config = uvicorn.Config(
        asgi,
        host=args.host,
        port=args.port,
        log_level="warning" if level > logging.DEBUG else "info",
        access_log=level <= logging.DEBUG,
        server_header=False,
    )
    server = uvicorn.Server(config)
    server.run()  # (until SIGINT or SIGTERM: uvicorn stops gracefully)
    return 0 if server.started else 2
