"""The ``sqs://`` URL: parsing, validation and SQS queue names.

``sqs://REGION/?option=value&...``; ``sqs:///`` takes boto3's default region.
Credentials never go in the URL: boto3's normal chain finds them. Every
mistake is a :class:`~gatorapp.errors.ConfigurationError` when the backend is
built, before any network call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from ..errors import ConfigurationError
from .sqs_messages import ID_ALLOWANCE

DLQ_SUFFIX = "-dlq"
SQS_MAX_SIZE = 1024 * 1024  # the largest MaximumMessageSize SQS allows (and its default)
NAME = re.compile(r"[A-Za-z0-9_-]+")  # what SQS allows in a (standard) queue name

# URL option -> (default, lowest, highest); a range only for whole numbers.
OPTIONS: dict[str, tuple[str | None, int, int]] = {
    "endpoint_url": (None, 0, 0),  # an SQS-compatible server
    "prefix": ("gatorapp-", 0, 0),  # of every SQS queue name
    "create": ("true", 0, 0),  # create missing queues on first use
    "profile": (None, 0, 0),  # a boto3 profile
    "retry_mode": ("standard", 0, 0),  # botocore's standard or adaptive retries
    "max_attempts": ("5", 1, 20),  # per SQS call, retries included
    "wait": ("1", 1, 20),  # long-poll seconds of wait()
    "max_message_size": (str(SQS_MAX_SIZE), 1024 + ID_ALLOWANCE, SQS_MAX_SIZE),
    "max_delay": ("900", 1, 900),  # longest single SQS delay: the hop length
    "retention": (str(14 * 86400), 60, 14 * 86400),  # of queues gatorapp creates
    "scan_wait": ("1", 0, 20),  # long poll that ends a scan (AWS short polls sample)
    "max_receives": ("0", 0, 1000),  # maxReceiveCount of a redrive policy; 0: none
}
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _int(opts: dict[str, str | None], name: str) -> int:
    _, low, high = OPTIONS[name]
    try:
        value = int(opts[name] or "")
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigurationError(
            f"sqs URL option {name}={opts[name]!r} must be a whole number from {low} to {high}"
        )
    return value


@dataclass(frozen=True, slots=True)
class SQSConfig:
    region: str | None
    endpoint_url: str | None
    prefix: str
    create: bool
    profile: str | None
    retry_mode: str
    max_attempts: int
    wait: int
    max_message_size: int
    max_delay: int
    retention: int
    scan_wait: int
    max_receives: int

    @classmethod
    def parse(cls, url: str) -> SQSConfig:
        parts = urlsplit(url)
        if parts.scheme != "sqs" or parts.path not in ("", "/") or parts.fragment:
            raise ConfigurationError(f"bad sqs URL {url!r}: expected sqs://REGION/?option=value")
        if "@" in parts.netloc:
            raise ConfigurationError(
                "sqs URLs take no credentials: boto3 finds them (environment, ~/.aws, roles)"
            )
        if parts.netloc and not re.fullmatch(r"[a-z]{2}(-[a-z0-9]+)+", parts.netloc):
            raise ConfigurationError(f"bad AWS region {parts.netloc!r} in {url!r}")
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - set(OPTIONS))
        if unknown:
            raise ConfigurationError(
                f"unknown sqs URL option(s) {', '.join(unknown)}; known: {', '.join(OPTIONS)}"
            )
        opts = {k: query[k][-1] if k in query else v[0] for k, v in OPTIONS.items()}
        endpoint, prefix = opts["endpoint_url"], str(opts["prefix"])
        if endpoint is not None and not re.match(r"https?://[^/]", endpoint):
            raise ConfigurationError(f"endpoint_url must be http(s)://host[:port], in {url!r}")
        if prefix and (not NAME.fullmatch(prefix) or len(prefix) > 40):
            raise ConfigurationError(f"sqs prefix {prefix!r}: use A-Z a-z 0-9 _ -, at most 40")
        create = _BOOLS.get(str(opts["create"]).lower())
        if create is None:
            raise ConfigurationError(f"sqs URL option create={opts['create']!r}: true or false")
        if opts["retry_mode"] not in ("standard", "adaptive"):
            raise ConfigurationError("sqs URL option retry_mode must be standard or adaptive")
        return cls(
            region=parts.netloc or None,
            endpoint_url=endpoint,
            prefix=prefix,
            create=create,
            profile=opts["profile"],
            retry_mode=str(opts["retry_mode"]),
            **{name: _int(opts, name) for name, (_, low, high) in OPTIONS.items() if high},
        )

    def sqs_name(self, queue: str, dead: bool = False) -> str:
        """The SQS queue name of a gatorapp queue (or of its dead letters).

        Names SQS cannot hold are refused, not mapped: a mapping could make
        two gatorapp queues share one SQS queue.
        """
        if queue.endswith(".fifo"):
            raise ConfigurationError(
                f"queue name {queue!r}: SQS FIFO queues are not supported (they refuse the "
                f"per-message delays gatorapp's delays and retries use); drop the '.fifo'"
            )
        if not NAME.fullmatch(queue) or queue.endswith(DLQ_SUFFIX):
            raise ConfigurationError(
                f"queue name {queue!r} cannot be an SQS queue: use only A-Z a-z 0-9 _ - "
                f"and do not end it with {DLQ_SUFFIX!r} (that names the dead letters)"
            )
        if len(self.prefix + queue + DLQ_SUFFIX) > 80:
            raise ConfigurationError(
                f"queue name {queue!r} is too long for SQS: prefix, name and {DLQ_SUFFIX!r} "
                f"must fit in 80 characters"
            )
        return self.prefix + queue + (DLQ_SUFFIX if dead else "")

    def queue_of(self, sqs_name: str) -> str | None:
        """The gatorapp queue an SQS queue name belongs to, or None."""
        if not sqs_name.startswith(self.prefix):
            return None
        name = sqs_name[len(self.prefix) :].removesuffix(DLQ_SUFFIX)
        return name if NAME.fullmatch(name) else None
