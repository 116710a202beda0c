"""``gatorapp result``: a task's status, and its value or its error."""

from __future__ import annotations

import argparse
import json
import sys

from .. import views
from ..app import App
from ..errors import ConfigurationError, ResultTimeout
from ..results import FINAL, SUCCEEDED, UNKNOWN, Result
from .common import UsageError, no_store, safe, when


def cmd_result(app: App, args: argparse.Namespace) -> int:
    """Exit status 0 when the task succeeded or has not ended yet, 1 when it
    failed, went to the dead letters, was cancelled, or is unknown."""
    if no_store(app):
        return 1
    try:
        handle = app.result(args.task_id, args.queues[0] if args.queues else None)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
    reader = app.producer.results
    assert reader is not None  # (app.result() raised otherwise)
    found: Result | None = None
    if args.wait is not None:
        try:
            found = reader.wait(args.task_id, args.wait)
        except ResultTimeout:
            found = None
    if found is None:
        found = reader.stored(args.task_id)
    status = found.status if found is not None and found.status in FINAL else handle.status()
    if args.json:
        print(json.dumps(views.task(app, args.task_id, found, status), default=repr))
    else:
        print(f"task id:   {safe(args.task_id)}\nstatus:    {status}")
        if found is not None and status in FINAL:
            if found.name:
                print(f"task:      {safe(found.name)}\nattempts:  {found.attempts}")
            print(f"finished:  {when(found.finished_at)}")
            if status == SUCCEEDED:
                print(f"value:     {safe(repr(found.value))}")
            else:
                print(f"reason:    {safe(found.reason)}\nerror:     {safe(found.summary)}")
                if found.traceback:
                    print(safe(found.traceback.rstrip(), keep="\n"))
        elif status == UNKNOWN:
            print(
                "(no such task in the queues, and no result stored: a wrong id, a task that "
                "stores no result, or a result past its time to live)",
                file=sys.stderr,
            )
    return 0 if status == SUCCEEDED or status not in FINAL | {UNKNOWN} else 1
