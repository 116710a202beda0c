"""An app for CLI tests: the URL comes from the environment."""

import logging
import os

from gatorapp import App, Worker

app = App(os.environ.get("GATORAPP_TEST_URL", "memory://"))
other = App("memory://", default_queue="elsewhere")
log = logging.getLogger("cli_app")


@app.task(queue="emails")
def send(user_id):
    return user_id


@app.task
def fail():
    raise ValueError("always fails")


class LoggingWorker(Worker):
    def starting(self):
        log.warning("%s consuming %s", self.ident(), self.to_consume)

    def stopping(self):
        log.warning("LoggingWorker done: %d tasks", self.tasks_complete)


not_a_worker = object()


@app.task
def leak_thread(marker):
    """Starts a thread that never ends, and is not a daemon."""
    import threading

    threading.Thread(target=threading.Event().wait, name="leaked-by-task").start()
    with open(marker, "w") as f:
        f.write("started")
