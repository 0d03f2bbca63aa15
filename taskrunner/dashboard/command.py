"""``taskrunner dashboard``: the subcommand's options and its run.

Kept here rather than in :mod:`taskrunner.cli.main` so the command line grows by
two lines.  Importing this module needs no web library; :func:`run` reports a
missing ``dashboard`` extra as a one-line usage error.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["add_parser", "run"]


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is in [0, 65535], got {value}")
    return value


def add_parser(commands: Any, store_options: Callable[..., None]) -> None:
    """Add ``dashboard`` to the ``taskrunner`` subcommands (``store_options`` adds --db/--dsn)."""
    from taskrunner.dashboard.security import TOKEN_ENV

    p = commands.add_parser(
        "dashboard",
        help="a web dashboard of a store's jobs (needs taskrunner[dashboard])",
        description="Serves a web dashboard of the jobs in a store: counts, a chart of the "
        "last hour, workers, the jobs with filters, each job's details, and retry and cancel. "
        f"Listens on 127.0.0.1 unless --host says otherwise; any other address needs a token "
        f"(--token or {TOKEN_ENV}), which every request must then carry.  Runs until "
        "SIGINT or SIGTERM.",
    )
    store_options(p, sqlite_help="SQLite store file (must exist)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port", type=_port, default=8765, help="port (default 8765; 0 picks a free one)"
    )
    p.add_argument(
        "--token",
        default=None,
        help=f"required from every request (at least 16 characters; default ${TOKEN_ENV})",
    )
    p.add_argument(
        "--read-only", action="store_true", help="show everything, but offer and allow no action"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit code."""
    from taskrunner.cli.args import EXIT_OK, CliError, store_from_args
    from taskrunner.dashboard.security import TOKEN_ENV, check_bind

    try:
        import jinja2  # noqa: F401
        import werkzeug  # noqa: F401
    except ImportError:
        raise CliError(
            "the dashboard needs its extra: pip install 'taskrunner[dashboard]'"
        ) from None
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    try:
        check_bind(args.host, token)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    from taskrunner.dashboard import serve

    store = store_from_args(args)
    try:
        try:
            server = serve(
                store, host=args.host, port=args.port, token=token, read_only=args.read_only
            )
        except OSError as exc:
            raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
        stop = threading.Event()
        previous = {
            sig: signal.signal(sig, lambda *_: stop.set())
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            where = args.db if args.db is not None else "PostgreSQL"
            address = server.url + ("?token=" + token if token else "")
            mode = " (read-only)" if args.read_only else ""
            print(
                f"taskrunner dashboard on {where}{mode}: open {address}  (Ctrl-C stops)",
                file=sys.stderr,
                flush=True,
            )
            while not stop.wait(0.5):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            server.close(timeout=5.0)
    finally:
        store.close()
    return EXIT_OK
