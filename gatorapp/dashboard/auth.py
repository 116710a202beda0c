"""Who may use the dashboard, and which requests may change anything.

* **Token.** Bound to a loopback address the dashboard may run without one;
  bound anywhere else it must have one (``gatorapp dashboard`` refuses to
  start otherwise). With a token, a request carries it as ``Authorization:
  Bearer TOKEN`` (scripts), or a person opens any page once with
  ``?token=TOKEN``, which sets a session cookie and redirects to the page
  without it (so the token stays out of the history and of Referer headers).
  Everything else gets 401.
* **Session.** The cookie is ``<random id>.<HMAC of it>`` under a key made
  at start (HttpOnly, SameSite=Strict): it proves the token was shown, and
  restarting the dashboard logs everyone out.
* **CSRF.** A POST from a browser (cookie) must carry ``X-CSRF-Token``, an
  HMAC of its session id the page was given. Every POST, a script's too,
  must be ``application/json`` (another site's page cannot send that
  without a CORS preflight, which the dashboard never grants) and, when it
  has an ``Origin`` (or failing that a ``Referer``), come from this host:
  a reverse proxy that adds the bearer header itself must not make a
  visitor's browser a script with the token. A POST with a bearer token
  needs no CSRF token: it carries no cookie another page could ride on.
* **DNS rebinding.** Without a token, only requests whose ``Host`` names a
  loopback address are served, so a page elsewhere that renamed itself to
  127.0.0.1 cannot read the dashboard through a visitor's browser.

Tokens and signatures are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

COOKIE = "gatorapp_session"
CSRF_HEADER = "x-csrf-token"
TOKEN_ENV = "GATORAPP_DASHBOARD_TOKEN"


def same(a: str, b: str) -> bool:
    """Constant-time equality of two texts (any characters: compared as UTF-8,
    since ``hmac.compare_digest`` refuses non-ASCII str)."""
    return hmac.compare_digest(a.encode(), b.encode())


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name to bind or to be reached at) is
    this machine's loopback: 127.0.0.0/8, ::1, localhost."""
    host = host.strip("[]").lower()
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(header: str) -> str:
    """The host part of a Host header (``127.0.0.1:8080``, ``[::1]:8080``)."""
    return urlsplit(f"//{header}").hostname or ""


@dataclass
class Auth:
    """The dashboard's rules; ``token`` None: no token (loopback only)."""

    token: str | None
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def _sign(self, what: str) -> str:
        return hmac.new(self.key, what.encode(), hashlib.sha256).hexdigest()

    def new_session(self) -> str:
        """A cookie value for a new session."""
        sid = secrets.token_hex(16)
        return f"{sid}.{self._sign('session:' + sid)}"

    def session(self, cookie: str | None) -> str | None:
        """The session id of a valid cookie, else None."""
        if not cookie or "." not in cookie:
            return None
        sid, _, sig = cookie.partition(".")
        if same(sig, self._sign("session:" + sid)):
            return sid
        return None

    def csrf(self, sid: str) -> str:
        return self._sign("csrf:" + sid)

    def csrf_ok(self, sid: str, given: str) -> bool:
        return same(given, self.csrf(sid))

    def token_ok(self, given: str | None) -> bool:
        return bool(self.token and given and same(given, self.token))

    def bearer(self, header: str | None) -> bool:
        """Whether an Authorization header carries the token."""
        if not header or not self.token:
            return False
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(value.strip())

    def host_ok(self, host_header: str | None) -> bool:
        """Without a token, only a loopback Host is served (see the module)."""
        return self.token is not None or is_loopback(_host_of(host_header or ""))

    def same_origin(self, origin: str | None, referer: str | None, host_header: str | None) -> bool:
        """Whether a request a browser may have sent came from a page of this
        host: its ``Origin`` names this host or, without one, its ``Referer``
        does. Neither (a script, or a browser told to send no referrer):
        nothing to check here; the CSRF token or the content type decides."""
        sent = origin or referer
        if not sent:
            return True  # (an Origin of "null", from a sandboxed page, is no host: refused)
        return (urlsplit(sent).netloc or "").lower() == (host_header or "").lower()
