"""A web dashboard for jobs: ``taskrunner dashboard --db PATH`` (the ``dashboard`` extra).

The pieces: :mod:`~taskrunner.dashboard.data` reads what the pages show from a
job store's public API; :mod:`~taskrunner.dashboard.chart` lays out the
overview's SVG chart; :mod:`~taskrunner.dashboard.security` holds the token,
Host and CSRF rules; :mod:`~taskrunner.dashboard.app` is the WSGI application
(Werkzeug and Jinja2); :mod:`~taskrunner.dashboard.server` serves it on
taskrunner's own thread pool; :mod:`~taskrunner.dashboard.command` is the
command-line subcommand.

:func:`serve` puts them together; :func:`mount` does the same from inside a
process, adding a live view of its pool (:mod:`~taskrunner.dashboard.pool_view`).
Importing this package needs nothing beyond
taskrunner itself; :func:`serve` and the application need the ``dashboard``
extra (Werkzeug, Jinja2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taskrunner.dashboard.server import DashboardServer
    from taskrunner.jobs import JobManager, JobStore
    from taskrunner.runtime.pool import ThreadPool

__all__ = ["mount", "serve"]


def serve(
    store: JobStore,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    read_only: bool = False,
    pool: ThreadPool | None = None,
    refresh_seconds: float = 5.0,
) -> DashboardServer:
    """Start a dashboard on ``store`` at ``http://host:port/``; returns the running server.

    Refuses (``ValueError``) a non-loopback ``host`` without a ``token`` (at
    least 16 characters).  The requests run on ``pool`` if given (left
    running on close), else on a pool the server makes.  The overview refreshes
    itself every ``refresh_seconds``.  Close the server
    with ``close(timeout)`` from any thread; the store stays open (its owner
    closes it).  ``ImportError`` without the ``dashboard`` extra.
    """
    return _start(store, host, port, token, read_only, pool, refresh_seconds, None)


def mount(
    pool: ThreadPool,
    manager: JobManager,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    read_only: bool = False,
    refresh_seconds: float = 5.0,
) -> DashboardServer:
    """Serve the dashboard from inside a running process; returns the running server.

    The same pages as :func:`serve` on ``manager.store``, plus ``/pool``: a
    live view of ``pool`` (its queues by priority, running and delayed tasks,
    outcome counters and metrics digest, the runners built on it) and of
    ``manager`` (its owner name, job types and counters).  The requests run
    on ``pool`` itself, as ``may_block`` tasks of category ``"dashboard"``
    (give the pool a ``category_limits`` entry to cap them); closing the
    server leaves the pool running.  Same rules and errors as :func:`serve`.
    """
    from taskrunner.jobs import JobManager
    from taskrunner.runtime.pool import ThreadPool

    if not isinstance(pool, ThreadPool):
        raise TypeError(f"pool must be a ThreadPool, got {type(pool).__name__}")
    if not isinstance(manager, JobManager):
        raise TypeError(f"manager must be a JobManager, got {type(manager).__name__}")
    return _start(manager.store, host, port, token, read_only, pool, refresh_seconds, manager)


def _start(
    store: JobStore,
    host: str,
    port: int,
    token: str | None,
    read_only: bool,
    pool: ThreadPool | None,
    refresh_seconds: float,
    manager: JobManager | None,
) -> DashboardServer:
    from taskrunner.dashboard.app import DashboardApp
    from taskrunner.dashboard.security import Guard
    from taskrunner.dashboard.server import DashboardServer

    # Bind first (port 0 picks a free port), then build the Guard on the real port.
    server = DashboardServer(_Deferred(), host=host, port=port, pool=pool)
    Guard(host=host, port=max(port, 1), token=token)  # check the bind rules before binding
    server.start()
    try:
        guard = Guard(host=host, port=server.port, token=token)
        server.set_app(
            DashboardApp(
                store,
                guard=guard,
                read_only=read_only,
                refresh_seconds=refresh_seconds,
                pool=pool if manager is not None else None,
                manager=manager,
            )
        )
    except BaseException:
        server.close()
        raise
    return server


class _Deferred:
    """A WSGI app answering 503 until the real one is set (the moment after binding)."""

    def __call__(self, environ: object, start_response: object) -> list[bytes]:
        start = start_response
        assert callable(start)
        start("503 Service Unavailable", [("Content-Type", "text/plain")])
        return [b"starting\n"]
