"""An app for the dashboard tests: results kept, a task that always fails."""

import os

from gatorapp import App

app = App(os.environ.get("GATORAPP_TEST_URL", "memory://"), results=True, lease=5)
MARKER = os.environ.get("GATORAPP_TEST_LEDGER", os.devnull) + ".fixed"


@app.task
def add(a, b):
    return a + b


@app.task(retries=0)
def explode(note):
    """Fails until the marker file exists (a fix deployed), then returns ``note``."""
    if not os.path.exists(MARKER):
        raise ValueError(f"exploded: {note}")
    return note
