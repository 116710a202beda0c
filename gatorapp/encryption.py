"""Encrypted envelopes: AES-GCM over each payload, so a broker reader does not
see task names or arguments (``pip install "gatorapp[encryption]"``).

An encrypted payload is ``MAGIC + key id + nonce + ciphertext``: the key id
(the first 4 bytes of the key's SHA-256) says which of several keys made it,
so keys can be rotated; the first key encrypts. AES-GCM authenticates what it
decrypts: a payload altered in the broker fails to decrypt and becomes a
``decrypt_error`` dead letter. The cipher is the ``cryptography`` package's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence
from typing import Any

from .errors import ConfigurationError, MissingDependencyError, Rejected

MAGIC = b"\xc1GE1"
NONCE = 12
#: Where App() looks for keys when none is given: comma-separated, first encrypts.
ENV = "GATORAPP_ENCRYPTION_KEY"


def is_encrypted(data: bytes) -> bool:
    return data[:4] == MAGIC


def _raw(key: str | bytes) -> bytes:
    """A key: 16, 24 or 32 bytes, or their URL-safe base64 (what ``new_key`` prints)."""
    raw: Any = key
    if isinstance(key, str):
        try:
            raw = base64.urlsafe_b64decode(key.strip().encode())
        except (binascii.Error, ValueError):
            raw = b""
    if not isinstance(raw, bytes) or len(raw) not in (16, 24, 32):
        raise ConfigurationError(
            "an encryption key must be 16, 24 or 32 bytes, or their URL-safe base64 "
            '(python -c "from gatorapp.encryption import new_key; print(new_key())")'
        )
    return raw


def new_key() -> str:
    """A new 256-bit key, as URL-safe base64 text."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


class Cipher:
    """Encrypts with the first key, decrypts with the key a payload names.

    :param keys: one key, or several (newest first).
    """

    def __init__(self, keys: str | bytes | Sequence[str | bytes]) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError:
            raise MissingDependencyError(
                "encrypted envelopes need the cryptography package: "
                'pip install "gatorapp[encryption]"'
            ) from None
        listed = [keys] if isinstance(keys, (str, bytes)) else list(keys)
        if not listed:
            raise ConfigurationError("encryption_key: give at least one key")
        self._by_id: dict[bytes, Any] = {}
        self._first: tuple[bytes, Any] | None = None
        for key in listed:
            raw = _raw(key)
            key_id = hashlib.sha256(raw).digest()[:4]
            aead = AESGCM(raw)
            self._by_id.setdefault(key_id, aead)
            if self._first is None:
                self._first = (key_id, aead)

    @classmethod
    def from_env(cls) -> Cipher | None:
        value = os.environ.get(ENV, "").strip()
        if not value:
            return None
        return cls([k for k in value.split(",") if k.strip()])

    def encrypt(self, data: bytes) -> bytes:
        assert self._first is not None
        key_id, aead = self._first
        nonce = os.urandom(NONCE)
        header = MAGIC + key_id
        sealed: bytes = aead.encrypt(nonce, data, header)
        return header + nonce + sealed

    def decrypt(self, data: bytes) -> bytes:
        """The payload inside an encrypted one; :class:`Rejected` (``decrypt_error``)
        when no key of this app made it, or it was altered."""
        header, nonce, sealed = data[:8], data[8 : 8 + NONCE], data[8 + NONCE :]
        aead = self._by_id.get(header[4:])
        if aead is None:
            raise Rejected("decrypt_error", "payload was encrypted with a key this app lacks")
        try:
            return bytes(aead.decrypt(nonce, sealed, header))
        except Exception:  # cryptography's InvalidTag: altered, or cut short
            raise Rejected("decrypt_error", "payload does not decrypt: altered or cut") from None


def without_key(data: bytes) -> bytes:
    """What an app without encryption keys makes of a payload."""
    if is_encrypted(data):
        raise Rejected("decrypt_error", "payload is encrypted, and this app has no encryption key")
    return data
