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
from pathlib import Path

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


@pytest.fixture
def served(tmp_path: Path):
    url = f"sqlite:///{tmp_path}/queue.db"
    app = App(url, results=True)

    # Same names as tests/apps/dashboard_app.py; this process only enqueues.
    @app.task(name="dashboard_app.add")
    def add(a, b): ...

    @app.task(name="dashboard_app.explode", retries=0)
    def explode(note): ...

    app.backend.stats("default")  # (the database exists: a dashboard never creates one)
    env = env_for(url, tmp_path / "ledger.txt")
    return app, add, explode, env, tmp_path / "ledger.txt.fixed"


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
    env = served[3]
    proc, port = start_dashboard(env)
    try:
        yield f"http://127.0.0.1:{port}", env
    finally:
        stop(proc)


# -- over HTTP -----------------------------------------------------------------------
def test_a_token_is_required_beyond_loopback_and_then_on_every_request(served) -> None:
    env = served[3]
    bare = {k: v for k, v in env.items() if k != "GATORAPP_DASHBOARD_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "gatorapp", "dashboard", "-A", "dashboard_app",
         "--host", "0.0.0.0", "--port", str(free_port())],
        env=bare, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "give it a token" in done.stderr, done.stderr
    proc, port = start_dashboard({**env, "GATORAPP_DASHBOARD_TOKEN": TOKEN}, "--host", "0.0.0.0")
    base = f"http://127.0.0.1:{port}"
    try:
        gets = ["/", "/api/overview", "/api/dead?queue=default", "/api/task?id=x", "/static/app.js"]
        with httpx.Client(base_url=base) as http:
            for path in gets:
                assert http.get(path).status_code == 401, path
                assert http.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
            page = http.get("/", headers={"Accept": "text/html"})
            assert page.status_code == 401 and "?token=" in page.text  # how to log in
            posted = http.post("/api/dead/requeue", json={"queue": "default", "task_id": "x"})
            assert posted.status_code == 401
            assert http.get("/?token=wrong").status_code == 401
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
    chromium = shutil.which("chromium")
    if chromium is None:
        message = "chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def test_the_page_end_to_end(served, browser) -> None:
    app, add, explode, env, fixed = served
    hostile = "<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>"
    letter = explode.delay(hostile)
    done = add.delay(2, 3)
    # A worker runs both: the add succeeds, the explode dies (no retries).
    worker = start_worker(env, "--beat", "0.3", app="dashboard_app")
    proc, port = start_dashboard(env)
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
        time.sleep(6)  # (a few points on the throughput chart)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        # Requeue it from the page, once the fix is deployed: it runs, and succeeds.
        fixed.touch()
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


def test_logging_in_with_the_token_in_a_browser(served, browser) -> None:
    env = {**served[3], "GATORAPP_DASHBOARD_TOKEN": TOKEN}
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
