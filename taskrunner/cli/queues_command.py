"""``taskrunner queues list|pause NAME|resume NAME``, and the worker's ``--queues`` option.

:func:`add_parser` adds the ``queues`` command,
:func:`add_worker_option` adds ``--queues mail:10,reports:2`` to ``taskrunner
worker``.  Pausing and resuming are stored, so they act on every worker on the
store, in any process (see :class:`~taskrunner.jobs.queues.QueueControl`).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from taskrunner.cli.worker import queue_spec
from taskrunner.jobs.queues import QueueControl, QueueInfo, check_queue

__all__ = ["add_parser", "add_worker_option", "queue_spec"]


def _queue_name(text: str) -> str:
    try:
        return check_queue(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_worker_option(worker: argparse.ArgumentParser) -> None:
    """Add ``--queues NAME:LIMIT,...`` to the ``worker`` subcommand (``args.queues``)."""
    worker.add_argument(
        "--queues",
        type=queue_spec,
        default=None,
        metavar="NAME:LIMIT,...",
        help="the queues to consume and how many of each one's jobs run at once, e.g. "
        "mail:10,reports:2 (default: the 'default' queue, 64 at once)",
    )


def add_parser(commands: Any, store_options: Callable[..., None]) -> None:
    """Add ``queues`` to the ``taskrunner`` subcommands (``store_options`` adds --db/--dsn)."""
    from taskrunner.cli.args import Parser as _Parser

    queues = commands.add_parser(
        "queues",
        help="list, pause and resume a store's job queues",
        description="List a store's queues (depth, running jobs, oldest waiting job, paused), "
        "or pause and resume one for every worker on the store: a paused queue's running jobs "
        "finish, and no worker claims another of its jobs until it is resumed.",
    )
    actions = queues.add_subparsers(dest="queues_command", metavar="ACTION", parser_class=_Parser)
    actions.required = True
    listing = actions.add_parser(
        "list",
        help="every queue with pending or running jobs, or ever paused",
        description="Every queue with pending or running jobs, or that was ever paused: its "
        "depth (pending jobs, delayed ones included), running jobs, how long its oldest due "
        "job has waited, and whether it is paused.",
    )
    store_options(listing, sqlite_help="SQLite store file (must exist)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(run=_cmd_list)
    for name, verb, run in (
        ("pause", "pause", _cmd_pause),
        ("resume", "resume", _cmd_resume),
    ):
        p = actions.add_parser(
            name,
            help=f"{verb} a queue for every worker on the store",
            description=(
                "Pause a queue: its running jobs finish, no worker claims another of its "
                "jobs until it is resumed; jobs may still be submitted to it."
                if name == "pause"
                else "Resume a paused queue: workers consuming it claim its jobs again "
                "(at their next poll; at once on PostgreSQL)."
            ),
        )
        store_options(p, sqlite_help="SQLite store file (must exist)")
        p.add_argument("name", type=_queue_name, metavar="NAME", help="the queue")
        p.set_defaults(run=run)


def _control(args: argparse.Namespace) -> Any:
    """The store named by ``--db``/``--dsn``: a JobStore that is also a QueueControl."""
    from taskrunner.cli.args import CliError
    from taskrunner.cli.args import store_from_args as _open_store

    store = _open_store(args)
    if not isinstance(store, QueueControl):  # pragma: no cover - every store is one
        store.close()
        raise CliError(f"{type(store).__name__} has no queues")
    return store


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _cmd_list(args: argparse.Namespace) -> int:
    from taskrunner.cli.args import EXIT_OK
    from taskrunner.cli.console import format_table

    store = _control(args)
    try:
        listed: list[QueueInfo] = store.list_queues(time.time())
    finally:
        store.close()
    if args.json:
        print(json.dumps([info.to_dict() for info in listed], indent=2))
        return EXIT_OK
    if not listed:
        print("no queues: no pending or running jobs, and no queue was ever paused")
        return EXIT_OK
    rows = [
        (
            info.name,
            "paused" if info.paused else "active",
            info.pending,
            info.running,
            _age(info.oldest_age),
        )
        for info in listed
    ]
    print(
        format_table(["QUEUE", "STATE", "PENDING", "RUNNING", "OLDEST WAITING"], rows, right=(2, 3))
    )
    return EXIT_OK


def _set(args: argparse.Namespace, pause: bool) -> int:
    from taskrunner.cli.args import EXIT_OK

    store = _control(args)
    try:
        now = time.time()
        changed = (store.pause_queue if pause else store.resume_queue)(args.name, now)
    finally:
        store.close()
    verb = "paused" if pause else "resumed"
    if changed:
        print(f"queue {args.name} {verb}")
    else:
        print(f"queue {args.name} was already {'paused' if pause else 'running'}")
    return EXIT_OK


def _cmd_pause(args: argparse.Namespace) -> int:
    return _set(args, pause=True)


def _cmd_resume(args: argparse.Namespace) -> int:
    return _set(args, pause=False)
