"""A task whose return value the logging worker reports."""

from pathlib import Path

from gatorapp import App

app = App()


@app.task
def count_words(path):
    return len(Path(path).read_text().split())
