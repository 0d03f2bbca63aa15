"""The ``taskrunner`` command line: demo, worker, jobs, bench, db, dashboard, queues.

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
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from taskrunner.cli import jobs_command
from taskrunner.cli.args import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Parser,
    import_problem,
    one_line,
    positive_int,
    seconds,
    store_options,
)

if TYPE_CHECKING:
    pass

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "CliError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``taskrunner`` argument parser (every command, every option)."""
    from taskrunner.cli import queues_command, schedules_command
    from taskrunner.version import __version__

    parser = Parser(
        prog="taskrunner",
        description="A threading runtime with a C queue core, and durable jobs on SQLite.",
        epilog="Start with `taskrunner demo`; every command has --help.  Exit codes: 0 done, "
        "1 failed, 2 bad input.",
    )
    parser.add_argument("--version", action="version", version=f"taskrunner {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
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
        type=positive_int,
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
        type=seconds,
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
    store_options(worker, sqlite_help="SQLite store file (created if missing)")
    worker.add_argument(
        "--app",
        required=True,
        metavar="MODULE:OBJECT",
        help=(
            "a callable taking the JobManager and registering handlers, "
            "e.g. taskrunner.cli.demo:app"
        ),
    )
    worker.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="CPU worker threads (default: the CPU count)",
    )
    worker.add_argument(
        "--lease",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="job lease; a dead worker's jobs come back after it (default 10)",
    )
    worker.add_argument(
        "--poll",
        type=seconds,
        default=0.5,
        metavar="SECONDS",
        help="how often to look for jobs others submitted (default 0.5)",
    )
    worker.add_argument(
        "--grace",
        type=seconds,
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
    queues_command.add_worker_option(worker)
    worker.set_defaults(run=_cmd_worker)

    jobs_command.add_parser(commands)

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
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", parser_class=Parser)
    db_commands.required = True
    p = db_commands.add_parser(
        "migrate",
        help="create or upgrade a store's schema",
        description="Brings a store's schema to this version: --db for a SQLite file "
        "(created if missing), --dsn for PostgreSQL (needs psycopg).",
    )
    store_options(p, sqlite_help="SQLite store file (created if missing)")
    p.set_defaults(run=_cmd_migrate)
    from taskrunner.dashboard import command as dashboard_command

    dashboard_command.add_parser(commands, store_options)
    queues_command.add_parser(commands, store_options)
    schedules_command.add_parser(commands, store_options)
    return parser


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
    from taskrunner.cli.demo import DemoError, DemoOptions, run_demo

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
    from taskrunner.cli.worker import load_app, run_worker
    from taskrunner.jobs import JobManager

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
        queues = ",".join(f"{q}:{n}" for q, n in manager.queues.items())
        print(
            f"taskrunner worker (pid {os.getpid()}) on {where}: handlers {types}; queues {queues}; "
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
            queues=args.queues,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    except ImportError as exc:
        raise CliError(import_problem(exc)) from None


# ---------------------------------------------------------------- bench


def _cmd_bench(args: argparse.Namespace) -> int:
    from taskrunner.cli import bench_report

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
        from taskrunner.jobs.stores import postgres_store
    except ImportError as exc:
        raise CliError(import_problem(exc)) from None
    try:
        if args.schema is None:
            version = postgres_store.migrate(args.dsn)
        else:
            version = postgres_store.migrate(args.dsn, schema=args.schema)
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc)) from None
    except Exception as exc:
        raise CliError(f"migration failed: {one_line(exc)}", EXIT_FAILED) from None
    print(f"PostgreSQL schema {args.schema or postgres_store.DEFAULT_SCHEMA!r}: version {version}")
    return EXIT_OK
