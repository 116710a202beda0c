"""The tasks of the async web example: one ``async def``, one plain ``def``.

Both run in one worker (``gatorapp worker -A tasks``): async tasks on its event
loop, sync ones on its threads. Results are kept in the same SQLite file.
"""

import asyncio

from gatorapp import App

app = App(results=True)  # gatorapp.db in this folder


@app.task(retries=2, timeout=10)
async def word_count(text: str) -> int:
    await asyncio.sleep(0.01)  # (where a real task would await an HTTP call or a database)
    return len(text.split())


@app.task
def shout(text: str) -> str:
    return text.upper()
