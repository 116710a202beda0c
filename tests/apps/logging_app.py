"""cli_app with a logging setup of its own, made at import."""

import logging

logging.basicConfig(level=logging.INFO, format="APPFORMAT %(levelname)s %(name)s %(message)s")

from cli_app import app, fail, send  # noqa: E402

__all__ = ["app", "fail", "send"]
