"""``EventBus``: typed publish/subscribe whose handlers run on task runners.

Each subscription names (or gets) the runner its handler runs on; publishing
an event posts one delivery task per matching subscription to its runner and
returns at once, so a slow handler never blocks the publisher nor the other
subscribers.

Guarantees:

* **Ordering.** A subscription without a runner gets a
  :class:`~taskrunner.SequencedTaskRunner` of its own (on the bus's pool,
  default :func:`taskrunner.default_pool`): its handler sees the events of one
  publishing thread in publish order, one at a time.  With a runner of your
  own the runner's ordering applies (a sequenced or single-thread runner keeps
  the order; the pool or a parallel runner does not).
* **Typing.** ``EventBus[E]`` is generic; ``subscribe(handler,
  event_type=T)`` delivers only the events that are instances of ``T``.
* **Re-entrancy.** A handler may publish (to this bus or another), subscribe
  or unsubscribe: no lock is held while a handler runs or a delivery is posted.
* **Unsubscribe.** After ``subscription.unsubscribe()`` returns, the handler is
  never called again (a delivery already running finishes) and the bus keeps
  no reference to it: deliveries still queued hold the subscription, whose
  handler is cleared, and are skipped.  They count as dropped.
* **Close.** ``close()`` refuses later publishes (:class:`EventBusClosedError`)
  and subscribes, drops every delivery not yet started (counted in
  ``stats()["dropped"]`` and returned), clears every handler, and shuts down
  the runners the bus created (``wait=False``; a handler running then
  finishes).  It may be called from any thread, a handler included, and is
  idempotent.

A handler that raises is reported like any task's exception: to the error
handler of the pool its runner is built on.  If a subscription's runner is
shut down by its owner, its deliveries are dropped (counted) and the
subscription stays until unsubscribed.

Thread-safety: every method may be called from any thread.  ``_lock`` guards
the subscription list, the counters and ``_closed``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from taskrunner.errors import ClosedError, RunnerClosedError
from taskrunner.runtime.future_call import NotRunHook
from taskrunner.runtime.pool import ThreadPool
from taskrunner.runtime.runner import TaskRunner
from taskrunner.runtime.runners.sequenced import SequencedTaskRunner

__all__ = ["EventBus", "EventBusClosedError", "Subscription"]

E = TypeVar("E")


class EventBusClosedError(ClosedError):
    """publish() or subscribe() on an EventBus that was closed."""


class Subscription(Generic[E]):
    """One handler's subscription; returned by :meth:`EventBus.subscribe`."""

    __slots__ = ("__weakref__", "_bus", "_event_type", "_handler", "_owned", "_runner", "name")

    def __init__(
        self,
        bus: EventBus[E],
        handler: Callable[[E], Any],
        runner: TaskRunner,
        owned: bool,
        event_type: type | None,
        name: str,
    ) -> None:
        self._bus: EventBus[E] | None = bus
        self._handler: Callable[[E], Any] | None = handler  # None once ended
        self._runner: TaskRunner | None = runner
        self._owned = owned
        self._event_type = event_type
        self.name = name

    @property
    def active(self) -> bool:
        """True until unsubscribed (or the bus closed)."""
        return self._handler is not None

    @property
    def runner(self) -> TaskRunner | None:
        """The runner the handler runs on (None once the subscription ended)."""
        return self._runner

    def unsubscribe(self) -> bool:
        """End the subscription; True if this call ended it.  See the module
        docstring for what happens to deliveries still queued."""
        bus = self._bus
        return bus._unsubscribe(self) if bus is not None else False

    def __repr__(self) -> str:
        return f"<Subscription {self.name!r} {'active' if self.active else 'ended'}>"


class _Delivery(NotRunHook):
    """The task delivering one event to one subscription."""

    __slots__ = ("bus", "event", "sub")

    def __init__(self, bus: EventBus[Any], sub: Subscription[Any], event: Any) -> None:
        self.bus = bus
        self.sub = sub
        self.event = event

    def __call__(self) -> None:
        handler = self.bus._start_delivery(self.sub)
        event = self.event
        self.event = None
        if handler is not None:
            handler(event)

    def not_run(self) -> None:
        self.event = None
        self.bus._delivery_not_run()


class EventBus(Generic[E]):
    """Publish events of type ``E`` to handlers running on task runners.

    ``pool`` is where the runners the bus creates (for subscriptions without
    a runner) are built; default :func:`taskrunner.default_pool`, looked up on
    first need.  See the module docstring for the guarantees.
    """

    def __init__(self, pool: ThreadPool | None = None, *, name: str = "eventbus") -> None:
        if pool is not None and not isinstance(pool, ThreadPool):
            raise TypeError(f"pool must be a ThreadPool or None, not {type(pool).__name__}")
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        self._pool = pool
        self.name = name
        # Guards _subs, _closed, _next_id and the counters.
        self._lock = threading.Lock()
        self._subs: list[Subscription[E]] = []
        self._closed = False
        self._next_id = 0
        self._published = 0
        self._pending = 0  # deliveries posted, not yet started or dropped
        self._delivered = 0
        self._dropped = 0

    @property
    def is_closed(self) -> bool:
        return self._closed

    def subscribe(
        self,
        handler: Callable[[E], Any],
        *,
        runner: TaskRunner | None = None,
        event_type: type | None = None,
        name: str | None = None,
    ) -> Subscription[E]:
        """Call ``handler(event)`` on ``runner`` for every event published from
        now on (only instances of ``event_type``, if given).  Without a runner
        the bus creates a SequencedTaskRunner for this subscription (shut down
        when it ends).  EventBusClosedError after close()."""
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        if runner is not None and not isinstance(runner, TaskRunner):
            raise TypeError(f"runner must be a TaskRunner or None, not {type(runner).__name__}")
        if event_type is not None and not isinstance(event_type, type):
            raise TypeError(f"event_type must be a class, not {type(event_type).__name__}")
        if runner is not None and runner.is_closed:
            raise RunnerClosedError(f"{runner.name}: cannot subscribe on a closed runner")
        if self._closed:
            raise EventBusClosedError(f"{self.name}: subscribe after close")
        with self._lock:
            self._next_id += 1
            label = name or f"{self.name}-sub{self._next_id}"
        owned = runner is None
        if runner is None:
            from taskrunner.runtime.defaults import default_pool

            pool = self._pool if self._pool is not None else default_pool()
            runner = SequencedTaskRunner(pool, name=label)
        sub: Subscription[E] = Subscription(self, handler, runner, owned, event_type, label)
        with self._lock:
            closed = self._closed
            if not closed:
                self._subs.append(sub)
        if closed:  # close() raced us: undo, leave nothing behind
            self._end(sub)
            raise EventBusClosedError(f"{self.name}: subscribe after close")
        return sub

    def publish(self, event: E) -> int:
        """Post ``event`` to every matching subscription's runner; returns how
        many deliveries were posted.  Never waits for a handler.
        EventBusClosedError after close()."""
        with self._lock:
            if self._closed:
                raise EventBusClosedError(f"{self.name}: publish after close")
            self._published += 1
            targets = [
                s for s in self._subs if s._event_type is None or isinstance(event, s._event_type)
            ]
            self._pending += len(targets)
        posted = 0
        for sub in targets:
            runner = sub._runner
            if runner is None:  # ended meanwhile
                self._delivery_not_run()
                continue
            try:
                runner.post_task(_Delivery(self, sub, event), name=f"{sub.name}:deliver")
                posted += 1
            except RunnerClosedError:
                self._delivery_not_run()  # its runner was shut down: dropped, counted
        return posted

    # ---- delivery bookkeeping (called by _Delivery) --------------------------------

    def _start_delivery(self, sub: Subscription[E]) -> Callable[[E], Any] | None:
        """A delivery starts: the handler to call, or None (skipped, counted)."""
        with self._lock:
            if self._closed:
                return None  # counted by close()
            self._pending -= 1
            handler = sub._handler
            if handler is None:
                self._dropped += 1
            else:
                self._delivered += 1
            return handler

    def _delivery_not_run(self) -> None:
        """A delivery will never run (its runner dropped it, or it was never posted)."""
        with self._lock:
            if not self._closed:
                self._pending -= 1
                self._dropped += 1

    # ---- ending subscriptions and the bus ---------------------------------------------

    def _unsubscribe(self, sub: Subscription[E]) -> bool:
        with self._lock:
            try:
                self._subs.remove(sub)
            except ValueError:
                return False
        self._end(sub)
        return True

    def _end(self, sub: Subscription[E]) -> None:
        """Clear the subscription's references; shut down a runner we made."""
        sub._handler = None
        runner, sub._runner = sub._runner, None
        sub._bus = None
        if sub._owned and runner is not None:
            runner.shutdown(wait=False, cancel_pending=True)

    def close(self) -> int:
        """Close the bus (see the module docstring); returns how many
        deliveries not yet started this call dropped (0 if already closed)."""
        with self._lock:
            if self._closed:
                return 0
            self._closed = True
            subs, self._subs = self._subs, []
            dropped = self._pending
            self._pending = 0
            self._dropped += dropped
        for sub in subs:
            self._end(sub)
        return dropped

    def __enter__(self) -> EventBus[E]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, Any]:
        """Counters: subscribers, published, pending, delivered, dropped, closed."""
        with self._lock:
            return {
                "name": self.name,
                "subscribers": len(self._subs),
                "published": self._published,
                "pending": self._pending,
                "delivered": self._delivered,
                "dropped": self._dropped,
                "closed": self._closed,
            }

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<EventBus {self.name!r} {state} subscribers={len(self._subs)}>"
