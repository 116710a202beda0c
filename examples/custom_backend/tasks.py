"""An app whose queue lives in the custom client's database."""

from pathlib import Path

import tenacity
from gatorapp import App

from sqlite_backend import Client as SQLiteClient

HERE = Path(__file__).parent
RECEIPTS = HERE / "receipts"

app = App(f"sqlite:///{HERE / 'myapp_queue.db'}", backend_class=SQLiteClient)


# One retry, at once, so the example finishes in one --burst run.
@app.task(retries=1, backoff=tenacity.wait_none())
def charge(order_id, cents):
    if cents <= 0:
        raise ValueError(f"order {order_id}: nothing to charge")
    RECEIPTS.mkdir(exist_ok=True)
    (RECEIPTS / f"{order_id}.txt").write_text(f"charged {cents} cents\n")
    return cents
