"""The dashboard's rules for who may do what, in-process (the ASGI app, no
server, no browser): tokens, sessions, CSRF, same-origin checks, and what a
reverse proxy in front changes. tests/test_dashboard.py drives the real thing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from gatorapp import App
from gatorapp.dashboard import create
from gatorapp.dashboard.auth import COOKIE, Auth, is_loopback
from gatorapp.dashboard.web import CHART_SECONDS, Throughput

TOKEN = "t0ken-for-the-tests-0123"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}
PURGE = b'{"queue": "default"}'


def run(
    token: str | None,
    body: Callable[[httpx.AsyncClient], Awaitable[None]],
    base_url: str = "http://127.0.0.1:8080",
) -> None:
    app = App("memory://", results=True)
    transport = httpx.ASGITransport(app=create(app, token))

    async def main() -> None:
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
            await body(http)

    asyncio.run(main())


def csrf_of(page: str) -> str:
    return page.split('name="csrf-token" content="')[1].split('"')[0]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.7", False),
        ("example.com", False),
        ("127.0.0.1.example.com", False),
    ],
)
def test_what_counts_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_session_cookie_is_this_dashboard_s_and_unaltered() -> None:
    auth, other = Auth(TOKEN), Auth(TOKEN)
    cookie = auth.new_session()
    sid = auth.session(cookie)
    assert sid is not None
    assert other.session(cookie) is None  # (a restarted dashboard: a new key)
    assert auth.session(cookie[:-1] + ("0" if cookie[-1] != "0" else "1")) is None
    assert auth.session("x" + cookie) is None
    assert auth.session("") is None and auth.session("nodot") is None
    assert auth.csrf_ok(sid, auth.csrf(sid))
    assert not auth.csrf_ok(sid, other.csrf(sid))
    assert not auth.csrf_ok(sid, "")


def test_the_authorization_header_must_be_bearer_and_exact() -> None:
    auth = Auth(TOKEN)
    assert auth.bearer(f"Bearer {TOKEN}") and auth.bearer(f"bearer {TOKEN}")
    for header in [None, "", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}"]:
        assert not auth.bearer(header), header
    assert not Auth(None).bearer("Bearer anything")  # (no token: no bearer either)


def test_with_a_token_nothing_is_served_without_it() -> None:
    async def body(http: httpx.AsyncClient) -> None:
        for path in ["/", "/api/overview", "/api/task?id=x", "/static/style.css", "/nowhere"]:
            assert (await http.get(path)).status_code == 401, path
            assert (
                await http.get(path, headers={"Cookie": f"{COOKIE}=forged.0"})
            ).status_code == 401
        refused = await http.get("/", headers={"Accept": "text/html"})
        assert "?token=TOKEN" in refused.text and "Bearer TOKEN" in refused.text
        assert refused.headers["content-security-policy"].startswith("default-src 'self'")
        assert (await http.post("/api/dead/purge", content=PURGE, headers=JSON)).status_code == 401

    run(TOKEN, body)


def test_logging_in_moves_on_to_the_page_without_the_token() -> None:
    async def body(http: httpx.AsyncClient) -> None:
        page = await http.get(f"/api/dead?queue=q%201&token={TOKEN}")
        assert page.status_code == 200  # (a page of this site moves on: see web.py)
        assert 'content="0; url=./dead?queue=q+1"' in page.text
        assert page.headers["referrer-policy"] == "no-referrer"
        cookie = page.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        assert "secure" not in cookie  # (plain http: a Secure cookie would never come back)
        assert (await http.get("/api/overview")).status_code == 200
        assert (await http.get("/?token=wrong-wrong-wrong-wrong")).status_code == 401

    run(TOKEN, body)


def test_over_https_the_cookie_is_secure() -> None:
    async def body(http: httpx.AsyncClient) -> None:
        page = await http.get(f"/?token={TOKEN}")
        assert "secure" in page.headers["set-cookie"].lower()

    run(TOKEN, body, base_url="https://dash.example.com")


def test_without_a_token_a_token_in_the_address_changes_nothing() -> None:
    async def body(http: httpx.AsyncClient) -> None:
        page = await http.get("/?token=whatever")
        assert page.status_code == 200 and 'name="csrf-token"' in page.text

    run(None, body)


def test_every_post_is_json_from_this_host() -> None:
    """A proxy may add the bearer header to every request it passes: a page
    elsewhere must still not make a visitor's browser purge anything."""

    async def body(http: httpx.AsyncClient) -> None:
        async def purge(**headers: str) -> int:
            return (await http.post("/api/dead/purge", content=PURGE, headers=headers)).status_code

        host = "https://dash.example.com"
        # A form or a text/plain fetch from another site needs no preflight: refused.
        assert await purge(**BEARER, **{"Content-Type": "text/plain"}) == 415
        assert await purge(**BEARER, **{"Content-Type": "application/x-www-form-urlencoded"}) == 415
        assert await purge(**BEARER) == 415  # (no type at all)
        for origin in ["https://evil.example", "null", "http://dash.example.com.evil.example"]:
            assert await purge(**BEARER, **JSON, Origin=origin) == 403, origin
        assert await purge(**BEARER, **JSON, Referer="https://evil.example/page") == 403
        # This host's own pages, and scripts that send neither header.
        assert await purge(**BEARER, **JSON, Origin=host) == 200
        assert await purge(**BEARER, **JSON, Referer=f"{host}/") == 200
        assert await purge(**BEARER, **{"Content-Type": "application/json; charset=utf-8"}) == 200

    run(TOKEN, body, base_url="https://dash.example.com")


def test_a_browser_s_post_needs_its_own_session_s_csrf_token() -> None:
    async def body(http: httpx.AsyncClient) -> None:
        csrf = csrf_of((await http.get("/")).text)
        ok = await http.post(
            "/api/dead/purge", content=PURGE, headers={**JSON, "X-CSRF-Token": csrf}
        )
        assert ok.status_code == 200 and ok.json() == {"purged": 0}
        for given in ["", "0" * 64, csrf[:-1], csrf.upper()]:
            refused = await http.post(
                "/api/dead/purge", content=PURGE, headers={**JSON, "X-CSRF-Token": given}
            )
            assert refused.status_code == 403, given
        # No session yet: a POST cannot be the page's.
        http.cookies.clear()
        refused = await http.post(
            "/api/dead/purge", content=PURGE, headers={**JSON, "X-CSRF-Token": csrf}
        )
        assert refused.status_code == 403

    run(None, body)


def test_without_a_token_only_a_loopback_host_is_served() -> None:
    async def body(http: httpx.AsyncClient) -> None:
        for host in ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "127.0.0.1"]:
            assert (await http.get("/api/overview", headers={"Host": host})).status_code == 200
        for host in ["evil.example", "127.0.0.1.evil.example:8080", ""]:
            refused = await http.get("/static/app.js", headers={"Host": host})
            assert refused.status_code == 403, host

    run(None, body)


def test_pages_carry_the_security_headers() -> None:
    async def body(http: httpx.AsyncClient) -> None:
        for path in ["/", "/api/overview", "/static/app.js"]:
            headers = (await http.get(path)).headers
            assert "script-src 'self'" in headers["content-security-policy"], path
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["x-frame-options"] == "DENY"

    run(None, body)


def test_throughput_counts_finished_tasks_per_second() -> None:
    t = Throughput()

    def worker(wid: str, done: int) -> dict[str, object]:
        return {"id": wid, "done": done}

    assert t.add([worker("a", 100)], 1000.0) == []  # (a worker counts from when it is seen)
    assert t.add([worker("a", 110)], 1002.0) == [[1002.0, 5.0]]
    # One more worker, one gone: what each finished since it was last seen.
    chart = t.add([worker("b", 7)], 1004.0)
    assert chart[-1] == [1004.0, 0.0]
    chart = t.add([worker("b", 11), worker("c", 0)], 1006.0)
    assert chart[-1] == [1006.0, 2.0]
    # Looks closer together than a page polls add no point.
    assert len(t.add([worker("b", 11)], 1006.5)) == len(chart)
    # After a long while with no page open the chart starts afresh.
    assert t.add([worker("b", 20)], 1006.0 + CHART_SECONDS + 60) == []
