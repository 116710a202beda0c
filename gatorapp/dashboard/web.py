"""The dashboard's routes (see :mod:`gatorapp.dashboard`).

Every backend call is blocking, so each handler runs it on a thread
(``run_in_threadpool``), never on the event loop.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import views
from ..app import App
from ..backends.protocols import dead_letters, known_queues, queue_admin
from ..errors import ConfigurationError, NotAvailable
from .auth import COOKIE, CSRF_HEADER, Auth

HERE = Path(__file__).parent
#: seconds of throughput the chart shows, and the spacing of its points
CHART_SECONDS, CHART_STEP = 600, 2.0
#: the closest two points may be (pages poll every CHART_STEP, give or take)
MIN_GAP = CHART_STEP * 0.8
#: dead letters listed per queue (the oldest first; the page says how many more)
LETTERS = 50

# No script, style or frame from anywhere but here; no inline script at all.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


def _json(data: Any, status: int = 200) -> Response:
    # (repr for what JSON has no type for: bytes in a task's arguments)
    body = json.dumps(data, default=repr)
    return Response(body, status, media_type="application/json")


class Throughput:
    """Tasks finished per second, from the live workers' ``done`` counts at
    each look (a worker that appears counts from then; one that leaves takes
    nothing away)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last: dict[str, int] = {}
        self.total = 0
        # (room for the whole window at the closest spacing `add` allows)
        self.points: deque[tuple[float, int]] = deque(maxlen=int(CHART_SECONDS / MIN_GAP) + 1)

    def add(self, workers: list[dict[str, Any]], now: float) -> list[list[float]]:
        with self.lock:
            seen = {}
            for w in workers:
                before = self.last.get(w["id"])
                if before is not None and w["done"] >= before:
                    self.total += w["done"] - before
                seen[w["id"]] = w["done"]
            self.last = seen
            if not self.points or now - self.points[-1][0] >= MIN_GAP:
                self.points.append((now, self.total))
            # Only the last CHART_SECONDS: after a while with no page open the
            # chart starts afresh rather than spanning the gap.
            while self.points and self.points[0][0] < now - CHART_SECONDS:
                self.points.popleft()
            pts = list(self.points)
        return [
            [t1, round((n1 - n0) / (t1 - t0), 2)]
            for (t0, n0), (t1, n1) in itertools.pairwise(pts)
            if t1 > t0
        ]


def build(app: App, token: str | None) -> Starlette:
    auth = Auth(token)
    pages = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # (every value drawn into a page is escaped)
    )
    throughput = Throughput()
    rates, rates_lock = views.Rates(), threading.Lock()

    def valid_queue(queue: str) -> bool:
        """The backend's own rules for a queue name (a key it would build)."""
        try:
            app.check_queue(queue)
        except ConfigurationError:
            return False
        return True

    def overview() -> dict[str, Any]:
        queues = list(dict.fromkeys(app.queues() + known_queues(app.backend)))
        look: dict[str, Any] = {"time": time.time(), "backend": app.backend.describe()}
        rows: list[dict[str, Any]] = []
        try:
            admin = queue_admin(app.backend)
        except NotAvailable as exc:  # (a delivery-only backend: no counts to show)
            queues, look["counts"] = [], str(exc)
        for q in queues:
            s = admin.stats(q)
            age = None if s.oldest is None else max(0.0, look["time"] - s.oldest)
            rows.append(
                {"queue": q, "ready": s.ready, "delayed": s.delayed, "running": s.running,
                 "dead": s.dead, "age": age}
            )  # fmt: skip
        look["queues"] = rows
        try:
            look["workers"] = [w.to_dict() for w in app.workers()]
        except NotAvailable:
            look["workers"] = None
        # (None: no worker counts to take a throughput from)
        workers = look["workers"]
        look["chart"] = None if workers is None else throughput.add(workers, look["time"])
        with rates_lock:  # (tasks out of each queue per second, over the last looks)
            rates.add(look)
            out = rates.out()
        for row in rows:
            row["out"] = out.get(row["queue"])
        look["results"] = app.producer.results is not None
        return look

    def dead_list(queue: str) -> list[dict[str, Any]]:
        out = []
        for d in dead_letters(app.backend).dead_list(queue, LETTERS):
            task = views.describe(app, d.data)
            error = d.error.strip()
            out.append(
                {
                    "queue": d.queue,
                    "task_id": d.task_id,
                    "task": task.name if task is not None else None,
                    "reason": d.reason,
                    "failed_at": d.failed_at,
                    "error": error.splitlines()[-1] if error else "",
                }
            )
        return out

    async def index(request: Request) -> Response:
        sid = request.state.sid
        page = pages.get_template("index.html").render(
            csrf=auth.csrf(sid) if sid else "", backend=app.backend.describe()
        )
        return HTMLResponse(page)

    async def api_overview(request: Request) -> Response:
        return _json(await run_in_threadpool(overview))

    async def api_dead(request: Request) -> Response:
        queue = request.query_params.get("queue", "")
        task_id = request.query_params.get("id")
        if not queue:
            return _json({"error": "name a queue: ?queue=NAME"}, 400)
        if not valid_queue(queue):
            return _json({"error": "not a queue name"}, 400)
        if task_id is None:
            return _json(await run_in_threadpool(dead_list, queue))
        found = await run_in_threadpool(dead_letters(app.backend).dead_get, queue, task_id)
        if found is None:
            return _json({"error": "no such dead letter"}, 404)
        return _json(views.letter(app, found))

    async def api_task(request: Request) -> Response:
        task_id = request.query_params.get("id", "").strip()
        if not task_id:
            return _json({"error": "give a task id: ?id=ID"}, 400)
        return _json(await run_in_threadpool(views.lookup, app, task_id))

    async def api_action(request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ("requeue", "purge"):
            return _json({"error": f"no action {action!r}: requeue or purge"}, 404)
        try:
            body = await request.json()
            queue, task_id = str(body["queue"]), body.get("task_id")
        except (ValueError, KeyError, TypeError, AttributeError):
            return _json({"error": 'send {"queue": ..., "task_id": ...} as JSON'}, 400)
        if not valid_queue(queue):
            return _json({"error": "not a queue name"}, 400)
        if action == "requeue":
            if not task_id:
                return _json({"error": "requeue needs a task_id"}, 400)
            done = await run_in_threadpool(app.requeue_dead, queue, str(task_id))
            return _json({"requeued": done}, 200 if done else 404)
        purged = await run_in_threadpool(
            dead_letters(app.backend).dead_purge, queue, None if task_id is None else str(task_id)
        )
        return _json({"purged": purged})

    routes = [
        Route("/", index),
        Route("/api/overview", api_overview),
        Route("/api/dead", api_dead),
        Route("/api/task", api_task),
        Route("/api/dead/{action:str}", api_action, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(Guard, auth=auth, pages=pages)])


class Guard(BaseHTTPMiddleware):
    """Applies :mod:`gatorapp.dashboard.auth` to every request."""

    def __init__(self, app: Any, auth: Auth, pages: jinja2.Environment) -> None:
        super().__init__(app)
        self.auth = auth
        self.pages = pages

    def refuse(self, request: Request, status: int, why: str) -> Response:
        if "text/html" in request.headers.get("accept", ""):
            page = self.pages.get_template("refused.html").render(status=status, why=why)
            response: Response = HTMLResponse(page, status)
        else:
            response = JSONResponse({"error": why}, status)
        response.headers.update(SECURITY_HEADERS)
        return response

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        auth = self.auth
        response: Response
        host = request.headers.get("host")
        if not auth.host_ok(host):
            return self.refuse(request, 403, "this dashboard answers on a loopback address only")
        if auth.token is None and request.url.path.startswith("/static/"):
            response = await call_next(request)  # (the page's script and style: no data)
            response.headers.update(SECURITY_HEADERS)
            return response
        given = request.query_params.get("token")
        if given is not None and auth.token is not None and request.method == "GET":
            if not auth.token_ok(given):
                return self.refuse(request, 401, "wrong token")
            # Logged in: a session cookie, and on to the same page without the
            # token. Not by a 303: a browser that came by a link from another
            # site would not send a SameSite=Strict cookie along the redirect
            # (nor on a reload); a page of this site moving on does.
            page = self.pages.get_template("welcome.html").render(to=_without_token(request))
            response = HTMLResponse(page)
            _set_session(request, response, auth.new_session())
            response.headers.update(SECURITY_HEADERS)
            return response
        bearer = auth.bearer(request.headers.get("authorization"))
        sid = auth.session(request.cookies.get(COOKIE))
        new_cookie = None
        if not bearer and sid is None:
            if auth.token is not None:
                return self.refuse(request, 401, "log in: open this page with ?token=TOKEN")
            if request.method == "GET":  # (no token: a session for CSRF only)
                new_cookie = auth.new_session()
                sid = auth.session(new_cookie)
        if request.method not in ("GET", "HEAD"):
            headers = request.headers
            if not auth.same_origin(headers.get("origin"), headers.get("referer"), host):
                return self.refuse(request, 403, "cross-site request refused")
            media = headers.get("content-type", "").partition(";")[0].strip().lower()
            if media != "application/json":
                return self.refuse(request, 415, "send JSON: Content-Type: application/json")
            if not bearer and (sid is None or not auth.csrf_ok(sid, headers.get(CSRF_HEADER, ""))):
                return self.refuse(request, 403, "missing or wrong CSRF token")
        request.state.sid = sid
        response = await call_next(request)
        if new_cookie is not None:
            _set_session(request, response, new_cookie)
        response.headers.update(SECURITY_HEADERS)
        return response


def _without_token(request: Request) -> str:
    """The page asked for, without ``?token=``, as a relative reference: right
    over https behind a proxy (uvicorn may see http) and under a path prefix
    the proxy strips, where an absolute URL built from this request is not."""
    last = request.url.path.rsplit("/", 1)[-1]
    rest = request.url.remove_query_params("token").query
    return "./" + quote(last) + ("?" + rest if rest else "")


def _set_session(request: Request, response: Response, value: str) -> None:
    # (Secure when the page is https: uvicorn takes the scheme from a proxy's
    # X-Forwarded-Proto when the proxy is on this machine)
    response.set_cookie(
        COOKIE, value, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
