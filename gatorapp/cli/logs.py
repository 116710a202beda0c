"""How the command line sets up logging, once the app module is imported.

The app's own configuration comes first: when the process already has a
handler on the root logger once the app is imported (``logging.basicConfig``
or ``dictConfig`` in the app module, or a program that runs the CLI from its
own code), gatorapp adds none and leaves its levels alone, except that an
explicit ``-l`` sets the level of the ``gatorapp`` loggers. Otherwise, or
when ``--log-format`` or ``--logfile`` is given (an explicit choice wins over
the app's), gatorapp configures the root logger: one handler, to standard
error or to the file, text or JSON, at ``-l`` (INFO by default).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
import sys
from typing import Any

#: The log lines' text format.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: A task's fields on its log lines (see gatorapp.worker.held.fields).
TASK_FIELDS = ("task_id", "task_name", "queue", "attempt", "duration")

#: Drivers whose INFO chatter ("Found credentials in environment variables")
#: is not the worker's news; their warnings still show.
CHATTY = ("botocore", "boto3", "urllib3")


class JsonFormatter(logging.Formatter):
    """One JSON object a line, for log shippers.

    Keys: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    ``pid``; on a task's lines ``task_id``, ``task_name``, ``queue``,
    ``attempt`` and ``duration`` (seconds); ``traceback`` when the line has
    one. A line break in a message stays inside the JSON string.
    """

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        attrs = record.__dict__
        for key in TASK_FIELDS:
            value = attrs.get(key)
            if value is not None:
                out[key] = value
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, default=str, ensure_ascii=False)


def open_logfile(path: str) -> logging.Handler:
    """A handler appending to ``path``; it reopens the file when logrotate
    moves it away. Raises OSError when the file cannot be opened."""
    return logging.handlers.WatchedFileHandler(path, encoding="utf-8")


def configure(level: str | None, fmt: str | None, logfile: logging.Handler | None) -> None:
    """Set up logging for a command (see the module).

    :param level: ``-l`` as given, or None.
    :param fmt: ``--log-format`` as given (``text`` or ``json``), or None.
    :param logfile: the handler of ``--logfile``, or None.
    """
    root = logging.getLogger()
    if root.handlers and fmt is None and logfile is None:
        if level is not None:
            logging.getLogger("gatorapp").setLevel(level)
        return
    handler = logfile or logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level or "INFO", handlers=[handler], force=True)
    quiet = max(logging.WARNING, logging.getLevelName(level or "INFO"))
    for name in CHATTY:
        logging.getLogger(name).setLevel(quiet)
