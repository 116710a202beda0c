"""Signed envelopes: an HMAC-SHA256 over each payload, so that write access to
the broker is not the power to run tasks.

A signed payload is ``MAGIC + mac + payload``. ``MAGIC`` starts with 0xc1, a
byte msgpack never uses, so a signed payload can never be taken for an
unsigned envelope, nor the other way round. Several keys may be accepted (key
rotation); the first one signs. The comparison is ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from typing import Any

from .errors import ConfigurationError, Rejected

MAGIC = b"\xc1GS1"
MAC_SIZE = 32
#: The fewest bytes a key may have.
MIN_KEY = 16
#: Where App() looks for keys when none is given: comma-separated, first signs.
ENV = "GATORAPP_SIGNING_KEY"


try:
    # OpenSSL's HMAC as CPython binds it, which the hmac module wraps: copying
    # it directly costs a third less per payload than through hmac.HMAC.
    from _hashlib import hmac_new as _openssl_hmac
except ImportError:  # another Python: the hmac module
    _openssl_hmac = None  # type: ignore[assignment]


def _keyed(key: bytes) -> Any:
    """A keyed HMAC-SHA256 to copy for each payload (copy, update, digest)."""
    if _openssl_hmac is not None:
        return _openssl_hmac(key, b"", "sha256")
    return hmac.new(key, digestmod=hashlib.sha256)


def is_signed(data: bytes) -> bool:
    return data[:4] == MAGIC


class Signer:
    """Signs payloads with the first key, accepts a payload signed by any.

    :param keys: one key, or several (str or bytes; str keys are UTF-8).
    """

    def __init__(self, keys: str | bytes | Sequence[str | bytes]) -> None:
        listed = [keys] if isinstance(keys, (str, bytes)) else list(keys)
        if not listed:
            raise ConfigurationError("signing_key: give at least one key")
        self.keys: list[bytes] = []
        for key in listed:
            raw = key.encode() if isinstance(key, str) else key
            if not isinstance(raw, bytes) or len(raw) < MIN_KEY:
                raise ConfigurationError(
                    f"a signing key must be str or bytes of at least {MIN_KEY} bytes "
                    "(e.g. secrets.token_hex(32))"
                )
            self.keys.append(raw)
        # Keyed once: a copy of a keyed HMAC skips the key set-up per payload.
        self._macs = [_keyed(key) for key in self.keys]

    @classmethod
    def from_env(cls) -> Signer | None:
        value = os.environ.get(ENV, "").strip()
        if not value:
            return None
        return cls([k.strip() for k in value.split(",") if k.strip()])

    def sign(self, data: bytes) -> bytes:
        mac = self._macs[0].copy()
        mac.update(data)
        digest: bytes = mac.digest()
        return MAGIC + digest + data

    def verify(self, data: bytes) -> bytes:
        """The payload inside ``data``, or :class:`Rejected` (``bad_signature``):
        nothing of an unsigned or wrongly signed payload is decoded."""
        if not is_signed(data):
            raise Rejected("bad_signature", "payload is not signed, and this app requires it")
        mac, payload = data[4 : 4 + MAC_SIZE], data[4 + MAC_SIZE :]
        for keyed in self._macs:
            expected = keyed.copy()
            expected.update(payload)
            if hmac.compare_digest(mac, expected.digest()):
                return payload
        raise Rejected("bad_signature", "payload's signature matches none of this app's keys")


def unsigned(data: bytes) -> bytes:
    """What an app without keys makes of a payload: a signed one is refused."""
    if is_signed(data):
        raise Rejected("bad_signature", "payload is signed, and this app has no signing key")
    return data
