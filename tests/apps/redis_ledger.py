"""The app the Redis fault tests run in real worker processes.

Each execution appends ``start`` and ``done`` lines (event, task id, attempt,
pid) to the ledger file with O_APPEND, so lines from several processes never
interleave; lost and duplicate counts are computed from it. URL, lease and
ledger path come from the environment (see tests/worker_proc.py).
"""

import os
import threading
import time

from ledger import append

from gatorapp import App, Task

app = App(
    os.environ.get("GATORAPP_TEST_URL", "memory://"),
    lease=float(os.environ.get("GATORAPP_TEST_LEASE", "2")),
)
_current = threading.local()


def _log(event: str) -> None:
    task: Task = _current.task
    append(f"{event} {task.task_id} {task.attempt} {os.getpid()}\n")


def remember(task: Task) -> None:
    # on_start runs on the thread that then runs the task: hand it its Task.
    _current.task = task


@app.task(on_start=remember)
def record(sleep: float = 0.0, spin: float = 0.0) -> None:
    _log("start")
    if sleep:
        time.sleep(sleep)
    if spin:  # pure-Python work that holds the GIL, to starve other threads
        end = time.monotonic() + spin
        while time.monotonic() < end:
            sum(range(1000))
    _log("done")
