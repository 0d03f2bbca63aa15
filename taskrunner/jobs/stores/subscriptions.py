"""A store's subscribers and the one listener thread they share (SQLite and PostgreSQL).

A store that can tell when jobs become pending (PostgreSQL's LISTEN/NOTIFY,
SQLite's wake-up sockets) keeps its subscribers in a :class:`Subscriptions`:
the first :meth:`~Subscriptions.subscribe` starts a listener made by the
store's factory, the last unsubscribe stops it, and the listener calls
:meth:`~Subscriptions.deliver`, which calls every subscriber.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from taskrunner.errors import ClosedError
from taskrunner.runtime.waits import check_wait_timeout

__all__ = ["Deliver", "StoreListener", "Subscriptions"]

log = logging.getLogger("taskrunner.jobs")

#: A subscriber: called with the earliest due time of the new pending jobs
#: (epoch seconds), or None for "look now".
Deliver = Callable[[float | None], None]


class StoreListener(Protocol):
    """What :class:`Subscriptions` needs of a listener thread."""

    #: Set once the listener is in place (notifications sent later are seen).
    listening: threading.Event

    def start(self) -> None: ...

    def stop(self) -> None:
        """Make the thread end (it may end a little later: see :meth:`join`)."""

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the thread to end (not from the thread itself)."""


class Subscriptions:
    """Subscribers and their listener.  Thread-safe.

    ``_lock`` guards ``_subscribers``, ``_next``, ``_listener`` and ``_closed``;
    it is never held while a subscriber is called or a listener stopped."""

    def __init__(self, make_listener: Callable[[Deliver], StoreListener]) -> None:
        self._make_listener = make_listener
        self._lock = threading.Lock()
        self._subscribers: dict[int, Deliver] = {}
        self._next = 0
        self._listener: StoreListener | None = None
        self._closed = False

    def subscribe(self, callback: Deliver) -> Callable[[], None]:
        """Add ``callback``; returns its (idempotent) unsubscribe.  ``ClosedError``
        after :meth:`close`."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        with self._lock:
            if self._closed:
                raise ClosedError("the job store is closed")
            token = self._next
            self._next += 1
            self._subscribers[token] = callback
            if self._listener is None:
                self._listener = self._make_listener(self.deliver)
                self._listener.start()

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers.pop(token, None)
                listener = self._listener if not self._subscribers else None
                if listener is not None:
                    self._listener = None
            if listener is not None:
                listener.stop()

        return unsubscribe

    def wait_listening(self, timeout: float | None = None) -> bool:
        """True once the listener is in place; False after ``timeout``, or if
        nobody is subscribed."""
        timeout = check_wait_timeout(timeout)
        with self._lock:
            listener = self._listener
        return listener is not None and listener.listening.wait(timeout)

    def deliver(self, due_at: float | None) -> None:
        """Call every subscriber (outside the lock); one that raises is logged."""
        with self._lock:
            callbacks = list(self._subscribers.values())
        for callback in callbacks:
            try:
                callback(due_at)
            except Exception:
                log.exception("a job store subscriber failed")

    def close(self, timeout: float = 5.0) -> None:
        """Forget every subscriber, stop the listener and wait up to ``timeout``
        for its thread.  Idempotent."""
        with self._lock:
            self._closed = True
            self._subscribers.clear()
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
            listener.join(timeout)
