"""Redis URLs and client options, parsed and checked when the backend is built.

Validates what redis-py would only reject at the first connection (or
silently ignore, like a non-numeric db), so a bad URL fails at once, with no
network I/O.
"""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.connection import URL_QUERY_ARGUMENT_PARSERS, ConnectionPool
from redis.connection import parse_url as redis_parse_url
from redis.retry import Retry

from ..errors import ConfigurationError

DEFAULT_PREFIX = "gatorapp"
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")

# Query options passed on to redis-py besides those it parses itself.
_STRING_OPTIONS = {
    "client_name",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_ca_path",
    "ssl_ca_data",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_password",
}

# Numbers redis-py takes as given and fails on only when it uses them (a
# zero socket timeout makes every call fail, a negative one raises at the
# first call).
_POSITIVE = {"socket_timeout", "socket_connect_timeout", "socket_read_size", "max_connections"}
_NONNEGATIVE = {"health_check_interval", "db"}


def default_options(scheme: str) -> dict[str, Any]:
    # redis-py retries ConnectionError/TimeoutError 10 times by default, which
    # keeps a call hanging for seconds while Redis is down. A few quick tries
    # ride out a dropped connection; after that the error reaches the worker,
    # which logs once and backs off (tenacity) instead of blocking here.
    options: dict[str, Any] = {
        "socket_connect_timeout": 5.0,
        "socket_timeout": 10.0,
        "retry": Retry(ExponentialWithJitterBackoff(cap=0.25, base=0.02), 3),
    }
    if scheme != "unix":
        options["socket_keepalive"] = True  # notice a peer that vanished
    return options


def parse_redis_url(url: str, options: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """Split a backend URL into (key prefix, redis-py URL, client options).

    Validates what redis-py would only reject at the first connection (or
    silently ignore, like a non-numeric db), so a bad URL fails at once.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigurationError(f"bad Redis URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()  # redis-py takes only lower case
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError(f"not a Redis URL: {url!r}")
    prefix = DEFAULT_PREFIX
    query = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "prefix":
            prefix = value
        elif name in URL_QUERY_ARGUMENT_PARSERS or name in _STRING_OPTIONS:
            query.append((name, value))
        else:
            known = sorted({"prefix", *URL_QUERY_ARGUMENT_PARSERS, *_STRING_OPTIONS})
            raise ConfigurationError(
                f"unknown option {name!r} in Redis URL {url!r}; known: {', '.join(known)}"
            )
    prefix = options.pop("prefix", None) or prefix
    if not _PREFIX_RE.match(prefix):
        raise ConfigurationError(
            f"bad Redis key prefix {prefix!r}: use 1-100 letters, digits, '_', '.' or '-'"
        )
    db = parts.path.strip("/")
    if scheme != "unix" and db and not db.isdigit():
        raise ConfigurationError(f"bad database number {db!r} in Redis URL {url!r}")
    if scheme != "unix" and db and any(n == "db" and v != db for n, v in query):
        raise ConfigurationError(f"Redis URL {url!r} names two databases, in path and ?db=")
    if scheme == "unix" and not parts.path:
        raise ConfigurationError(f"Redis URL {url!r} names no socket: unix:///path/to.sock")
    if scheme == "unix" and any(n.startswith("socket_keepalive") for n, _ in query):
        raise ConfigurationError(f"socket_keepalive is for TCP, not unix:// sockets: {url!r}")
    if scheme != "rediss" and any(n.startswith("ssl_") for n, _ in query):
        raise ConfigurationError(f"ssl_* options need a rediss:// URL: {url!r}")
    # (urlunsplit would turn unix:///path into unix:/path)
    rest = url.partition("://")[2].partition("?")[0]
    client_url = f"{scheme}://{rest}" + (f"?{urlencode(query)}" if query else "")
    options = {**default_options(scheme), **options}
    _check_client(url, client_url, options)
    return prefix, client_url, options


def _check_client(url: str, client_url: str, options: dict[str, Any]) -> None:
    """Build, but never connect, what redis-py would build at the first call,
    so values it only checks then (a bad ``protocol`` or ``ssl_cert_reqs``,
    an unknown keyword) fail now; and check the numbers it takes as given."""
    try:
        given = {**options, **redis_parse_url(client_url)}  # type: ignore[no-untyped-call]
        for name in sorted(_POSITIVE | _NONNEGATIVE):
            value, zero_ok = given.get(name), name in _NONNEGATIVE
            # (written so that NaN fails too)
            if value is not None and not (value >= 0 if zero_ok else value > 0):
                raise ValueError(f"{name} must be {'>= 0' if zero_ok else '> 0'}, not {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, not {value!r}")
        pool = ConnectionPool.from_url(client_url, **options)
        pool.connection_class(**pool.connection_kwargs)  # no I/O until its first use
    except (TypeError, ValueError, redis.RedisError) as exc:
        raise ConfigurationError(f"bad Redis URL or option {url!r}: {exc}") from None


def record_ttl(options: dict[str, Any]) -> float:
    """Seconds the record of a call must last: redis-py's retry window for it.

    A lost reply shows after up to ``socket_timeout``; each retry then waits
    its backoff (allowed 1 s) and up to ``socket_connect_timeout`` for a new
    connection before the call is sent again. A timeout of None counts 60 s.
    """
    retry = options.get("retry")
    retries = retry.get_retries() if isinstance(retry, Retry) else 0
    read = options.get("socket_timeout") or 60.0
    per_try = read + (options.get("socket_connect_timeout") or read) + 1.0
    return 1.0 + retries * per_try
