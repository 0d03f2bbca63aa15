"""A JobManager worker process: ``taskrunner worker``.

The store is a SQLite file (``--db PATH``: workers on one machine) or a
PostgreSQL database (``--dsn DSN``: workers on many machines; needs
``pip install 'taskrunner[postgres]'``).

``run_worker(db, app)`` (or ``run_worker(None, app, dsn=...)``) opens the
store, builds a pool and a manager, lets
``app(manager)`` register its handlers, starts, and runs until told to stop:
the first SIGINT/SIGTERM shuts down gracefully (running jobs may finish for
``grace`` seconds, the rest are left for recovery), a second one forcefully.

``app`` is ``"module:attribute"`` naming a callable that takes the manager
(or the callable itself).  Several workers, in several processes, may share
one store (file or database): each job is claimed by exactly one of them.
``queues`` (``--queues mail:10,reports:2``) names the queues a worker consumes
and each one's concurrency limit (default: the ``default`` queue).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType

from taskrunner.jobs import JobManager, JobStore, SQLiteJobStore
from taskrunner.jobs.queues import check_queue_limits, parse_queue_spec
from taskrunner.runtime.pool import ThreadPool

log = logging.getLogger("taskrunner.worker")

App = Callable[[JobManager], object]

#: Exit code of a worker stopped at once by a second SIGINT/SIGTERM.
FORCED_EXIT = 1


def load_app(spec: str | App) -> App:
    """The callable named by ``"module:attribute"`` (or ``spec`` itself if callable)."""
    if callable(spec):
        return spec
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"--app must look like 'module:attribute', got {spec!r}")
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import app module {module_name!r}: {exc}") from exc
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(app):
        raise ValueError(f"{spec} is not callable")
    return app  # type: ignore[no-any-return]


def open_store(
    db: str | os.PathLike[str] | None = None,
    *,
    dsn: str | None = None,
    schema: str | None = None,
    synchronous: str = "FULL",
) -> JobStore:
    """The store a worker uses: SQLite at ``db``, or PostgreSQL at ``dsn`` (exactly one).

    ``schema`` is the PostgreSQL schema (default ``taskrunner``); ``synchronous``
    the SQLite durability mode.  Raises ``ValueError`` for a bad combination,
    :class:`StoreError` if the store cannot be opened, ``ImportError`` if
    ``dsn`` is given without psycopg installed.
    """
    if (db is None) == (dsn is None):
        raise ValueError("give exactly one of a SQLite file (--db) or a PostgreSQL DSN (--dsn)")
    if dsn is not None:
        from taskrunner.jobs.stores.postgres_store import DEFAULT_SCHEMA, PostgresJobStore

        return PostgresJobStore(dsn, schema=schema or DEFAULT_SCHEMA)
    if schema is not None:
        raise ValueError("--schema applies to a PostgreSQL store (--dsn) only")
    assert db is not None
    path = Path(db)
    if not path.parent.exists():
        raise ValueError(f"no such directory for the database: {path.parent}")
    return SQLiteJobStore(path, synchronous=synchronous)


def run_worker(
    db: str | os.PathLike[str] | None,
    app: str | App,
    *,
    dsn: str | None = None,
    schema: str | None = None,
    workers: int | None = None,
    lease_seconds: float = 10.0,
    poll_interval: float = 0.5,
    grace: float = 30.0,
    synchronous: str = "FULL",
    stop: threading.Event | None = None,
    handle_signals: bool = True,
    queues: Mapping[str, int] | None = None,
) -> int:
    """Run a worker until ``stop`` is set or a signal arrives; returns an exit code.

    The store is the SQLite file ``db`` or, with ``db=None``, the PostgreSQL
    database ``dsn`` (see :func:`open_store`).  ``queues`` maps the queues the
    worker consumes to their concurrency limits (default: the ``default``
    queue); ``ValueError`` for a bad one, before the store is opened.
    """
    register = load_app(app)
    limits = None if queues is None else check_queue_limits(queues)
    stop = stop or threading.Event()
    forceful = threading.Event()
    store = open_store(db, dsn=dsn, schema=schema, synchronous=synchronous)
    pool = ThreadPool(workers, name="worker")
    manager = JobManager(
        store, pool, lease_seconds=lease_seconds, poll_interval=poll_interval, queues=limits
    )
    register(manager)
    if handle_signals:

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if stop.is_set():
                forceful.set()
            stop.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
    manager.start()
    log.info("worker %s started on %r", manager.owner, store, extra={"owner": manager.owner})
    while not stop.wait(0.2):
        pass
    log.info("worker %s stopping", manager.owner, extra={"owner": manager.owner})

    def wind_down() -> None:
        manager.shutdown(graceful=not forceful.is_set(), timeout=0 if forceful.is_set() else grace)
        pool.shutdown(timeout=grace, cancel_pending=forceful.is_set())
        store.close()

    if not handle_signals:
        wind_down()
        return 0
    # The drain runs on a helper thread so that a second signal can cut it short:
    # the process then ends at once, and the jobs still running are recovered
    # after their lease by another worker (as after a crash; the store is safe).
    closer = threading.Thread(target=wind_down, name="worker-shutdown", daemon=True)
    closer.start()
    while closer.is_alive():
        if forceful.wait(0.1) and closer.is_alive():
            log.warning(
                "worker %s: second signal, stopping at once; %d running job(s) are left "
                "for recovery after their lease",
                manager.owner,
                manager.stats()["active"],
                extra={"owner": manager.owner},
            )
            logging.shutdown()
            os._exit(FORCED_EXIT)
    # A second signal that came before the drain began made the drain itself
    # forceful; it may have ended before the loop above looked.  Still forceful.
    return FORCED_EXIT if forceful.is_set() else 0


def queue_spec(text: str) -> dict[str, int]:
    """argparse type of ``--queues``: ``"mail:10,reports:2"`` (a usage error if malformed)."""
    try:
        return parse_queue_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad --queues {text!r}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m taskrunner.cli.worker", description=__doc__)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", help="SQLite store file (workers on one machine)")
    where.add_argument(
        "--dsn", help="PostgreSQL connection string (workers on many machines; see README)"
    )
    parser.add_argument("--schema", default=None, help="PostgreSQL schema (default: taskrunner)")
    parser.add_argument("--app", required=True, help="module:callable registering handlers")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--lease", type=float, default=10.0)
    parser.add_argument("--poll", type=float, default=0.5)
    parser.add_argument("--queues", type=queue_spec, default=None, help="e.g. mail:10,reports:2")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return run_worker(
        args.db,
        args.app,
        dsn=args.dsn,
        schema=args.schema,
        workers=args.workers,
        lease_seconds=args.lease,
        poll_interval=args.poll,
        queues=args.queues,
    )


if __name__ == "__main__":
    raise SystemExit(main())
