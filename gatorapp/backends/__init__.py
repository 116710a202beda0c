"""Backends, chosen by URL scheme and imported only when used.

========================  =============================================
``memory://``             in-process (tests, eager development)
``sqlite:///path.db``     embedded default, several processes, one file
``redis://``, ``rediss://``, ``unix://``   Redis (needs ``redis``)
``sqs://REGION/``         Amazon SQS (needs ``boto3``)
``postgresql://``         PostgreSQL (needs ``psycopg``)
========================  =============================================
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigurationError, MissingDependencyError
from .base import Backend, running_error
from .capabilities import Capabilities
from .records import (
    Burial,
    DeadLetter,
    Located,
    Message,
    QueueStats,
    Reservation,
    ResultItem,
    RetryItem,
    Settled,
)

__all__ = [
    "Backend",
    "Burial",
    "Capabilities",
    "DeadLetter",
    "Located",
    "Message",
    "QueueStats",
    "Reservation",
    "ResultItem",
    "RetryItem",
    "Settled",
    "load_backend",
    "running_error",
]

# scheme -> (module, class, pip package that provides the driver)
_SCHEMES: dict[str, tuple[str, str, str | None]] = {
    "memory": ("gatorapp.backends.memory", "MemoryBackend", None),
    "sqlite": ("gatorapp.backends.sqlite", "SQLiteBackend", None),
    "redis": ("gatorapp.backends.redis", "RedisBackend", "redis"),
    "rediss": ("gatorapp.backends.redis", "RedisBackend", "redis"),
    "unix": ("gatorapp.backends.redis", "RedisBackend", "redis"),
    "sqs": ("gatorapp.backends.sqs", "SQSBackend", "boto3"),
    "postgresql": ("gatorapp.backends.postgres", "PostgresBackend", "psycopg"),
    "postgres": ("gatorapp.backends.postgres", "PostgresBackend", "psycopg"),
}
# pip package -> the extra that installs it
_EXTRAS = {"boto3": "sqs", "psycopg": "postgres"}


def scheme_of(url: str) -> str:
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"bad backend URL {url!r}: expected scheme://..., one of "
            + ", ".join(f"{s}://" for s in _SCHEMES)
        )
    try:
        return urlsplit(url).scheme.lower()
    except ValueError as exc:  # e.g. an unclosed [ in an IPv6 host
        raise ConfigurationError(f"bad backend URL {url!r}: {exc}") from None


def check_url(url: str) -> str:
    """The URL's scheme, or ConfigurationError when no built-in backend has it."""
    scheme = scheme_of(url)
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"unknown backend scheme {scheme!r} in {url!r}; known: "
            + ", ".join(f"{s}://" for s in _SCHEMES)
            + " (or pass backend_class=)"
        )
    return scheme


def load_backend(url: str, backend_class: Any = None, **options: Any) -> Backend:
    """Build the backend for ``url``.

    ``backend_class`` may be a :class:`Backend` subclass (built with the URL and
    options) or any class with Alligator's five client methods (``len``,
    ``drop_all``, ``push``, ``pop``, ``get``), which is built with the URL alone
    and wrapped in :class:`~gatorapp.backends.client.ClientBackend`.
    """
    if backend_class is not None:
        if isinstance(backend_class, type) and issubclass(backend_class, Backend):
            return backend_class(url, **options)
        from .client import ClientBackend

        return ClientBackend(backend_class(url), url, **options)
    scheme = check_url(url)
    module_name, class_name, package = _SCHEMES[scheme]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if package and exc.name and exc.name.split(".")[0] == package:
            extra = _EXTRAS.get(package, package)
            raise MissingDependencyError(
                f"the {scheme}:// backend needs the {package!r} package: "
                f'pip install "gatorapp[{extra}]"'
            ) from exc
        raise
    cls: type[Backend] = getattr(module, class_name)
    return cls(url, **options)
