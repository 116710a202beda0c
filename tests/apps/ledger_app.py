"""An app for tests that run real worker processes.

Every task appends ``start``/``done`` lines (task id, argument, pid) to the
ledger file, with O_APPEND so lines from several processes never interleave.
The URL, lease and ledger path come from the environment.
"""

import asyncio
import os
import time

from ledger import log as _log

from gatorapp import App

app = App(
    os.environ.get("GATORAPP_TEST_URL", "memory://"),
    lease=float(os.environ.get("GATORAPP_TEST_LEASE", "2")),
)


@app.task
def record(key, sleep=0.0):
    _log("start", key)
    if sleep:
        time.sleep(sleep)
    _log("done", key)
    return key


@app.task
async def record_async(key, sleep=0.0, block=0.0):
    """``sleep``: awaited; ``block``: a sync sleep that holds the event loop."""
    _log("start", key)
    if sleep:
        await asyncio.sleep(sleep)
    if block:
        time.sleep(block)
    _log("done", key)
    return key


@app.task(timeout=1.0, retries=1, backoff=None)
def overdue(key, sleep=30.0):
    """A sync task that runs past its timeout (until its process is replaced)."""
    _log("start", key)
    time.sleep(sleep)
    _log("done", key)


@app.task(queue="other")
def record_other(key):
    _log("done", key)
