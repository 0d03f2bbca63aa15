"""The ``taskrunner`` command line: demo, worker, jobs, bench, db, dashboard.

Exit codes
----------
* 0: done as asked.
* 1: the command ran but the outcome is a failure: the demo found a job lost
  or run twice, a job could not be cancelled or retried in its state, the
  store failed, a benchmark raised, a worker was stopped forcefully.
* 2: bad input: a usage error, a database file that does not exist, an
  unknown job id, a bad state name or duration, an app that cannot be
  imported, a missing optional dependency.  One line on stderr says which.
* 130: interrupted (Ctrl-C) outside a worker.

Every command and subcommand has ``--help``.  Commands that print data print
a plain table by default and JSON with ``--json`` (for scripts).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from taskrunner._console import format_table

if TYPE_CHECKING:
    from taskrunner.jobs import Job, JobStore

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "CliError", "build_parser", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A one-line error for the user; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------- argument types


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhdw]?)\s*$")


def parse_duration(text: str) -> float:
    """Seconds from ``"90"``, ``"90s"``, ``"15m"``, ``"2h"``, ``"7d"`` or ``"1w"``."""
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r} (use a number with s, m, h, d or w, like 15m or 7d)"
        )
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_since(text: str, now: float | None = None) -> float:
    """Epoch seconds from an age (``"15m"``: that long ago) or an ISO 8601 time."""
    now = time.time() if now is None else now
    if _DURATION.match(text):
        return now - parse_duration(text)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r} (use an age like 15m or 2d, or an ISO time like "
            "2024-05-01T12:00)"
        ) from None
    return moment.timestamp()  # a naive time is local time


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text}")
    return value


def _states(values: Sequence[str] | None) -> list[str] | None:
    """``--state`` values (repeatable, comma-separated) checked against JobState."""
    if not values:
        return None
    from taskrunner.jobs import JobState

    names = {s.value for s in JobState}
    out: list[str] = []
    for value in values:
        for name in filter(None, (v.strip().lower() for v in value.split(","))):
            if name not in names:
                raise CliError(
                    f"unknown job state {name!r} (expected one of {', '.join(sorted(names))})"
                )
            out.append(name)
    return out


def _types(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    return [t for value in values for t in (v.strip() for v in value.split(",")) if t]


# ---------------------------------------------------------------- the parser


def build_parser() -> argparse.ArgumentParser:
    """The ``taskrunner`` argument parser (every command, every option)."""
    from taskrunner import __version__

    parser = _Parser(
        prog="taskrunner",
        description="A threading runtime with a C queue core, and durable jobs on SQLite.",
        epilog="Start with `taskrunner demo`; every command has --help.  Exit codes: 0 done, "
        "1 failed, 2 bad input.",
    )
    parser.add_argument("--version", action="version", version=f"taskrunner {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    demo = commands.add_parser(
        "demo",
        help="a realistic run on SQLite that checks no job is lost or run twice",
        description="Runs the runtime (priorities, a sequence, a bounded runner, delayed and "
        "repeating tasks) and N durable jobs on worker processes, kills one with SIGKILL "
        "midway, and checks that no job was lost or run twice.  Exit code 0 only then.",
    )
    demo.add_argument(
        "--db", type=Path, metavar="PATH", help="SQLite file to create (default: a temporary one)"
    )
    demo.add_argument(
        "--jobs",
        type=_positive_int,
        default=400,
        metavar="N",
        help="how many jobs (default 400; at least 10)",
    )
    demo.add_argument("--overwrite", action="store_true", help="replace an existing --db file")
    demo.add_argument(
        "--plain",
        action="store_true",
        help="no progress bars: plain lines (the default when not a terminal)",
    )
    demo.add_argument(
        "--timeout",
        type=_seconds,
        default=120.0,
        metavar="SECONDS",
        help="give up waiting for the jobs after this long (default 120)",
    )
    demo.add_argument("--seed", type=int, default=7, help="seed of the workload (default 7)")
    demo.set_defaults(run=_cmd_demo)

    worker = commands.add_parser(
        "worker",
        help="run a JobManager worker process on a store",
        description="Runs jobs from the store until SIGINT or SIGTERM.  The first signal "
        "stops gracefully: no new claims, running jobs get --grace seconds to finish, the "
        "rest are left to be recovered after their lease.  A second signal stops at once.  "
        "Exit codes: 0 graceful stop, 1 error or forced stop, 2 bad arguments.",
    )
    _store_options(worker, sqlite_help="SQLite store file (created if missing)")
    worker.add_argument(
        "--app",
        required=True,
        metavar="MODULE:OBJECT",
        help="a callable taking the JobManager and registering handlers, e.g. taskrunner.demo:app",
    )
    worker.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="CPU worker threads (default: the CPU count)",
    )
    worker.add_argument(
        "--lease",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="job lease; a dead worker's jobs come back after it (default 10)",
    )
    worker.add_argument(
        "--poll",
        type=_seconds,
        default=0.5,
        metavar="SECONDS",
        help="how often to look for jobs others submitted (default 0.5)",
    )
    worker.add_argument(
        "--grace",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="how long a graceful stop waits for running jobs (default 30)",
    )
    worker.add_argument(
        "--synchronous",
        choices=["FULL", "NORMAL"],
        default="FULL",
        help="SQLite durability: FULL (the default) acks after fsync",
    )
    worker.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    worker.set_defaults(run=_cmd_worker)

    jobs = commands.add_parser(
        "jobs",
        help="inspect and change jobs in a store: list, show, cancel, retry, purge, delete",
        description="Inspect and change the jobs of a store (running workers see the changes).",
    )
    jobs_commands = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", parser_class=_Parser)
    jobs_commands.required = True

    def job_parser(name: str, help: str, description: str) -> argparse.ArgumentParser:
        p = jobs_commands.add_parser(name, help=help, description=description)
        _store_options(p, sqlite_help="SQLite store file (must exist)")
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
    p.add_argument("--limit", type=_positive_int, default=50, help="at most this many (default 50)")
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
        type=_seconds,
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

    bench = commands.add_parser(
        "bench",
        help="run the benchmarks of bench/ and print one table of ratios",
        description="Runs every bench/*.py script that defines report(quick) and prints how "
        "taskrunner compares with its standard-library peers (and Huey), as ratios measured "
        "in the same run.  Needs a source checkout (the bench/ folder).",
    )
    bench.add_argument("--quick", action="store_true", help="small sizes, one round")
    bench.add_argument(
        "--plot",
        type=Path,
        metavar="FILE.png",
        help="also draw the ratios as a bar chart (needs matplotlib)",
    )
    bench.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only scripts whose name contains NAME (repeatable)",
    )
    bench.add_argument(
        "--bench-dir", type=Path, metavar="DIR", help="the bench/ folder (default: found)"
    )
    bench.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench.add_argument("--plain", action="store_true", help="no progress bars")
    bench.set_defaults(run=_cmd_bench)

    db = commands.add_parser(
        "db", help="store administration: migrate", description="Store administration."
    )
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", parser_class=_Parser)
    db_commands.required = True
    p = db_commands.add_parser(
        "migrate",
        help="create or upgrade a store's schema",
        description="Brings a store's schema to this version: --db for a SQLite file "
        "(created if missing), --dsn for PostgreSQL (needs psycopg).",
    )
    _store_options(p, sqlite_help="SQLite store file (created if missing)")
    p.set_defaults(run=_cmd_migrate)
    from taskrunner.dashboard import command as dashboard_command

    dashboard_command.add_parser(commands, _store_options)
    from taskrunner.jobs import schedule_command

    schedule_command.add_parser(commands, _store_options)
    return parser


def _store_options(p: argparse.ArgumentParser, *, sqlite_help: str) -> None:
    """``--db PATH`` or ``--dsn DSN`` (exactly one), and ``--schema`` for PostgreSQL."""
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", metavar="PATH", help=sqlite_help)
    where.add_argument("--dsn", help="PostgreSQL connection string (needs psycopg)")
    p.add_argument("--schema", help="PostgreSQL schema (default: taskrunner)")


# ---------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script's entry point)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except CliError as exc:
        print(f"taskrunner: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("taskrunner: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`taskrunner jobs list | head`): not a failure of
        # the command.  Point stdout at /dev/null so the exit flush is quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except argparse.ArgumentTypeError as exc:
        print(f"taskrunner: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        from taskrunner.jobs import StoreError

        if isinstance(exc, StoreError):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            print(f"taskrunner: error: the store failed: {first}", file=sys.stderr)
            return EXIT_FAILED
        raise


# ---------------------------------------------------------------- demo


def _cmd_demo(args: argparse.Namespace) -> int:
    from taskrunner.demo import DemoError, DemoOptions, run_demo

    options = DemoOptions(
        db=args.db,
        jobs=args.jobs,
        overwrite=args.overwrite,
        plain=args.plain,
        timeout=args.timeout,
        seed=args.seed,
    )
    try:
        return run_demo(options)
    except DemoError as exc:
        raise CliError(str(exc)) from None


# ---------------------------------------------------------------- worker


def _cmd_worker(args: argparse.Namespace) -> int:
    from taskrunner.jobs import JobManager
    from taskrunner.worker import load_app, run_worker

    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("taskrunner.worker").setLevel(args.log_level)
    if args.log_level == "DEBUG":
        logging.getLogger("taskrunner").setLevel(logging.DEBUG)
    try:
        register = load_app(args.app)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.db is not None and not Path(args.db).parent.is_dir():
        raise CliError(f"no such directory for the database: {Path(args.db).parent}")
    where = args.db if args.db is not None else "PostgreSQL"

    def app(manager: JobManager) -> None:
        register(manager)
        types = ", ".join(manager.job_types) or "none"
        print(
            f"taskrunner worker (pid {os.getpid()}) on {where}: handlers {types}; "
            "SIGINT/SIGTERM stops gracefully, a second one at once",
            file=sys.stderr,
            flush=True,
        )

    try:
        return run_worker(
            args.db,
            app,
            dsn=args.dsn,
            schema=args.schema,
            workers=args.workers,
            lease_seconds=args.lease,
            poll_interval=args.poll,
            grace=args.grace,
            synchronous=args.synchronous,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    except ImportError as exc:
        raise CliError(_import_problem(exc)) from None


def _import_problem(exc: ImportError) -> str:
    if (exc.name or "").startswith("psycopg"):
        return "PostgreSQL support needs psycopg: pip install 'taskrunner[postgres]'"
    return f"PostgreSQL support is not available: {exc}"


# ---------------------------------------------------------------- jobs


def _open_store(args: argparse.Namespace) -> JobStore:
    """The store named by ``--db`` (the file must exist: an unknown path is a typo, not a
    wish) or ``--dsn``."""
    from taskrunner.worker import open_store

    if args.db is not None and not Path(args.db).is_file():
        raise CliError(f"no such database file: {args.db}")
    if args.dsn is not None:
        # A one-shot command: its one-line error says why the pool could not connect.
        logging.getLogger("psycopg").setLevel(logging.CRITICAL)
    try:
        return open_store(args.db, dsn=args.dsn, schema=args.schema)
    except ImportError as exc:
        raise CliError(_import_problem(exc)) from None
    except ValueError as exc:
        raise CliError(str(exc)) from None


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
            j.state.value + (" (cancel requested)" if j.cancel_requested else ""),
            f"{j.attempt}/{j.max_attempts}",
            j.priority,
            _when(j.created_at),
            _when(j.finished_at),
            _short(j.last_error, 40),
        )
        for j in jobs
    ]
    headers = ["ID", "TYPE", "STATE", "ATTEMPT", "PRI", "CREATED", "FINISHED", "LAST ERROR"]
    print(format_table(headers, rows, right=(3, 4)))


def _select(store: JobStore, args: argparse.Namespace, limit: int | None) -> Iterator[Job]:
    """Jobs matching the filter options, oldest first, at most ``limit``."""
    states = _states(args.state)
    types = _types(args.type)
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
    states = _states(args.state)  # checked before the store is opened
    store = _open_store(args)
    try:
        jobs = list(_select(store, args, args.limit))
        total = store.count_jobs(states=states, types=_types(args.type), since=args.since)
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

    store = _open_store(args)
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

    store = _open_store(args)
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

    store = _open_store(args)
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

    store = _open_store(args)
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

    store = _open_store(args)
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


# ---------------------------------------------------------------- bench


def _cmd_bench(args: argparse.Namespace) -> int:
    from taskrunner import bench_report

    try:
        return bench_report.run(
            quick=args.quick,
            plot=args.plot,
            only=args.only,
            bench_dir=args.bench_dir,
            as_json=args.json,
            plain=args.plain,
        )
    except bench_report.BenchSetupError as exc:
        raise CliError(str(exc)) from None


# ---------------------------------------------------------------- db


def _cmd_migrate(args: argparse.Namespace) -> int:
    if args.db is not None:
        from taskrunner.jobs import SQLiteJobStore

        db = Path(args.db)
        if args.schema is not None:
            raise CliError("--schema applies to a PostgreSQL store (--dsn) only")
        if not db.parent.is_dir():
            raise CliError(f"no such directory for the database: {db.parent}")
        existed = db.exists()
        store = SQLiteJobStore(db)  # migrations run on open
        try:
            version = store.pragmas()["user_version"]
        finally:
            store.close()
        print(f"{db}: {'is at' if existed else 'created at'} schema version {version}")
        return EXIT_OK
    try:
        from taskrunner.jobs import postgres_store
    except ImportError as exc:
        raise CliError(_import_problem(exc)) from None
    try:
        if args.schema is None:
            version = postgres_store.migrate(args.dsn)
        else:
            version = postgres_store.migrate(args.dsn, schema=args.schema)
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc)) from None
    except Exception as exc:
        raise CliError(f"migration failed: {_one_line(exc)}", EXIT_FAILED) from None
    print(f"PostgreSQL schema {args.schema or postgres_store.DEFAULT_SCHEMA!r}: version {version}")
    return EXIT_OK


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
