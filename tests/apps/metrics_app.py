"""An app for the metrics tests: tasks that succeed, fail once, or always fail.

Each attempt appends a line to the ledger (``$GATORAPP_TEST_LEDGER``), so the
counts scraped from ``/metrics`` can be checked against what really ran.
"""

import os

from ledger import LEDGER
from ledger import log as _log

from gatorapp import App

app = App(os.environ.get("GATORAPP_TEST_URL", "memory://"), lease=5)


@app.task
def ok(key):
    _log("attempt", key)


@app.task(retries=1, backoff=None)
def once(key):
    """Fails its first attempt (a marker file says it ran), succeeds the second."""
    _log("attempt", key)
    marker = f"{LEDGER}.{key}"
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ValueError("first attempt fails")


@app.task(retries=1, backoff=None)
def never(key):
    _log("attempt", key)
    raise ValueError("always fails")


@app.task(timeout=0.5, retries=0)
def late(key):
    """Runs past its timeout: under a supervisor its process is replaced."""
    _log("attempt", key)
    import time

    time.sleep(30)


@app.task
def fan(key):
    """Enqueues FAN_OUT ``ok`` tasks: the worker's process counts those enqueues."""
    _log("attempt", key)
    ok.map([f"{key}-{i}" for i in range(FAN_OUT)])


FAN_OUT = 4
