"""The tutorial's project: one app, two tasks."""

from pathlib import Path

from gatorapp import App

OUTBOX = Path(__file__).parent / "outbox"

# No URL: sqlite:///gatorapp.db in the current directory, or $GATORAPP_URL.
# results=True: each task keeps its return value (for a day) for handle.get().
app = App(results=True)


@app.task
def add(a, b):
    return a + b


@app.task(queue="emails", retries=3, retry_on=(ConnectionError,))
def send_welcome_email(user_id):
    if user_id <= 0:
        raise ValueError(f"no such user: {user_id}")  # not retried: retry_on names ConnectionError
    # A stand-in for an SMTP call: one file per message.
    OUTBOX.mkdir(exist_ok=True)
    message = OUTBOX / f"welcome-{user_id}.txt"
    message.write_text(f"Welcome aboard, user {user_id}!\n")
    return str(message)
