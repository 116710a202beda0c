"""``gatorapp`` command line: worker, status, dead.

    gatorapp worker -A myproj.app [-Q emails,images] [-p N] [-c N] [--max-tasks N] [--burst]
                    [--prefetch N] [--worker-class pkg.mod:Cls]
                    [-l LEVEL] [--log-format text|json] [--logfile PATH]
    gatorapp status -A myproj.app [-Q ...]
    gatorapp dead   -A myproj.app [-Q queue] ls | show ID | requeue ID | requeue --all
                    | purge [ID] [--yes]

``-A`` takes ``pkg.mod`` (its attribute ``app``) or ``pkg.mod:attr``; it may
also come before the subcommand, or from ``$GATORAPP_APP``. Bad flags and
bad paths print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import datetime as dt
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
from ..backends import DeadLetter
from ..envelope import Task
from ..errors import BackendError, GatorError
from ..worker import Worker
from ..worker.signals import EarlySignals
from . import logs
from .supervisor import LIFELINE_ENV, Supervisor, watch_lifeline

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class UsageError(Exception):
    """One line for the user, exit status 2. ``cause``: an exception whose
    traceback is logged at DEBUG (a failed import of the user's module)."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


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
    w.add_argument("--max-tasks", type=_positive, default=None, help="exit after N attempts")
    w.add_argument("--burst", action="store_true", help="exit once the queues have nothing ready")
    w.add_argument(
        "--prefetch",
        type=_non_negative,
        default=None,
        help="tasks reserved ahead of free threads (default: adapts to task length)",
    )
    w.add_argument("--worker-class", default=None, help="pkg.mod:WorkerSubclass")

    sub.add_parser("status", parents=[common], help="ready / delayed / running / dead per queue")

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


def _queue_list(app: App, chosen: list[str] | None) -> list[str]:
    if chosen:
        _warn_unknown(app, chosen)
        return chosen
    return list(dict.fromkeys(app.queues() + app.backend.known_queues()))


def _warn_unknown(app: App, chosen: list[str]) -> None:
    """A -Q name the app does not know and the backend holds nothing for is
    most likely a typo: say so, with the names that do exist."""
    own = app.queues()
    unknown = [q for q in chosen if q not in own]
    if not unknown:
        return
    known = list(dict.fromkeys(own + app.backend.known_queues()))
    for q in unknown:
        if q not in known:
            print(
                f"gatorapp: warning: queue {_safe(q)!r} is not one of this app's queues and "
                f"holds nothing; known queues: {', '.join(_safe(k) for k in known)}",
                file=sys.stderr,
            )


def _child_argv(args: argparse.Namespace, app_path: str) -> list[str]:
    """The command line of one worker process under a supervisor: the same
    worker, without -p."""
    argv = ["worker", "-A", app_path, "-c", str(args.concurrency)]
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
        _warn_unknown(app, args.queues)
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
    worker = cls(
        app,
        queues=args.queues,
        max_tasks=args.max_tasks,
        concurrency=args.concurrency,
        burst=args.burst,
        prefetch=args.prefetch,
    )
    if early is not None:
        early.forward(worker.handle_signal)
    watch_lifeline(worker.stop)  # (under a supervisor only)
    return worker.run_forever()


def _no_store(app: App) -> bool:
    """Say so when there is nothing to look at: looking must not create it."""
    why = app.backend.missing_store()
    if why:
        print(f"gatorapp: {why}; backend {app.backend.describe()}", file=sys.stderr)
    return bool(why)


def cmd_status(app: App, args: argparse.Namespace) -> int:
    if _no_store(app):
        return 1
    rows = [(q, app.backend.stats(q)) for q in _queue_list(app, args.queues)]
    print(f"backend: {app.backend.describe()}", file=sys.stderr)  # (it answered)
    own = set(app.queues())
    others = [_safe(q) for q, _ in rows if q not in own]
    if others:
        print(
            f"(not consumed by a worker of this app by default, no task of it uses them: "
            f"{', '.join(others)})",
            file=sys.stderr,
        )
    width = max([5, *(len(_safe(q)) for q, _ in rows)])
    print(f"{'queue':<{width}}  {'ready':>7}  {'delayed':>7}  {'running':>7}  {'dead':>7}")
    unknown = app.backend.unsupported.get("stats_detail")
    for q, s in rows:
        # A count the backend cannot know is shown as "-", never as a false 0.
        delayed, running = ("-", "-") if unknown else (s.delayed, s.running)
        print(f"{_safe(q):<{width}}  {s.ready:>7}  {delayed:>7}  {running:>7}  {s.dead:>7}")
    why = app.backend.unsupported.get("exact_stats")
    if why:
        print(f"(approximate counts: {why})")
    if unknown:
        print(f"(ready counts delayed tasks too; {unknown})")
    return 0


def _describe(app: App, data: bytes) -> Task | None:
    try:
        return app.task_class.deserialize(app.registry.unseal(data))
    except Exception:
        return None


# The stored payload is the one the last attempt started from, so these reasons
# mean one more attempt ran than the payload records.
_AFTER_AN_ATTEMPT = {"retries_exhausted", "not_retryable", "attempt_limit", "crashed"}


def _attempts(task: Task, reason: str) -> int:
    return task.attempt + (1 if reason in _AFTER_AN_ATTEMPT else 0)


def _when(ts: float) -> str:
    try:
        return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def _safe(value: object, keep: str = "") -> str:
    """Text from the queue, fit for a terminal: control characters (a forged
    line break, an escape sequence) are shown escaped, not obeyed. ``keep``
    names the ones to leave (the line breaks of a traceback)."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else repr(c)[1:-1] for c in text)


def _cut(text: str, most: int = 120) -> str:
    """``text`` cut at a word, with a marker, when longer than ``most``."""
    if len(text) <= most:
        return text
    head = text[: most - 1]
    space = head.rfind(" ")
    return (head[:space] if space > most // 2 else head).rstrip() + "…"


def _ls_line(app: App, q: str, letter: DeadLetter) -> str:
    try:
        task = _describe(app, letter.data)
        name = task.name if task else "?"
        error = letter.error.strip()
        first = error.splitlines()[-1] if error else ""
        fields = [q, letter.task_id, name, letter.reason, _when(letter.failed_at), _cut(first)]
        return "\t".join(_safe(f) for f in fields)
    except Exception as exc:  # a letter written by hand: say so, list the rest
        return f"{_safe(q)}\t{_safe(letter.task_id)}\t(unreadable dead letter: {_safe(exc)})"


def _show_letter(app: App, q: str, letter: DeadLetter) -> None:
    task = _describe(app, letter.data)
    print(f"task id:   {_safe(letter.task_id)}\nqueue:     {_safe(q)}")
    print(f"reason:    {_safe(letter.reason)}\nfailed at: {_when(letter.failed_at)}")
    if task is not None:
        print(
            f"task:      {_safe(task.name)}\nargs:      {task.func_args!r}\n"
            f"kwargs:    {task.func_kwargs!r}\nattempts:  {_attempts(task, letter.reason)}"
        )
    else:
        print(f"payload:   {len(letter.data)} bytes, not decodable")
    print(f"error:\n{_safe(letter.error, keep=chr(10))}")


def _no_letter(task_id: str, queues: list[str]) -> int:
    listed = ", ".join(_safe(q) for q in queues)
    print(f"gatorapp: no dead letter {_safe(task_id)!r} in {listed}", file=sys.stderr)
    return 1


def cmd_dead(app: App, args: argparse.Namespace) -> int:
    backend = app.backend
    if args.action == "ls" and (args.task_id or args.all):
        raise UsageError("dead ls takes no task id or --all (it lists whole queues)")
    if args.action == "purge" and args.all:
        raise UsageError("dead purge takes a task id or nothing (every letter), not --all")
    if args.action == "show" and args.all:
        raise UsageError("dead show takes one task id, not --all")
    if args.action == "requeue" and args.all and args.task_id:
        raise UsageError("dead requeue takes a task id or --all, not both")
    if args.action in ("show", "requeue") and not args.all and not args.task_id:
        raise UsageError(
            f"dead {args.action} needs a task id"
            + (" (or --all)" if args.action == "requeue" else "")
        )
    if _no_store(app):
        return 1
    queues = _queue_list(app, args.queues)
    if args.action == "ls":
        count = 0
        if sys.stdout.isatty():  # (piped, the lines stay plain data)
            print("queue\ttask id\ttask\treason\tfailed at\terror")
        for q in queues:
            for letter in backend.dead_list(q):
                print(_ls_line(app, q, letter))
                count += 1
        print(f"{count} dead letter(s)", file=sys.stderr)
        return 0
    if args.action == "show":
        for q in queues:
            if backend.dead_get(q, args.task_id) is None:
                continue
            # Every letter of the id, newest first (requeue takes the newest).
            letters = [d for d in backend.dead_list(q, 10**9) if d.task_id == args.task_id]
            letters.reverse()
            for n, letter in enumerate(letters, 1):
                if len(letters) > 1:
                    print(f"{'' if n == 1 else chr(10)}-- letter {n} of {len(letters)}")
                _show_letter(app, q, letter)
            return 0
        return _no_letter(args.task_id, queues)
    if args.action == "requeue":
        # The letters are read once and requeued as read (no second lookup by id).
        if args.all:
            letters = [letter for q in queues for letter in backend.dead_list(q, 10**9)]
        else:
            looked = (backend.dead_get(q, args.task_id) for q in queues)
            letters = [letter for letter in looked if letter is not None]
            if not letters:
                return _no_letter(args.task_id, queues)
        done = sum(1 for letter in letters if app.requeue_letter(letter))
        print(f"requeued {done} task(s)")
        return 0 if done == len(letters) else 1
    if args.task_id is not None:  # one task's letters: named, so no question
        purged = sum(backend.dead_purge(q, args.task_id) for q in queues)
        if not purged:
            return _no_letter(args.task_id, queues)
        print(f"purged {purged} dead letter(s) of task {_safe(args.task_id)}")
        return 0
    if not args.yes:
        listed = ", ".join(_safe(q) for q in queues)
        if not sys.stdin.isatty():
            raise UsageError(f"dead purge deletes every dead letter of {listed}: add --yes")
        answer = input(f"delete every dead letter of {listed} for good? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    purged = sum(backend.dead_purge(q) for q in queues)
    print(f"purged {purged} dead letter(s)")
    return 0


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
    command = {"status": cmd_status, "dead": cmd_dead}[args.command]
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
            ", ".join(_safe(t.name) for t in leftover),
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
