"""An app for the dashboard tests: results kept, a task that always fails,
and one that runs until the test lets it finish."""

import os
import time

from gatorapp import App

app = App(os.environ.get("GATORAPP_TEST_URL", "memory://"), results=True, lease=5)
LEDGER = os.environ.get("GATORAPP_TEST_LEDGER", os.devnull)
MARKER = LEDGER + ".fixed"
RELEASE = LEDGER + ".release"


@app.task
def add(a, b):
    return a + b


@app.task(retries=0)
def explode(note):
    """Fails until the marker file exists (a fix deployed), then returns ``note``."""
    if not os.path.exists(MARKER):
        raise ValueError(f"exploded: {note}")
    return note


@app.task
def hold(seconds):
    """Runs until the release file exists, or for ``seconds`` at most: a task
    the page shows running for as long as the test needs."""
    deadline = time.monotonic() + seconds
    while not os.path.exists(RELEASE) and time.monotonic() < deadline:
        time.sleep(0.05)
    return "released"
