"""The PostgreSQL store's listener: a thread that LISTENs and calls the store back.

:class:`Listener` holds one connection of its own (autocommit, ``LISTEN`` on
the store's channel), delivers each notification's due time, and reconnects
with backoff; :meth:`~taskrunner.jobs.stores.postgres_store.PostgresJobStore.subscribe`
starts and stops it.  Its ``stop`` and ``listening`` events are safe to use
from any thread.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping
from typing import Any

import psycopg

__all__ = ["Listener"]

log = logging.getLogger("taskrunner.jobs.postgres")


class Listener:
    """A thread holding one connection that LISTENs on the store's channel.

    It calls ``deliver`` for each notification, and once after each
    (re)connection with ``None`` (notifications may have been missed).  It
    reconnects with backoff when the connection breaks and ends within ``poll``
    seconds of :meth:`stop`.
    """

    def __init__(
        self,
        dsn: str,
        connect_kwargs: Mapping[str, Any],
        channel: str,
        deliver: Callable[[float | None], None],
        poll: float = 0.25,
    ) -> None:
        self._dsn = dsn
        self._connect_kwargs = dict(connect_kwargs)
        self._channel = channel
        self._deliver = deliver
        self._poll = poll
        self._stopping = threading.Event()
        #: Set once the first LISTEN is in place (for tests and callers that must not miss one).
        self.listening = threading.Event()
        self.thread = threading.Thread(target=self._run, name="taskrunner-pg-listen", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Ask the thread to end (it does within ``poll`` seconds); never waits."""
        self._stopping.set()

    def join(self, timeout: float) -> None:
        if self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def _run(self) -> None:
        pause = 0.1
        quoted = '"' + self._channel.replace('"', '""') + '"'
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True, **self._connect_kwargs) as conn:
                    conn.execute(f"LISTEN {quoted}")
                    self.listening.set()
                    pause = 0.1
                    self._deliver(None)
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=self._poll):
                            self._deliver(_parse_due(note.payload))
                            if self._stopping.is_set():
                                break
            except psycopg.Error as exc:
                if self._stopping.is_set():
                    break
                log.warning("PostgreSQL listener: %s; reconnecting in %.1fs", exc, pause)
                self._stopping.wait(pause)
                pause = min(pause * 2, 5.0)


def _parse_due(payload: str) -> float | None:
    try:
        due = float(payload)
    except ValueError:
        return None
    return due if math.isfinite(due) else None
