"""``gatorapp dead``: list, show, requeue and purge dead letters."""

from __future__ import annotations

import argparse
import sys

from ..app import App
from ..backends import DeadLetter
from ..backends.protocols import dead_letters
from ..views import attempts, describe
from .common import UsageError, cut, no_store, queue_list, safe, when


def _ls_line(app: App, q: str, letter: DeadLetter) -> str:
    try:
        task = describe(app, letter.data)
        name = task.name if task else "?"
        error = letter.error.strip()
        first = error.splitlines()[-1] if error else ""
        fields = [q, letter.task_id, name, letter.reason, when(letter.failed_at), cut(first)]
        return "\t".join(safe(f) for f in fields)
    except Exception as exc:  # a letter written by hand: say so, list the rest
        return f"{safe(q)}\t{safe(letter.task_id)}\t(unreadable dead letter: {safe(exc)})"


def _show_letter(app: App, q: str, letter: DeadLetter) -> None:
    task = describe(app, letter.data)
    print(f"task id:   {safe(letter.task_id)}\nqueue:     {safe(q)}")
    print(f"reason:    {safe(letter.reason)}\nfailed at: {when(letter.failed_at)}")
    if task is not None:
        print(
            f"task:      {safe(task.name)}\nargs:      {task.func_args!r}\n"
            f"kwargs:    {task.func_kwargs!r}\nattempts:  {attempts(task, letter.reason)}"
        )
    else:
        print(f"payload:   {len(letter.data)} bytes, not decodable")
    print(f"error:\n{safe(letter.error, keep=chr(10))}")


def _no_letter(task_id: str, queues: list[str]) -> int:
    listed = ", ".join(safe(q) for q in queues)
    print(f"gatorapp: no dead letter {safe(task_id)!r} in {listed}", file=sys.stderr)
    return 1


def cmd_dead(app: App, args: argparse.Namespace) -> int:
    backend = dead_letters(app.backend)
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
    if no_store(app):
        return 1
    queues = queue_list(app, args.queues)
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
        print(f"purged {purged} dead letter(s) of task {safe(args.task_id)}")
        return 0
    if not args.yes:
        listed = ", ".join(safe(q) for q in queues)
        if not sys.stdin.isatty():
            raise UsageError(f"dead purge deletes every dead letter of {listed}: add --yes")
        answer = input(f"delete every dead letter of {listed} for good? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    purged = sum(backend.dead_purge(q) for q in queues)
    print(f"purged {purged} dead letter(s)")
    return 0
