"""``PriorityQueue``: the C binary heap (``csrc/tr_heap.h``) as a small typed class.

Tokens are ints in ``[0, 2**64)`` (callers map them to their objects); a
token is held at most once.  Order: highest priority first, FIFO within a
priority (a 64-bit push sequence that cannot wrap, so it cannot reorder).

Thread-safety: every method may be called from any number of threads at
once; the C heap has its own mutex and never relies on the GIL.  Blocking
calls wait in C with the GIL released.  Output buffers are allocated per
call, so no Python state is shared between callers.
"""

from __future__ import annotations

from taskrunner.errors import ClosedError
from taskrunner.native.binding import (
    CLOSED,
    EMPTY,
    INT32_MAX,
    INT32_MIN,
    OK,
    TIMEOUT,
    check,
    check_token,
    ffi,
    lib,
    timeout_ns,
)

_push = lib.tr_heap_push
_pop = lib.tr_heap_pop
_pop_many = lib.tr_heap_pop_many
_pop_wait = lib.tr_heap_pop_wait
_new = ffi.new
_unpack = ffi.unpack

LEVELS: int = lib.TR_HEAP_LEVELS


def check_priority(priority: object) -> int:
    """``priority`` as an int32, or a clear TypeError/ValueError."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int, not {type(priority).__name__}")
    if not INT32_MIN <= priority <= INT32_MAX:
        raise ValueError(f"priority must fit in 32 bits, got {priority}")
    return int(priority)


def _check_max(max_items: object) -> int:
    if isinstance(max_items, bool) or not isinstance(max_items, int):
        raise TypeError(f"max_items must be an int, not {type(max_items).__name__}")
    if max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items}")
    return max_items


class PriorityQueue:
    """A thread-safe priority queue of int tokens backed by the C heap.

    ``pop``/``pop_many`` hand out tokens; the heap counts them "in flight"
    until :meth:`complete` retires them, which is what :meth:`wait_idle`
    waits for.  After :meth:`close`, pushes raise :class:`ClosedError` and
    pops drain what is left before raising it too.
    """

    __slots__ = ("__weakref__", "_h")

    def __init__(self) -> None:
        out = ffi.new("tr_heap **")
        check(lib.tr_heap_new(out), "PriorityQueue")
        self._h = ffi.gc(out[0], lib.tr_heap_free)

    def push(self, token: int, priority: int = 0) -> None:
        """Queue ``token``; DuplicateTokenError if held, ClosedError after close."""
        status = _push(self._h, check_token(token), check_priority(priority))
        if status != OK:
            check(status, "PriorityQueue.push")

    def push_many(self, items: list[tuple[int, int]]) -> None:
        """Queue ``(token, priority)`` pairs in order, all or none."""
        tokens = [check_token(t) for t, _ in items]
        prios = [check_priority(p) for _, p in items]
        n = len(tokens)
        check(
            lib.tr_heap_push_many(
                self._h, ffi.new("uint64_t[]", tokens), ffi.new("int32_t[]", prios), n
            ),
            "PriorityQueue.push_many",
        )

    def try_pop(self) -> tuple[int, int] | None:
        """The head as ``(token, priority)``, or None when nothing can be popped."""
        token = _new("uint64_t *")
        prio = _new("int32_t *")
        status = _pop(self._h, token, prio)
        if status == OK:
            return int(token[0]), int(prio[0])
        if status == EMPTY:
            return None
        check(status, "PriorityQueue.try_pop")
        return None  # pragma: no cover - check() raised

    def pop_many(self, max_items: int) -> list[int]:
        """Up to ``max_items`` tokens in order, without waiting."""
        m = _check_max(max_items)
        buf = _new("uint64_t[]", m)
        n = _new("size_t *")
        check(_pop_many(self._h, buf, m, n), "PriorityQueue.pop_many")
        tokens: list[int] = _unpack(buf, n[0])
        return tokens

    def pop_batch(
        self,
        max_items: int = 64,
        timeout: float | None = None,
        *,
        completed: int = 0,
        completed_low: int = 0,
    ) -> tuple[list[int], int]:
        """Wait for work and take a batch of one priority: ``(tokens, priority)``.

        First retires ``completed`` earlier tokens.  Raises TimeoutError when
        nothing came within ``timeout`` and ClosedError once closed and drained.
        """
        m = _check_max(max_items)
        buf = _new("uint64_t[]", m)
        n = _new("size_t *")
        prio = _new("int32_t *")
        status = _pop_wait(self._h, buf, m, n, prio, completed, completed_low, timeout_ns(timeout))
        if status != OK:
            if status == TIMEOUT:
                raise TimeoutError("PriorityQueue.pop_batch: timed out")
            if status == CLOSED:
                raise ClosedError("PriorityQueue.pop_batch: closed")
            check(status, "PriorityQueue.pop_batch")
        tokens: list[int] = _unpack(buf, n[0])
        return tokens, int(prio[0])

    def complete(self, completed: int, completed_low: int = 0) -> None:
        """Retire popped tokens (ValueError if more than are in flight)."""
        check(lib.tr_heap_complete(self._h, completed, completed_low), "PriorityQueue.complete")

    def peek(self) -> tuple[int, int] | None:
        token = _new("uint64_t *")
        prio = _new("int32_t *")
        if lib.tr_heap_peek(self._h, token, prio) != OK:
            return None
        return int(token[0]), int(prio[0])

    def remove(self, token: int) -> None:
        """Remove a queued token; UnknownTokenError if it is not queued."""
        check(lib.tr_heap_remove(self._h, check_token(token)), "PriorityQueue.remove")

    def discard(self, token: int) -> bool:
        """Remove a queued token; False if it was not queued."""
        return bool(lib.tr_heap_remove(self._h, check_token(token)) == OK)

    def set_low_limit(self, max_low_priority: int, limit: int) -> None:
        """At most ``limit`` tokens of priority <= ``max_low_priority`` in flight (0: no cap)."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        check(
            lib.tr_heap_set_low_limit(self._h, check_priority(max_low_priority), limit),
            "PriorityQueue.set_low_limit",
        )

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing is queued or in flight; False on timeout."""
        return bool(lib.tr_heap_wait_idle(self._h, timeout_ns(timeout)) == OK)

    def level_counts(self) -> list[int]:
        """Queued tokens per priority level 0..LEVELS-1 (priorities clamped)."""
        buf = _new("size_t[]", LEVELS)
        lib.tr_heap_level_counts(self._h, buf)
        return [int(x) for x in buf]

    @property
    def in_flight(self) -> int:
        return int(lib.tr_heap_in_flight(self._h))

    @property
    def waiters(self) -> int:
        return int(lib.tr_heap_waiters(self._h))

    @property
    def memory_bytes(self) -> int:
        return int(lib.tr_heap_memory(self._h))

    def check_invariants(self) -> None:
        """Raise AssertionError if the C heap's internal invariants are broken
        (heap order, token index, level counts; for tests, O(n))."""
        if lib.tr_heap_check(self._h) != OK:
            raise AssertionError("tr_heap invariants broken")

    def close(self) -> None:
        lib.tr_heap_close(self._h)

    @property
    def closed(self) -> bool:
        return bool(lib.tr_heap_is_closed(self._h))

    def __len__(self) -> int:
        return int(lib.tr_heap_len(self._h))
