"""``taskrunner schedules``: list a store's periodic schedules, or remove one.

``schedules list`` shows each schedule with its next run, in the schedule's
time zone and in the local one; ``--json`` prints every field instead.
Importing this module needs nothing optional.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from taskrunner.cli.console import format_table

__all__ = ["add_parser"]


def add_parser(commands: Any, store_options: Callable[..., None]) -> None:
    """Add ``schedules`` to the ``taskrunner`` subcommands (``store_options`` adds --db/--dsn)."""
    p = commands.add_parser(
        "schedules",
        help="list a store's periodic schedules and their next run, or remove one",
        description="The periodic schedules that JobManager.schedule(...) declared in a "
        "store, as every worker on it sees them.",
    )
    actions = p.add_subparsers(dest="schedules_command", metavar="ACTION", parser_class=type(p))
    actions.required = True
    listing = actions.add_parser(
        "list",
        help="every schedule, with its next run",
        description="Lists the schedules by name: job type, cron expression or interval, "
        "time zone, misfire policy and next run (in the schedule's time zone).",
    )
    store_options(listing, sqlite_help="SQLite store file (must exist)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(run=_list)
    remove = actions.add_parser(
        "remove",
        help="delete a schedule (its jobs already enqueued stay)",
        description="Deletes a schedule from the store; no occurrence is enqueued after. "
        "A worker that declares it again at start-up brings it back.",
    )
    store_options(remove, sqlite_help="SQLite store file (must exist)")
    remove.add_argument("name", help="the schedule's name")
    remove.set_defaults(run=_remove)


def _every(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"every {seconds / size:g}{unit}"
    return f"every {seconds:g}s"


def _list(args: argparse.Namespace) -> int:
    from taskrunner.cli.args import EXIT_OK
    from taskrunner.cli.args import store_from_args as _open_store
    from taskrunner.jobs.schedule_times import describe
    from taskrunner.jobs.stores.schedule_store import ScheduleStore

    store = _open_store(args)
    try:
        if not isinstance(store, ScheduleStore):  # pragma: no cover - all three stores are
            raise TypeError(f"{type(store).__name__} keeps no schedules")
        schedules = store.list_schedules()
    finally:
        store.close()
    if args.json:
        out = []
        for schedule in schedules:
            data: dict[str, Any] = {
                name: getattr(schedule, name) for name in schedule.__dataclass_fields__
            }
            try:
                data["args"] = json.loads(schedule.args.decode())
            except (UnicodeDecodeError, ValueError):
                data["args"] = {"hex": schedule.args.hex()}
            data["next_run"] = describe(schedule.next_run_at, schedule.timezone)
            out.append(data)
        print(json.dumps(out, indent=2))
        return EXIT_OK
    if not schedules:
        print("no schedules")
        return EXIT_OK
    rows = [
        (
            s.name,
            s.type,
            s.cron if s.cron is not None else _every(s.every or 0),
            s.timezone,
            s.misfire,
            describe(s.next_run_at, s.timezone),
        )
        for s in schedules
    ]
    print(format_table(["NAME", "TYPE", "WHEN", "TIMEZONE", "MISFIRE", "NEXT RUN"], rows))
    return EXIT_OK


def _remove(args: argparse.Namespace) -> int:
    from taskrunner.cli.args import EXIT_FAILED, EXIT_OK
    from taskrunner.cli.args import store_from_args as _open_store
    from taskrunner.jobs.stores.schedule_store import ScheduleStore

    store = _open_store(args)
    try:
        if not isinstance(store, ScheduleStore):  # pragma: no cover
            raise TypeError(f"{type(store).__name__} keeps no schedules")
        removed = store.delete_schedule(args.name)
    finally:
        store.close()
    print(f"removed schedule {args.name!r}" if removed else f"no schedule {args.name!r}")
    return EXIT_OK if removed else EXIT_FAILED
