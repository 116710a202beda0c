"""An app that keeps results: the URL comes from the environment."""

import os

from gatorapp import App

app = App(os.environ.get("GATORAPP_TEST_URL", "memory://"), results=True)


@app.task
def add(a, b):
    return a + b
