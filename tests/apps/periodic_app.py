"""An app with a periodic task that writes each tick's id to a ledger file."""

import os

from gatorapp import App

app = App(os.environ.get("GATORAPP_TEST_URL", "memory://"))


@app.hook
def record(task):
    with open(os.environ["PERIODIC_LEDGER"], "a") as f:
        f.write(f"{task.task_id} {os.getpid()}\n")


@app.periodic(every=1, on_start=record)
def every_second():
    return None
