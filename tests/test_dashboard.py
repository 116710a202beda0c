"""The web dashboard: a real ``gatorapp dashboard`` process, driven over HTTP
(httpx) and end to end in headless Chromium (Debian's chromium package,
driven by Playwright; no browser is downloaded)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port
from worker_proc import env_for, output, start_worker, stop, wait_for

from gatorapp import App

ARTIFACTS = Path(__file__).parent / "artifacts"
TOKEN = "s3cret-token-0123456789"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.slow


@dataclass
class Served:
    """A queue the dashboard shows, and this process's handles on it."""

    app: App
    env: dict[str, str]
    add: Any
    explode: Any
    hold: Any
    fixed: Path  # (exists: explode succeeds, a fix deployed)
    release: Path  # (exists: hold returns)


@pytest.fixture
def dash_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite, unless a test asks for ``redis`` or ``postgres`` (indirect
    parametrization)."""
    kind = getattr(request, "param", "sqlite")
    if kind in ("redis", "postgres"):
        return str(request.getfixturevalue(f"{kind}_url"))
    return f"sqlite:///{tmp_path}/queue.db"


@pytest.fixture
def served(dash_url: str, tmp_path: Path) -> Iterator[Served]:
    app = App(dash_url, results=True)

    # Same names as tests/apps/dashboard_app.py; a worker process runs them,
    # and this process only enqueues (or drains, for letters that must die).
    @app.task(name="dashboard_app.add")
    def add(a, b): ...

    @app.task(name="dashboard_app.explode", retries=0)
    def explode(note):
        raise ValueError(f"exploded: {note}")

    @app.task(name="dashboard_app.hold")
    def hold(seconds): ...

    app.backend.stats("default")  # (the database exists: a dashboard never creates one)
    ledger = tmp_path / "ledger.txt"
    env = env_for(dash_url, ledger)
    yield Served(app, env, add, explode, hold, Path(f"{ledger}.fixed"), Path(f"{ledger}.release"))
    app.close()


def start_dashboard(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gatorapp", "dashboard", "-A", "dashboard_app",
         "--port", str(port), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip

    def up() -> bool:
        try:
            httpx.get(f"http://127.0.0.1:{port}/static/app.js", timeout=1)
            return True
        except httpx.HTTPError:
            return proc.poll() is not None

    assert wait_for(up, 30), "the dashboard did not start"
    assert proc.poll() is None, proc.communicate()[0]
    return proc, port


@pytest.fixture
def dashboard(served) -> Iterator[tuple[str, dict[str, str]]]:
    proc, port = start_dashboard(served.env)
    try:
        yield f"http://127.0.0.1:{port}", served.env
    finally:
        stop(proc)


# -- over HTTP -----------------------------------------------------------------------
def http_status(url: str) -> int:
    return httpx.get(url).status_code


def refused_to_start(env: dict[str, str], *args: str) -> str:
    """What ``gatorapp dashboard`` says when it will not start (exit 2)."""
    done = subprocess.run(
        [sys.executable, "-m", "gatorapp", "dashboard", "-A", "dashboard_app",
         "--port", str(free_port()), *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    return done.stderr


def test_a_token_is_required_beyond_loopback_and_then_on_every_request(served) -> None:
    env = served.env
    bare = {k: v for k, v in env.items() if k != "GATORAPP_DASHBOARD_TOKEN"}
    for host in ["0.0.0.0", "::"]:
        said = refused_to_start(bare, "--host", host)
        assert "give it a token" in said and len(said.strip().splitlines()) == 1, said
    assert "at least 16" in refused_to_start(bare, "--host", "0.0.0.0", "--token", "short")
    proc, port = start_dashboard({**env, "GATORAPP_DASHBOARD_TOKEN": TOKEN}, "--host", "0.0.0.0")
    base = f"http://127.0.0.1:{port}"
    try:
        gets = ["/", "/api/overview", "/api/dead?queue=default", "/api/task?id=x", "/static/app.js"]
        assert http_status(f"{base}/nowhere") == 401  # (not even whether a page exists)
        with httpx.Client(base_url=base) as http:
            for path in gets:
                assert http.get(path).status_code == 401, path
                assert http.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
            page = http.get("/", headers={"Accept": "text/html"})
            assert page.status_code == 401 and "?token=" in page.text  # how to log in
            posted = http.post("/api/dead/requeue", json={"queue": "default", "task_id": "x"})
            assert posted.status_code == 401
            assert http.get("/?token=wrong").status_code == 401
            assert http.get("/?token=w\u00e9rong").status_code == 401  # (not a 500)
            bad_cookie = {"Cookie": "gatorapp_session=a.\u00e9".encode()}
            assert http.get("/api/overview", headers=bad_cookie).status_code == 401
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            for path in gets:
                assert http.get(path, headers=bearer).status_code == 200, path
            # A script with the token may act without a CSRF token: no cookie rides along.
            posted = http.post("/api/dead/purge", json={"queue": "default"}, headers=bearer)
            assert posted.status_code == 200 and posted.json() == {"purged": 0}
        # A person: ?token= once, then the session cookie.
        with httpx.Client(base_url=base) as http:
            login = http.get(f"/?token={TOKEN}")
            assert login.status_code == 200 and 'content="0; url=./"' in login.text
            assert "httponly" in login.headers["set-cookie"].lower()
            assert "samesite=strict" in login.headers["set-cookie"].lower()
            assert http.get("/api/overview").status_code == 200  # (the cookie)
            posted = http.post("/api/dead/purge", json={"queue": "default"})
            assert posted.status_code == 403  # a browser's POST needs its CSRF token
    finally:
        stop(proc)


def test_posts_need_the_page_s_csrf_token_and_a_loopback_host(dashboard) -> None:
    base, _ = dashboard
    with httpx.Client(base_url=base) as http:
        page = http.get("/")
        assert page.status_code == 200
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        csrf = page.text.split('name="csrf-token" content="')[1].split('"')[0]
        body = {"queue": "default"}
        assert http.post("/api/dead/purge", json=body).status_code == 403
        wrong = {"X-CSRF-Token": "0" * 64}
        assert http.post("/api/dead/purge", json=body, headers=wrong).status_code == 403
        elsewhere = {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}
        assert http.post("/api/dead/purge", json=body, headers=elsewhere).status_code == 403
        ok = http.post("/api/dead/purge", json=body, headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200
        # DNS rebinding: a page named otherwise is not served without a token.
        rebound = http.get("/api/overview", headers={"Host": "evil.example"})
        assert rebound.status_code == 403
    with httpx.Client(base_url=base) as other:  # another session: that CSRF token is not its own
        other.get("/")
        refused = other.post("/api/dead/purge", json=body, headers={"X-CSRF-Token": csrf})
        assert refused.status_code == 403


def test_the_api_says_what_it_needs(dashboard) -> None:
    base, _ = dashboard
    with httpx.Client(base_url=base) as http:
        http.get("/")
        assert http.get("/api/dead").status_code == 400
        assert http.get("/api/task").status_code == 400
        assert http.get("/api/dead?queue=default&id=nope").status_code == 404
        csrf = http.get("/").text.split('name="csrf-token" content="')[1].split('"')[0]
        headers = {"X-CSRF-Token": csrf}
        body = {"queue": "default"}
        assert http.post("/api/dead/drop", json=body, headers=headers).status_code == 404
        assert http.get("/api/dead?queue=" + "q" * 300).status_code == 400
        bad = http.post(
            "/api/dead/purge",
            content=b"[1,",
            headers={**headers, "Content-Type": "application/json"},
        )
        assert bad.status_code == 400
        missing = http.post("/api/dead/requeue", json=body, headers=headers)
        assert missing.status_code == 400


# -- in a real browser -----------------------------------------------------------------
@pytest.fixture
def browser() -> Iterator[object]:
    # (CI fails rather than skips when either is missing: .ci/run installs both)
    chromium = shutil.which("chromium")
    if chromium is None:
        message = "chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        from playwright import sync_api
    except ImportError:
        message = 'playwright is not installed (pip install -e ".[dev]")'
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.mark.parametrize("dash_url", ["sqlite", "redis", "postgres"], indirect=True)
def test_the_page_end_to_end(served, browser, dash_url) -> None:
    app, add, explode = served.app, served.add, served.explode
    hostile = "<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>"
    letter = explode.delay(hostile)
    done = add.delay(2, 3)
    # A worker runs both: the add succeeds, the explode dies (no retries).
    worker = start_worker(
        served.env, "--beat", "0.3", "-c", "2", "-Q", "default", app="dashboard_app"
    )
    proc, port = start_dashboard(served.env)
    base = f"http://127.0.0.1:{port}"
    try:
        assert done.get(timeout=30) == 5
        assert wait_for(lambda: app.backend.stats("default").dead == 1, 30), output(worker)
        add.options(delay_by=3600).delay(1, 1)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(base + "/")
        # The queues and their counts, live: no reload.
        row = page.locator("#queues tbody tr", has_text="default")
        row.wait_for(timeout=15000)
        cells = row.locator("td").all_text_contents()
        assert cells[:5] == ["default", "0", "1", "0", "1"]
        # Live: a task enqueued now shows up without a reload.
        url_before = page.url
        add.options(delay_by=3600).delay(2, 2)
        page.wait_for_function(
            "() => [...document.querySelectorAll('#queues tbody tr td:nth-child(3)')]"
            ".some(td => td.textContent === '2')",
            timeout=15000,
        )
        # A queue no worker serves: its backlog, and how long its oldest task waited.
        for n in range(3):
            add.options(queue="reports").delay(n, n)
        page.locator("#queues tbody tr", has_text="reports").wait_for(timeout=15000)
        assert page.url == url_before
        add.delay(1, 2)
        add.starmap([(i, i) for i in range(50)])
        page.locator("#workers tbody tr", has_text=str(worker.pid)).wait_for(timeout=15000)
        # The dead letter, shown as text: its payload never becomes HTML.
        dead_row = page.locator("#dead tbody tr", has_text=letter.id)
        dead_row.wait_for(timeout=15000)
        dead_row.get_by_role("button", name="show").click()
        page.locator("#letter").wait_for(state="visible")
        fields = page.locator("#letter-fields").inner_text()
        assert hostile in fields and "dashboard_app.explode" in fields
        assert "exploded" in page.locator("#letter-error").inner_text()
        assert page.evaluate("window.__pwned") is None
        assert page.locator("#letter img").count() == 0 and page.locator("main script").count() == 0
        # The dead task looked up by id: how it failed, with its traceback.
        page.fill("#lookup-id", letter.id)
        page.click("#lookup button")
        page.locator("#task-fields", has_text="dead").wait_for(timeout=15000)
        assert "ValueError" in page.locator("#task-fields").inner_text()
        assert "Traceback" in page.locator("#task-traceback").inner_text()
        assert page.locator("#task img").count() == 0
        # What a worker runs now, shown as it runs.
        held = served.hold.delay(60)
        page.locator("#workers tbody tr", has_text="dashboard_app.hold").wait_for(timeout=15000)
        time.sleep(4)  # (a few more points on the throughput chart)
        ARTIFACTS.mkdir(exist_ok=True)
        kind = dash_url.partition(":")[0].replace("postgresql", "postgres")
        shot = ARTIFACTS / ("dashboard.png" if kind == "sqlite" else f"dashboard-{kind}.png")
        page.screenshot(path=str(shot), full_page=True)
        served.release.touch()
        assert held.get(timeout=30) == "released"
        # Requeue it from the page, once the fix is deployed: it runs, and succeeds.
        served.fixed.touch()
        page.locator("#letter-requeue").click()
        page.locator("#message", has_text="requeued").wait_for(timeout=15000)
        assert letter.get(timeout=30) == hostile
        assert wait_for(lambda: app.backend.stats("default").dead == 0, 15)
        page.locator("#dead-note", has_text="no dead letters").wait_for(timeout=15000)
        # A task looked up by id: its status and result.
        page.fill("#lookup-id", done.id)
        page.click("#lookup button")
        page.locator("#task-fields", has_text="succeeded").wait_for(timeout=15000)
        assert "5" in page.locator("#task-fields").inner_text()
        assert page.evaluate("window.__pwned") is None
    finally:
        stop(proc)
        stop(worker)


def test_purging_dead_letters_from_the_page(served, browser) -> None:
    app = served.app
    first, second, third = (served.explode.delay(n) for n in ("one", "two", "three"))
    app.drain()  # (here: each dies at its first attempt)
    assert app.backend.stats("default").dead == 3
    proc, port = start_dashboard(served.env)
    try:
        page = browser.new_page()
        asked: list[str] = []

        def answer(dialog: Any) -> None:
            asked.append(dialog.message)
            # Refuse the first question, agree to the others.
            dialog.accept() if len(asked) > 1 else dialog.dismiss()

        page.on("dialog", answer)
        page.goto(f"http://127.0.0.1:{port}/")
        row = page.locator("#dead tbody tr", has_text=first.id)
        row.get_by_role("button", name="show").click()
        page.locator("#letter-purge").click()  # (and "no" to "for good?")
        assert asked == ["Delete this dead letter for good?"]
        assert app.backend.stats("default").dead == 3
        page.locator("#letter-purge").click()
        page.locator("#message", has_text="purged 1").wait_for(timeout=15000)
        row.wait_for(state="detached", timeout=15000)
        assert app.backend.dead_get("default", first.id) is None
        page.locator("#dead-purge-all").click()
        page.locator("#message", has_text="purged 2").wait_for(timeout=15000)
        assert "every dead letter of default" in asked[-1]
        page.locator("#dead-note", has_text="no dead letters").wait_for(timeout=15000)
        assert app.backend.stats("default").dead == 0
        assert {second.id, third.id}.isdisjoint(d.task_id for d in app.backend.dead_list("default"))
    finally:
        stop(proc)


def test_behind_a_proxy_under_a_path_of_its_own(served, browser) -> None:
    """The page asks for everything by relative addresses, so a proxy may serve
    it under a path it strips (here the browser's own routing plays the proxy,
    and refuses whatever is asked for outside that path). A token given on a
    loopback address is required all the same."""
    served.explode.delay("behind")
    served.app.drain()
    env = {**served.env, "GATORAPP_DASHBOARD_TOKEN": TOKEN}
    proc, port = start_dashboard(env)  # (on 127.0.0.1)
    base = f"http://127.0.0.1:{port}"
    try:
        page = browser.new_page()
        outside: list[str] = []

        def refuse(route: Any) -> None:
            outside.append(route.request.url)
            route.abort()

        def proxy(route: Any) -> None:
            url = route.request.url.replace(f"{base}/gator/", f"{base}/", 1)
            route.fulfill(response=route.fetch(url=url))

        page.route(f"{base}/**", refuse)
        page.route(f"{base}/gator/**", proxy)  # (the later route is tried first)
        page.on("dialog", lambda dialog: dialog.accept())
        assert page.goto(f"{base}/gator/").status == 401
        page.goto(f"{base}/gator/?token={TOKEN}")
        page.wait_for_url(f"{base}/gator/")
        page.locator("#queues tbody tr", has_text="default").wait_for(timeout=15000)
        page.locator("#dead tbody tr").first.wait_for(timeout=15000)
        page.locator("#dead-purge-all").click()  # (a POST, through the proxy)
        page.locator("#message", has_text="purged 1").wait_for(timeout=15000)
        assert served.app.backend.stats("default").dead == 0
        assert outside == []
    finally:
        stop(proc)


def test_logging_in_with_the_token_in_a_browser(served, browser) -> None:
    env = {**served.env, "GATORAPP_DASHBOARD_TOKEN": TOKEN}
    proc, port = start_dashboard(env, "--host", "0.0.0.0")
    base = f"http://127.0.0.1:{port}"
    try:
        page = browser.new_page()
        refused = page.goto(f"{base}/")
        assert refused is not None and refused.status == 401
        assert "?token=" in page.content()
        page.goto(f"{base}/?token={TOKEN}")
        page.wait_for_url(f"{base}/")  # the token is out of the address
        page.locator("#queues tbody tr", has_text="default").wait_for(timeout=15000)
        assert "connecting" not in page.locator("#updated").inner_text()
        # Another site's link with the token (a chat, a wiki): the browser sends
        # no SameSite=Strict cookie along a journey another site started, so
        # the dashboard's own page moves on to the dashboard.
        other = browser.new_context().new_page()
        other.goto(f"http://localhost:{port}/")  # (another site than 127.0.0.1)
        other.evaluate(
            "url => { const a = document.createElement('a'); a.id = 'go'; a.href = url;"
            " a.textContent = 'dashboard'; document.body.append(a); }",
            f"{base}/?token={TOKEN}",
        )
        other.click("#go")
        other.wait_for_url(f"{base}/")
        other.locator("#queues tbody tr", has_text="default").wait_for(timeout=15000)
    finally:
        stop(proc)
