"""``taskrunner jobs``: list, show, cancel, retry, purge and delete the jobs of a store."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from taskrunner.cli.console import format_table

if TYPE_CHECKING:
    from taskrunner.jobs import Job, JobStore

from taskrunner.cli.args import (
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    Parser,
    parse_duration,
    parse_since,
    positive_int,
    seconds,
    state_names,
    store_from_args,
    store_options,
    type_names,
)


def add_parser(commands: argparse._SubParsersAction[Parser]) -> None:
    """Add ``jobs`` and its actions to the top-level ``commands``."""
    jobs = commands.add_parser(
        "jobs",
        help="inspect and change jobs in a store: list, show, cancel, retry, purge, delete",
        description="Inspect and change the jobs of a store (running workers see the changes).",
    )
    jobs_commands = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", parser_class=Parser)
    jobs_commands.required = True

    def job_parser(name: str, help: str, description: str) -> argparse.ArgumentParser:
        p = jobs_commands.add_parser(name, help=help, description=description)
        store_options(p, sqlite_help="SQLite store file (must exist)")
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        return p

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--state",
            action="append",
            metavar="STATE",
            help="pending, running, succeeded, failed or cancelled "
            "(repeat or comma-separate for several)",
        )
        p.add_argument(
            "--type",
            action="append",
            metavar="TYPE",
            help="job type (repeat or comma-separate for several)",
        )
        p.add_argument(
            "--since",
            type=parse_since,
            metavar="AGE|TIME",
            help="created at or after: an age (15m, 2h, 7d) or an ISO time",
        )

    p = job_parser(
        "list",
        "list jobs, oldest first, with filters",
        "Lists jobs in creation order (oldest first).",
    )
    filters(p)
    p.add_argument("--limit", type=positive_int, default=50, help="at most this many (default 50)")
    p.set_defaults(run=_cmd_list)

    p = job_parser("show", "show one job in full", "Shows every field of one job.")
    p.add_argument("job_id", metavar="JOB_ID")
    p.set_defaults(run=_cmd_show)

    p = job_parser(
        "cancel",
        "cancel jobs (pending: at once; running: asks its worker to stop)",
        "Cancels jobs named by id, or every job matching the filters.  A pending job is "
        "cancelled at once; a running one is asked to stop (its worker sees the request at "
        "its next heartbeat).  Exit code 1 if a job had already succeeded or failed.",
    )
    p.add_argument("job_ids", nargs="*", metavar="JOB_ID")
    filters(p)
    p.add_argument(
        "--wait",
        type=seconds,
        metavar="SECONDS",
        help="wait up to this long for running jobs to stop",
    )
    p.set_defaults(run=_cmd_cancel)

    p = job_parser(
        "retry",
        "run failed or cancelled jobs again",
        "Makes failed or cancelled jobs pending again, with their attempts reset.  Exit code 1 "
        "if a job is in another state.",
    )
    p.add_argument("job_ids", nargs="*", metavar="JOB_ID")
    filters(p)
    p.add_argument(
        "--delay",
        type=parse_duration,
        default=0.0,
        metavar="DURATION",
        help="run them after this long (default: now)",
    )
    p.set_defaults(run=_cmd_retry)

    p = job_parser(
        "purge",
        "delete finished jobs older than an age",
        "Deletes succeeded, failed and cancelled jobs that finished more than AGE ago.",
    )
    p.add_argument(
        "--older-than",
        type=parse_duration,
        required=True,
        metavar="AGE",
        help="e.g. 7d, 12h, 30m; 0 purges every finished job",
    )
    p.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    p.set_defaults(run=_cmd_purge)

    p = job_parser(
        "delete",
        "delete jobs by id, in any state but running",
        "Deletes the named jobs from the store, whatever their state, except a running job "
        "(cancel it first).  Exit code 1 if a job is unknown or running (the others are "
        "still deleted).",
    )
    p.add_argument("job_ids", nargs="+", metavar="JOB_ID")
    p.set_defaults(run=_cmd_delete)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def _payload(data: bytes | None) -> Any:
    """A stored payload for display: its JSON value if it is JSON, else a hex string."""
    if data is None:
        return None
    try:
        return json.loads(data.decode())
    except (UnicodeDecodeError, ValueError):
        return {"hex": data.hex()}


def _job_json(job: Job) -> dict[str, Any]:
    data: dict[str, Any] = job.to_dict()
    data["args"] = _payload(job.args)
    data["result"] = _payload(job.result)
    return data


def _short(text: str | None, width: int) -> str:
    if not text:
        return "-"
    line = text.strip().splitlines()[-1] if text.strip() else ""
    return line if len(line) <= width else line[: width - 3] + "..."


def _print_jobs(jobs: Sequence[Job]) -> None:
    rows = [
        (
            j.id,
            j.type,
            j.queue,
            j.state.value + (" (cancel requested)" if j.cancel_requested else ""),
            f"{j.attempt}/{j.max_attempts}",
            j.priority,
            _when(j.created_at),
            _when(j.finished_at),
            _short(j.last_error, 40),
        )
        for j in jobs
    ]
    headers = [
        "ID",
        "TYPE",
        "QUEUE",
        "STATE",
        "ATTEMPT",
        "PRI",
        "CREATED",
        "FINISHED",
        "LAST ERROR",
    ]
    print(format_table(headers, rows, right=(4, 5)))


def _select(store: JobStore, args: argparse.Namespace, limit: int | None) -> Iterator[Job]:
    """Jobs matching the filter options, oldest first, at most ``limit``."""
    states = state_names(args.state)
    types = type_names(args.type)
    cursor: str | None = None
    left = limit
    while left is None or left > 0:
        size = 1000 if left is None else min(1000, left)
        page = store.list_jobs(
            states=states, types=types, since=args.since, limit=size, after=cursor
        )
        yield from page.jobs
        if left is not None:
            left -= len(page.jobs)
        cursor = page.next_cursor
        if cursor is None:
            return


def _targets(store: JobStore, args: argparse.Namespace) -> list[Job]:
    """The jobs an action applies to: by id (each must exist) or by filters (not both)."""
    from taskrunner.jobs import UnknownJobError

    by_filter = args.state or args.type or args.since is not None
    if args.job_ids and by_filter:
        raise CliError("give job ids or filters (--state, --type, --since), not both")
    if not args.job_ids and not by_filter:
        raise CliError("name the jobs: job ids, or filters (--state, --type, --since)")
    if by_filter:
        return list(_select(store, args, None))
    jobs = []
    for job_id in args.job_ids:
        try:
            jobs.append(store.get(job_id))
        except UnknownJobError:
            raise CliError(f"unknown job {job_id!r}") from None
    return jobs


def _cmd_list(args: argparse.Namespace) -> int:
    states = state_names(args.state)  # checked before the store is opened
    store = store_from_args(args)
    try:
        jobs = list(_select(store, args, args.limit))
        total = store.count_jobs(states=states, types=type_names(args.type), since=args.since)
    finally:
        store.close()
    if args.json:
        print(json.dumps([_job_json(j) for j in jobs], indent=2))
        return EXIT_OK
    if jobs:
        _print_jobs(jobs)
    if total > len(jobs):
        print(f"({len(jobs)} of {total} matching jobs shown; raise --limit or narrow the filters)")
    elif not jobs:
        print("no matching jobs")
    return EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    from taskrunner.jobs import UnknownJobError

    store = store_from_args(args)
    try:
        job = store.get(args.job_id)
    except UnknownJobError:
        raise CliError(f"unknown job {args.job_id!r}") from None
    finally:
        store.close()
    data = _job_json(job)
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    traceback = data.pop("error_traceback")
    for key, value in data.items():
        if key in ("created_at", "updated_at", "run_at", "finished_at", "lease_expires_at"):
            shown = "-" if value is None else f"{_when(value)}  ({value:.3f})"
        elif key in ("args", "result", "trace_context"):
            shown = "-" if value is None else json.dumps(value)
        else:
            shown = "-" if value is None else str(value)
        print(f"{key + ':':<18}{shown}")
    if traceback:
        print("traceback:")
        print(traceback.rstrip())
    return EXIT_OK


def _cmd_cancel(args: argparse.Namespace) -> int:
    from taskrunner.jobs import JobState

    store = store_from_args(args)
    results: list[dict[str, Any]] = []
    failed = False
    try:
        for job in _targets(store, args):
            if job.is_final:
                after = job
            else:
                after = store.cancel(job.id, time.time(), "cancelled by taskrunner jobs cancel")
            results.append({"id": job.id, "before": job.state.value, "job": after})
        if args.wait:
            end = time.monotonic() + args.wait
            for item in results:
                while not item["job"].is_final and time.monotonic() < end:
                    time.sleep(0.05)  # polling the worker process's progress
                    item["job"] = store.get(item["id"])
    finally:
        store.close()
    lines = []
    for item in results:
        job = item["job"]
        if job.state is JobState.CANCELLED:
            outcome = "cancelled" if item["before"] != "cancelled" else "already cancelled"
        elif job.state is JobState.RUNNING:
            outcome = f"cancel requested; it stops at its worker's next check ({job.owner})"
            failed = failed or bool(args.wait)  # waited, and it did not stop in time
        elif job.state is JobState.SUCCEEDED and job.cancel_requested:
            outcome = "not cancelled: it succeeded after the request (its handler did not stop)"
            failed = True
        else:
            outcome = f"not cancelled: it already {job.state.value}"
            failed = True
        item["outcome"] = outcome
        lines.append((job.id, job.type, job.state.value, outcome))
    if args.json:
        print(
            json.dumps(
                [
                    {"id": i["id"], "state": i["job"].state.value, "outcome": i["outcome"]}
                    for i in results
                ],
                indent=2,
            )
        )
    elif lines:
        print(format_table(["ID", "TYPE", "STATE", "OUTCOME"], lines))
    else:
        print("no matching jobs")
    return EXIT_FAILED if failed else EXIT_OK


def _cmd_retry(args: argparse.Namespace) -> int:
    from taskrunner.jobs import DuplicateJobError, IllegalTransitionError

    store = store_from_args(args)
    lines = []
    failed = False
    try:
        for job in _targets(store, args):
            now = time.time()
            try:
                after = store.retry(job.id, now, now + args.delay)
            except IllegalTransitionError:
                outcome = f"not retried: it is {job.state.value} (only failed or cancelled can be)"
                after = job
                failed = True
            except DuplicateJobError as exc:
                outcome = f"not retried: {exc}"
                after = job
                failed = True
            else:
                outcome = "pending again" + (
                    f", due at {_when(after.run_at)}" if args.delay else ""
                )
            lines.append((job.id, job.type, after.state.value, outcome))
    finally:
        store.close()
    if args.json:
        print(json.dumps([{"id": i, "state": s, "outcome": o} for i, _, s, o in lines], indent=2))
    elif lines:
        print(format_table(["ID", "TYPE", "STATE", "OUTCOME"], lines))
    else:
        print("no matching jobs")
    return EXIT_FAILED if failed else EXIT_OK


def _cmd_purge(args: argparse.Namespace) -> int:
    from taskrunner.jobs import FINAL_STATES

    store = store_from_args(args)
    cutoff = time.time() - args.older_than
    try:
        if args.dry_run:
            count = 0
            cursor: str | None = None
            while True:
                page = store.list_jobs(states=FINAL_STATES, limit=1000, after=cursor)
                count += sum(1 for j in page.jobs if (j.finished_at or 0.0) < cutoff)
                cursor = page.next_cursor
                if cursor is None:
                    break
        else:
            count = store.purge(cutoff)
    finally:
        store.close()
    if args.json:
        print(
            json.dumps(
                {
                    "purged": 0 if args.dry_run else count,
                    "matching": count,
                    "finished_before": cutoff,
                }
            )
        )
    elif args.dry_run:
        print(f"{count} finished job(s) older than {_when(cutoff)} would be purged")
    else:
        print(f"purged {count} finished job(s) older than {_when(cutoff)}")
    return EXIT_OK


def _cmd_delete(args: argparse.Namespace) -> int:
    from taskrunner.jobs import JobRunningError, UnknownJobError

    store = store_from_args(args)
    lines = []
    failed = False
    try:
        for job_id in args.job_ids:
            try:
                job = store.delete(job_id)
            except UnknownJobError:
                lines.append((job_id, "-", "-", "not deleted: unknown job"))
                failed = True
            except JobRunningError:
                job = store.get(job_id)
                lines.append((job_id, job.type, job.state.value, "not deleted: it is running"))
                failed = True
            else:
                lines.append((job_id, job.type, job.state.value, "deleted"))
    finally:
        store.close()
    if args.json:
        print(json.dumps([{"id": i, "state": s, "outcome": o} for i, _, s, o in lines], indent=2))
    else:
        print(format_table(["ID", "TYPE", "STATE", "OUTCOME"], lines))
    return EXIT_FAILED if failed else EXIT_OK
