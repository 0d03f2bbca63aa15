"""Category limits: ``CategoryGate`` caps how many tasks of one category run at once."""

from __future__ import annotations

import threading

from taskrunner.native.binding import OK, lib
from taskrunner.runtime.pool.state import PoolState
from taskrunner.runtime.task import (
    Task,
)

_push = lib.tr_heap_push


class CategoryGate:
    """Caps how many tasks of one category run at once.

    ``lock`` guards ``holders`` (the tokens holding a slot) and ``waiting``;
    tasks over the cap wait in ``waiting`` (FIFO) and are pushed to the ready
    queue as slots free.  A slot is released only by the token holding it, so a
    cancel racing the timer's hand-over can never free a slot twice.
    """

    def __init__(self, pool: PoolState, category: str, limit: int) -> None:
        from collections import deque

        self.pool = pool
        self.category = category
        self.limit = limit
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self.holders: set[int] = set()
        self.waiting: deque[Task] = deque()
        self.released = False

    @property
    def running(self) -> int:
        return len(self.holders)

    def admit(self, task: Task) -> bool:
        """True if the gate keeps the task for later; False: push it now."""
        with self.lock:
            if self.released or len(self.holders) < self.limit:
                self.holders.add(task.token)
                return False
            self.waiting.append(task)
            return True

    def release(self, token: int) -> None:
        """The task holding a slot ended: pass the slot to the next waiting one."""
        with self.lock:
            if token not in self.holders:
                return
            self.holders.discard(token)
            nxt = self.waiting.popleft() if self.waiting else None
            if nxt is not None:
                self.holders.add(nxt.token)
            elif not self.holders:
                self.idle.notify_all()
        if nxt is not None:
            group = self.pool._blocking if nxt.traits.may_block else self.pool._cpu
            status = _push(group.h, nxt.token, nxt.traits.priority)
            if status == OK and nxt.traits.may_block:
                group.maybe_grow()
            elif status != OK and self.pool._live.pop(nxt.token, None) is nxt:
                self.release(nxt.token)  # it never ran: its slot passes on
                self.pool._drop_claimed(nxt)

    def forget(self, task: Task) -> bool:
        """Take a cancelled task out of ``waiting``; False if it held a slot instead."""
        with self.lock:
            try:
                self.waiting.remove(task)
            except ValueError:
                return False
            return True

    def release_all(self) -> None:
        """At shutdown: let everything waiting reach the queue, which decides."""
        with self.lock:
            self.released = True
            waiting = list(self.waiting)
            self.waiting.clear()
            self.holders.update(t.token for t in waiting)
        for task in waiting:
            group = self.pool._blocking if task.traits.may_block else self.pool._cpu
            if (
                _push(group.h, task.token, task.traits.priority) != OK
                and self.pool._live.pop(task.token, None) is task
            ):
                self.release(task.token)
                self.pool._drop_claimed(task)

    def wait_empty(self, timeout: float | None) -> bool:
        with self.lock:
            return self.idle.wait_for(lambda: not self.waiting and not self.holders, timeout)
