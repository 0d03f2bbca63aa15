"""What every command shares: exit codes, one-line errors, argument types and
the store options (``--db`` / ``--dsn`` / ``--schema``)."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from taskrunner.jobs import JobStore


EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A one-line error for the user; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
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


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text}")
    return value


def state_names(values: Sequence[str] | None) -> list[str] | None:
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


def type_names(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    return [t for value in values for t in (v.strip() for v in value.split(",")) if t]


# ---------------------------------------------------------------- the parser


def store_options(p: argparse.ArgumentParser, *, sqlite_help: str) -> None:
    """``--db PATH`` or ``--dsn DSN`` (exactly one), and ``--schema`` for PostgreSQL."""
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", metavar="PATH", help=sqlite_help)
    where.add_argument("--dsn", help="PostgreSQL connection string (needs psycopg)")
    p.add_argument("--schema", help="PostgreSQL schema (default: taskrunner)")


def store_from_args(args: argparse.Namespace) -> JobStore:
    """The store named by ``--db`` (the file must exist: an unknown path is a typo, not a
    wish) or ``--dsn``."""
    from taskrunner.cli.worker import open_store

    if args.db is not None and not Path(args.db).is_file():
        raise CliError(f"no such database file: {args.db}")
    if args.dsn is not None:
        # A one-shot command: its one-line error says why the pool could not connect.
        logging.getLogger("psycopg").setLevel(logging.CRITICAL)
    try:
        return open_store(args.db, dsn=args.dsn, schema=args.schema)
    except ImportError as exc:
        raise CliError(import_problem(exc)) from None
    except ValueError as exc:
        raise CliError(str(exc)) from None


def import_problem(exc: ImportError) -> str:
    if (exc.name or "").startswith("psycopg"):
        return "PostgreSQL support needs psycopg: pip install 'taskrunner[postgres]'"
    return f"PostgreSQL support is not available: {exc}"


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
