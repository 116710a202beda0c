"""``gatorapp`` command line: worker, status, dead.

    gatorapp worker -A myproj.app [-Q emails,images] [-p N] [-c N] [--max-tasks N] [--burst]
                    [--prefetch N] [--worker-class pkg.mod:Cls]
                    [-l LEVEL] [--log-format text|json] [--logfile PATH]
    gatorapp status -A myproj.app [-Q ...] [--json] [--watch [--interval SECONDS]]
    gatorapp result -A myproj.app TASK_ID [--wait SECONDS] [--json]
    gatorapp periodic -A myproj.app
    gatorapp workers -A myproj.app [-Q ...] [--json]
    gatorapp metrics -A myproj.app --port PORT [--host 127.0.0.1] [-Q ...]
    gatorapp dashboard -A myproj.app [--host 127.0.0.1] [--port 8080] [--token TOKEN]
    gatorapp dead   -A myproj.app [-Q queue] ls | show ID | requeue ID | requeue --all
                    | purge [ID] [--yes]

``-A`` takes ``pkg.mod`` (its attribute ``app``) or ``pkg.mod:attr``; it may
also come before the subcommand, or from ``$GATORAPP_APP``. Bad flags and
bad paths print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .. import __version__
from ..app import App
from ..errors import BackendError, GatorError
from ..tally import Tally
from ..worker import Worker
from ..worker.signals import EarlySignals
from . import logs
from .common import UsageError, safe, warn_unknown
from .dashboard import cmd_dashboard
from .dead import cmd_dead
from .metrics import LOOPBACK, cmd_metrics, worker_metrics
from .periodic import cmd_periodic
from .result import cmd_result
from .status import MIN_INTERVAL, cmd_status
from .supervisor import LIFELINE_ENV, Supervisor, watch_lifeline
from .workers import cmd_workers

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _whole(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= minimum."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
        return value

    return parse


_positive = _whole(1)
_non_negative = _whole(0)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 <= value < 10**9:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def _interval(text: str) -> float:
    # (0 would look again at once, for good: a busy loop on the backend,
    # which on SQS is billed per request)
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not MIN_INTERVAL <= value < 10**9:  # (NaN is refused too)
        raise argparse.ArgumentTypeError(f"expected seconds >= {MIN_INTERVAL:g}, got {text!r}")
    return value


def _port(text: str) -> int:
    value = _whole(1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number (1-65535), got {value}")
    return value


def _level(text: str) -> str:
    if text.upper() not in LEVELS:
        raise argparse.ArgumentTypeError(f"log level must be one of {', '.join(LEVELS)}")
    return text.upper()


def _queues(text: str) -> list[str]:
    queues = list(dict.fromkeys(q.strip() for q in text.split(",") if q.strip()))
    if not queues:
        raise argparse.ArgumentTypeError("expected queue names separated by commas")
    return queues


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "-A",
        "--app",
        default=argparse.SUPPRESS,
        help="the app: pkg.mod (attribute 'app') or pkg.mod:attr",
    )
    common.add_argument(
        "-Q",
        "--queues",
        type=_queues,
        default=None,
        help="comma-separated queues, earlier ones first",
    )
    common.add_argument(
        "-l", "--loglevel", type=_level, default=None, help="log level (default INFO)"
    )
    common.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="text (default) or json: one JSON object a line",
    )
    common.add_argument(
        "--logfile", default=None, help="append log lines to this file, not standard error"
    )

    parser = _Parser(prog="gatorapp", description="gatorapp task queue")
    parser.add_argument("-A", "--app", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"gatorapp {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    sub.required = True

    w = sub.add_parser("worker", parents=[common], help="run a worker")
    w.add_argument(
        "-p", "--processes", type=_positive, default=1, help="worker processes (default 1)"
    )
    w.add_argument(
        "-c", "--concurrency", type=_positive, default=1, help="tasks at once, per process"
    )
    w.add_argument(
        "--async-concurrency",
        type=_positive,
        default=None,
        help="async def tasks at once, per process, on its event loop (default 100)",
    )
    w.add_argument("--max-tasks", type=_positive, default=None, help="exit after N attempts")
    w.add_argument("--burst", action="store_true", help="exit once the queues have nothing ready")
    w.add_argument(
        "--prefetch",
        type=_non_negative,
        default=None,
        help="tasks reserved ahead of free threads (default: adapts to task length)",
    )
    w.add_argument("--worker-class", default=None, help="pkg.mod:WorkerSubclass")
    w.add_argument(
        "--beat",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="seconds between two reports of each process to `gatorapp workers` (default 5; "
        "a process that stops reporting leaves the list after three)",
    )
    w.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics (pip install "
        '"gatorapp[metrics]")',
    )
    w.add_argument(
        "--metrics-host",
        default=LOOPBACK,
        metavar="HOST",
        help=f"the address metrics are served on (default {LOOPBACK})",
    )
    w.add_argument(
        "--no-schedule",
        action="store_true",
        help="do not enqueue the app's periodic tasks (scheduling is off with --burst)",
    )

    st = sub.add_parser(
        "status", parents=[common], help="ready / delayed / running / dead per queue"
    )
    st.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    st.add_argument(
        "--watch", action="store_true", help="redraw until Ctrl-C, with rates and workers"
    )
    st.add_argument(
        "--interval",
        type=_interval,
        default=1.0,
        metavar="SECONDS",
        help="with --watch: seconds between two looks (default 1, at least 0.1)",
    )
    sub.add_parser("periodic", parents=[common], help="the app's periodic tasks and their ticks")
    m = sub.add_parser("metrics", parents=[common], help="serve queue gauges to Prometheus")
    m.add_argument("--port", type=_port, required=True, help="serve on this port")
    m.add_argument("--host", default=LOOPBACK, help=f"serve on this address (default {LOOPBACK})")
    db = sub.add_parser("dashboard", parents=[common], help="serve the web dashboard")
    db.add_argument("--host", default=LOOPBACK, help=f"listen on this address (default {LOOPBACK})")
    db.add_argument("--port", type=_port, default=8080, help="listen on this port (default 8080)")
    db.add_argument(
        "--token",
        default=None,
        help="the token every request must carry (default: $GATORAPP_DASHBOARD_TOKEN); "
        "required beyond a loopback address",
    )
    ws = sub.add_parser("workers", parents=[common], help="live workers and what they run")
    ws.add_argument("--json", action="store_true", help="one JSON list, for scripts")

    r = sub.add_parser("result", parents=[common], help="a task's status, and its value or error")
    r.add_argument("task_id", help="the task's id (handle.id)")
    r.add_argument(
        "--wait", type=_seconds, default=None, metavar="SECONDS", help="wait for it to end"
    )
    r.add_argument("--json", action="store_true", help="one JSON object, for scripts")

    d = sub.add_parser("dead", parents=[common], help="inspect and requeue dead letters")
    d.add_argument("action", choices=["ls", "show", "requeue", "purge"], nargs="?", default="ls")
    d.add_argument("task_id", nargs="?", default=None)
    d.add_argument("--all", action="store_true", help="with requeue: every dead letter")
    d.add_argument("--yes", action="store_true", help="with purge: do not ask")
    return parser


def import_object(path: str, default_attr: str | None, what: str) -> Any:
    module_name, _, attr = path.partition(":")
    attr = attr or (default_attr or "")
    if not module_name or not attr:
        raise UsageError(f"bad {what} path {path!r}: expected pkg.mod:attr")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like python -m: the project folder is importable
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if ":" not in path and exc.name == module_name and "." in module_name:
            # -A myproj.app: no module myproj.app, so it names attribute app of myproj
            head, _, tail = module_name.rpartition(".")
            return import_object(f"{head}:{tail}", None, what)
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise UsageError(
                f"cannot import {what} module {module_name!r}: no such module"
            ) from None
        raise UsageError(
            f"cannot import {what} module {module_name!r}: {exc}{_where(exc)}", exc
        ) from None
    except Exception as exc:
        raise UsageError(
            f"importing {what} module {module_name!r} failed: {type(exc).__name__}: {exc}"
            f"{_where(exc)}",
            exc,
        ) from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{what} module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _where(exc: BaseException) -> str:
    """Where in the user's own code an import failed: the innermost frame that
    is not Python's import machinery (for a SyntaxError, the line it names)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f" (at {exc.filename}:{exc.lineno})"
    ours = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # gatorapp/
    where = ""
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        machinery = filename.startswith("<frozen") or "importlib" in filename
        if not machinery and not filename.startswith(ours + os.sep):
            where = f" (at {filename}:{tb.tb_lineno})"
        tb = tb.tb_next
    return where


def load_app(path: str) -> App:
    app = import_object(path, "app", "app")
    if not isinstance(app, App):
        raise UsageError(f"{path!r} is a {type(app).__name__}, not a gatorapp.App")
    return app


def _child_argv(args: argparse.Namespace, app_path: str) -> list[str]:
    """The command line of one worker process under a supervisor: the same
    worker, without -p."""
    argv = ["worker", "-A", app_path, "-c", str(args.concurrency)]
    if args.async_concurrency is not None:
        argv += ["--async-concurrency", str(args.async_concurrency)]
    # (Logging flags only as given: a child, too, keeps the app's own setup.)
    for flag, value in (
        ("-l", args.loglevel),
        ("--log-format", args.log_format),
        ("--logfile", args.logfile),
    ):
        if value is not None:
            argv += [flag, value]
    if args.queues:
        argv += ["-Q", ",".join(args.queues)]
    if args.max_tasks is not None:
        argv += ["--max-tasks", str(args.max_tasks)]
    if args.burst:
        argv.append("--burst")
    if args.prefetch is not None:
        argv += ["--prefetch", str(args.prefetch)]
    if args.worker_class:
        argv += ["--worker-class", args.worker_class]
    if args.no_schedule:
        argv.append("--no-schedule")
    if args.beat is not None:
        argv += ["--beat", str(args.beat)]
    return argv


def cmd_worker(
    app: App, args: argparse.Namespace, early: EarlySignals | None = None, app_path: str = ""
) -> int:
    cls: type[Worker] = Worker
    if args.worker_class:
        cls = import_object(args.worker_class, None, "worker class")
        if not (isinstance(cls, type) and issubclass(cls, Worker)):
            raise UsageError(f"{args.worker_class!r} is not a subclass of gatorapp.Worker")
    if args.queues and not os.environ.get(LIFELINE_ENV):  # (a child: its parent said so)
        warn_unknown(app, args.queues)
    with worker_metrics(app, args) as tally:
        if args.processes > 1:
            # The app imported and the worker class found: now the processes.
            sup = Supervisor(
                _child_argv(args, app_path),
                args.processes,
                restart_clean=not (args.burst or args.max_tasks),
            )
            if early is not None:
                early.forward(sup.handle_signal)
            return sup.run()
        return _run_worker(cls, app, args, early, tally)


def _run_worker(
    cls: type[Worker],
    app: App,
    args: argparse.Namespace,
    early: EarlySignals | None,
    tally: Tally | None,
) -> int:
    supervised = LIFELINE_ENV in os.environ  # (watch_lifeline takes it, below)
    # Only what was asked for: a --worker-class of an earlier release may not
    # know the newer keywords.
    extra: dict[str, Any] = {}
    if args.beat:
        extra["beat"] = args.beat
    if tally is not None:
        extra["tally"] = tally
    if args.async_concurrency is not None:
        extra["async_concurrency"] = args.async_concurrency
    worker = cls(
        app,
        queues=args.queues,
        max_tasks=args.max_tasks,
        concurrency=args.concurrency,
        burst=args.burst,
        prefetch=args.prefetch,
        schedule=not (args.burst or args.no_schedule),
        replace_overdue=supervised,
        **extra,
    )
    if early is not None:
        early.forward(worker.handle_signal)
    watch_lifeline(worker.stop)  # (under a supervisor only)
    return worker.run_forever()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    early = EarlySignals()
    try:
        with early:
            return _main(parser, argv, early)
    except UsageError as exc:
        if exc.cause is not None:
            logging.getLogger("gatorapp").debug("the import failed:", exc_info=exc.cause)
        print(f"gatorapp: error: {exc}", file=sys.stderr)
        return 2
    except BackendError as exc:  # the backend failed: not a usage error
        print(f"gatorapp: error: {exc}", file=sys.stderr)
        return 1
    except GatorError as exc:  # Rejected included
        print(f"gatorapp: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # argparse --help
        return int(exc.code or 0)
    except KeyboardInterrupt:  # Ctrl-C during status or dead
        return 128 + signal.SIGINT
    except BrokenPipeError:  # `gatorapp dead ls | head`: the reader has gone
        sys.stderr.close()
        return 0


def _main(parser: argparse.ArgumentParser, argv: Sequence[str] | None, early: EarlySignals) -> int:
    if not (sys.argv[1:] if argv is None else argv):
        parser.print_help(sys.stderr)  # `gatorapp` alone: what it can do
        return 2
    args = parser.parse_args(argv)
    app_path = getattr(args, "app", None) or os.environ.get("GATORAPP_APP")
    if not app_path:
        raise UsageError("-A/--app is required (or set GATORAPP_APP)")
    logfile = None
    if args.logfile is not None:
        try:
            logfile = logs.open_logfile(args.logfile)
        except OSError as exc:
            raise UsageError(f"cannot open log file {args.logfile!r}: {exc.strerror}") from None
    # Logging is set up after the import, so that a setup the app module
    # makes is kept (see gatorapp.cli.logs); a failed import still logs
    # its traceback at -l DEBUG.
    try:
        app = load_app(app_path)
    finally:
        logs.configure(args.loglevel, args.log_format, logfile)
    if args.command == "worker":
        return cmd_worker(app, args, early, app_path)
    # Only a worker stops gracefully; other commands stop at a signal as usual.
    got = early.restore()
    if got is not None:
        return 128 + got
    command = {
        "status": cmd_status,
        "dead": cmd_dead,
        "result": cmd_result,
        "periodic": cmd_periodic,
        "workers": cmd_workers,
        "metrics": cmd_metrics,
        "dashboard": cmd_dashboard,
    }[args.command]
    return command(app, args)


#: Seconds the command waits at exit for threads it did not start (a task's).
LEFTOVER_GRACE = 2.0


def run() -> None:
    """Console-script entry point."""
    code = main()
    # A thread a task started and never stopped would keep the process alive
    # for good after the worker stopped (Python waits for non-daemon threads
    # at exit): give it a moment, then exit anyway and say what was left.
    deadline = time.monotonic() + LEFTOVER_GRACE
    for thread in _leftover_threads():
        thread.join(max(0.0, deadline - time.monotonic()))
    leftover = _leftover_threads()
    if leftover:
        logging.getLogger("gatorapp.worker").warning(
            "exiting with %d thread(s) still running, started by a task and never stopped: %s",
            len(leftover),
            ", ".join(safe(t.name) for t in leftover),
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _leftover_threads() -> list[threading.Thread]:
    main_thread = threading.main_thread()
    return [
        t for t in threading.enumerate() if t is not main_thread and not t.daemon and t.is_alive()
    ]
