"""Serving the dashboard: the standard library's WSGI server on taskrunner's own thread pool.

:class:`DashboardServer` listens with :class:`wsgiref.simple_server.WSGIServer`
(HTTP/1.0, one request per connection: plenty for a dashboard) and hands each
accepted connection to a :class:`~taskrunner.ThreadPool` as a ``may_block``
task, so slow store reads never hold up the accept loop and at most
``max_blocking_workers`` requests run at once.  One thread of its own runs the
accept loop.

Lifecycle: :meth:`DashboardServer.start` binds and starts serving (the port
is known from then on: pass ``port=0`` for a free one); :meth:`close` stops
accepting, waits up to ``timeout`` for the requests in flight, closes the
socket and shuts down the pool if the server made it.  ``close`` may be called
from any thread, any number of times.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from taskrunner.runtime.pool import ThreadPool
from taskrunner.runtime.traits import TaskTraits

__all__ = ["DashboardServer"]

log = logging.getLogger("taskrunner.dashboard")

WSGIApp = Callable[[dict[str, Any], Any], Iterable[bytes]]
_REQUEST = TaskTraits(may_block=True, category="dashboard")


class _QuietHandler(WSGIRequestHandler):
    """wsgiref's handler, logging requests at DEBUG instead of printing them."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("dashboard: %s " + format, self.address_string(), *args)


class _PoolServer(WSGIServer):
    """A WSGIServer that runs each connection as a task on a ThreadPool.

    It keeps the open connections so that :meth:`stop_reading` can end the
    ones still waiting for a request (browsers open spare connections that
    may never send one) without cutting off a response being written.
    """

    pool: ThreadPool
    #: A client silent this long loses its connection (and frees its worker).
    timeout_seconds: float = 10.0

    def server_activate(self) -> None:
        # Guards _open (added by the accept thread, removed by the pool's workers).
        self._open_lock = threading.Lock()
        self._open: set[socket.socket] = set()
        super().server_activate()

    def process_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(self.timeout_seconds)
        with self._open_lock:
            self._open.add(request)
        try:
            self.pool.post_task(
                self._handle, request, client_address, traits=_REQUEST, name="dashboard request"
            )
        except Exception:  # the pool shut down: drop the connection
            self._done(request)

    def _handle(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self._done(request)

    def _done(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        self.shutdown_request(request)

    def stop_reading(self) -> None:
        """Shut the read side of every open connection: a handler waiting for a
        request sees end-of-file at once; one writing a response carries on."""
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by its handler
                connection.shutdown(socket.SHUT_RD)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("dashboard: connection from %s failed", client_address, exc_info=True)


class DashboardServer:
    """Serve a WSGI ``app`` on ``host:port`` with a thread pool (see the module docstring).

    ``pool`` is the pool to run requests on; by default the server makes its
    own (one CPU worker, up to ``max_workers`` blocking ones) and shuts it down
    on :meth:`close`.  A pool given by the caller is left running.
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        pool: ThreadPool | None = None,
        max_workers: int = 8,
    ) -> None:
        if not callable(app):
            raise TypeError("app must be a WSGI callable")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int in [0, 65535], got {port!r}")
        if pool is not None and not isinstance(pool, ThreadPool):
            raise TypeError(f"pool must be a ThreadPool, got {type(pool).__name__}")
        self._app = app
        self._host = host
        self._port = port
        self._own_pool = pool is None
        self._pool = pool or ThreadPool(
            1, name="dashboard", max_blocking_workers=max_workers, blocking_idle_timeout=30.0
        )
        # Guards _server, _thread and _closed (start and close may race from any threads).
        self._lock = threading.Lock()
        self._server: _PoolServer | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def port(self) -> int:
        """The port listened on (the real one once started, also with ``port=0``)."""
        server = self._server
        return server.server_address[1] if server is not None else self._port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}/"

    def set_app(self, app: WSGIApp) -> None:
        """Serve ``app`` from the next request on (for an app that needs the bound port)."""
        if not callable(app):
            raise TypeError("app must be a WSGI callable")
        with self._lock:
            self._app = app
            if self._server is not None:
                self._server.set_app(app)

    def start(self) -> DashboardServer:
        """Bind and start serving; returns self.  ``OSError`` if the address is taken."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the dashboard server was closed")
            if self._server is not None:
                return self
            server_class = type(
                "_Server",
                (_PoolServer,),
                {"address_family": socket.AF_INET6 if ":" in self._host else socket.AF_INET},
            )
            server = server_class((self._host, self._port), _QuietHandler)
            server.pool = self._pool
            server.set_app(self._app)
            self._pool.start()
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.2},
                name="dashboard-accept",
                daemon=True,
            )
            self._server, self._thread = server, thread
            thread.start()
        return self

    def close(self, timeout: float = 10.0) -> bool:
        """Stop serving; True if everything stopped within ``timeout`` seconds.  Idempotent."""
        with self._lock:
            if self._closed:
                return True
            self._closed = True
            server, thread = self._server, self._thread
        stopped = True
        if server is not None and thread is not None:
            if thread is not threading.current_thread():
                server.shutdown()  # returns once the accept loop is out (within poll_interval)
            thread.join(timeout)
            stopped = not thread.is_alive()
            server.stop_reading()
            server.server_close()
        if self._own_pool:
            report = self._pool.shutdown(timeout=timeout)
            stopped = stopped and (report is None or not report.timed_out)
        return stopped

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
