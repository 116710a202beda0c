"""A Starlette app that enqueues from async views and reads results.

    uvicorn web:web --port 8000        # the web app
    gatorapp worker -A tasks           # the worker, in another terminal

    curl -X POST localhost:8000/count -d '{"text": "three short words"}'
    curl 'localhost:8000/tasks/ID?wait=5'

The views never block the event loop: ``adelay`` enqueues and ``aget``
waits for the result without a thread of their own.
"""

from gatorapp import ResultTimeout, TaskFailed
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tasks import app, shout, word_count


async def count(request: Request) -> JSONResponse:
    body = await request.json()
    handle = await word_count.adelay(str(body["text"]))
    loud = await shout.adelay(str(body["text"]))  # a sync task, enqueued from async code
    return JSONResponse({"id": handle.id, "shout_id": loud.id}, status_code=202)


async def task(request: Request) -> JSONResponse:
    # A handle rebuilt from the id the client kept.
    handle = app.result(request.path_params["task_id"])
    wait = float(request.query_params.get("wait", "0"))
    try:
        value = await handle.aget(timeout=wait)
    except ResultTimeout:
        return JSONResponse({"status": await handle.astatus()})
    except TaskFailed as exc:
        return JSONResponse({"status": exc.status, "error": exc.summary})
    return JSONResponse({"status": "succeeded", "value": value})


web = Starlette(
    routes=[
        Route("/count", count, methods=["POST"]),
        Route("/tasks/{task_id}", task),
    ]
)
