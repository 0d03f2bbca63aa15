"""The floor: the least a pool on taskrunner's C heap can do per task.

:class:`FloorPool` runs posted callables on worker threads with nothing but
what any pool built this way needs: a handle holding the callable, its
arguments and a copy of the poster's ``contextvars`` context; a dict from
token to handle (the claim); one push per task and batched pops on the same
C heap, with the same lazy wake-ups as ``ThreadPool`` under a GIL.  It keeps
none of taskrunner's promises: no cancel, no task state, one priority, no
error handling, no shutdown accounting, no metrics switch, no preemption
check, no batch watch.

``bench/instructions.py`` (subject ``floor``) and ``bench/bench_pool.py``
measure it beside ``ThreadPool`` and ``ThreadPoolExecutor``: the gap
between the floor and ThreadPoolExecutor is the most that any design of
handle plus claim plus Python worker loop on this C core can win, and the
gap between ``ThreadPool`` and the floor is the price of its guarantees.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from contextvars import Context, copy_context
from itertools import count
from typing import Any

from _harness import idle_start_latency

from taskrunner.native.binding import OK, ffi, lib

_BATCH = 32
_LAZY_WAKE_NS = 200_000  # as ThreadPool's


class Handle:
    __slots__ = ("args", "ctx", "fn")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], ctx: Context) -> None:
        self.fn = fn
        self.args = args
        self.ctx = ctx


class FloorPool:
    """Two (or ``workers``) threads running posted callables; see the module."""

    def __init__(self, workers: int = 2) -> None:
        out = ffi.new("tr_heap **")
        if lib.tr_heap_new(out) != OK:
            raise MemoryError("tr_heap_new")
        self._heap = out[0]
        is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
        if is_gil_enabled is None or is_gil_enabled():
            lib.tr_heap_set_lazy_wake(self._heap, _BATCH, _LAZY_WAKE_NS)  # as ThreadPool does
        self._live: dict[int, Handle] = {}
        self._tokens = count(1)
        self._threads = [threading.Thread(target=self._work) for _ in range(workers)]
        for thread in self._threads:
            thread.start()

    def post(self, fn: Callable[..., Any], *args: Any) -> Handle:
        token = next(self._tokens)
        self._live[token] = handle = Handle(fn, args, copy_context())
        lib.tr_heap_push(self._heap, token, 1)
        return handle

    def _work(self) -> None:
        heap = self._heap
        buf = ffi.new("uint64_t[]", _BATCH)
        got = ffi.new("size_t *")
        priority = ffi.new("int32_t *")
        claim = self._live.pop
        done = 0
        while lib.tr_heap_pop_wait(heap, buf, _BATCH, got, priority, done, 0, -1) == OK:
            done = got[0]
            for token in ffi.unpack(buf, done):
                handle = claim(token)
                handle.ctx.run(handle.fn, *handle.args)

    def wait_idle(self) -> None:
        lib.tr_heap_wait_idle(self._heap, -1)

    def close(self) -> None:
        lib.tr_heap_close(self._heap)
        for thread in self._threads:
            thread.join()
        lib.tr_heap_free(self._heap)


def noop() -> None:
    pass


def run(n: int, fn: Callable[[], Any] = noop) -> float:
    """Post ``n`` calls of ``fn`` from this thread to two workers, wait until
    all have run; returns tasks per second."""
    pool = FloorPool()
    post = pool.post
    t0 = time.perf_counter()
    for _ in range(n):
        post(fn)
    pool.wait_idle()
    elapsed = time.perf_counter() - t0
    pool.close()
    return n / elapsed


def latency(samples: int) -> list[float]:
    """Post -> start on an idle floor pool in microseconds, measured as
    bench_pool measures ``ThreadPool`` (``_harness.idle_start_latency``)."""
    pool = FloorPool()
    try:
        return idle_start_latency(pool.post, pool.wait_idle, samples)
    finally:
        pool.close()
