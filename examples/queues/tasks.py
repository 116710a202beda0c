"""Two queues: welcome emails matter more than thumbnails."""

import os
import time
from pathlib import Path

from gatorapp import App

HERE = Path(__file__).parent
LOG = HERE / "done.log"

app = App()


def record(line):
    # One short append per line, so lines from several workers never interleave.
    with open(LOG, "a") as f:
        f.write(f"{line} pid={os.getpid()}\n")


@app.task(queue="emails")
def send_welcome_email(user_id):
    time.sleep(0.05)  # talking to the mail server
    record(f"email {user_id}")


@app.task(queue="thumbnails")
def create_thumbnail(photo_path):
    time.sleep(0.02)  # resizing a large upload takes a while
    record(f"thumbnail {photo_path}")
