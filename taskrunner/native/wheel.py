"""A typed Python face for the C timing wheel (``csrc/tr_wheel.h``).

The wheel holds 64-bit integer tokens, each with a deadline in nanoseconds on
whatever clock the caller uses (the scheduler passes its injected clock's
``now_ns()``; a test passes mock time).  It never reads a clock to decide what
is due: :meth:`TimingWheel.advance_ns` is told "now" and hands out every token
whose deadline is at or before it, earliest deadline first, ties in insertion
order.  A token is never handed out early.

Insert and cancel are O(1); deadlines from now to at least 30 days ahead sit in
the wheel levels (about 795 days with the default 1 ms tick) and later ones in
an overflow list that migrates in as time passes.  A pending timer costs about
40-48 bytes (:attr:`TimingWheel.memory_bytes`).

A timer thread drives it like this (no wake-up can be lost between the two
calls: an insert that brings an earlier deadline changes the generation, and a
wait on a stale generation returns at once)::

    while not wheel.closed:
        deadline, generation = wheel.next_deadline_ns()
        timeout = None if deadline is None else max(0, deadline - clock.now_ns()) / 1e9
        if timeout and wheel.wait(generation, timeout):
            continue  # an earlier deadline arrived, or the wheel closed
        for token in wheel.advance_ns(clock.now_ns()):
            ...

THREADS.  Every method may be called from any number of threads at once; the
C wheel has its own mutex and nothing here relies on the GIL.  Each instance
keeps preallocated output buffers for the results of the C calls; ``_lock``
guards them from the C call that fills them until ``ffi.unpack`` has copied
them out (under free-threaded CPython two threads could otherwise overwrite
each other's results).  :meth:`TimingWheel.wait` uses no buffer and never
holds that lock while it sleeps.
"""

from __future__ import annotations

import math
import threading
import time

from taskrunner.errors import UnknownTokenError
from taskrunner.native.binding import CLOSED, OK, TIMEOUT, TOKEN_MAX, check, ffi, lib, timeout_ns

__all__ = ["TimingWheel"]

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
#: The most timers one ``advance`` call hands back (the size of its result buffers).
MAX_BATCH = 1 << 20

_new = lib.tr_wheel_new
_free = lib.tr_wheel_free
_insert = lib.tr_wheel_insert
_cancel = lib.tr_wheel_cancel
_advance = lib.tr_wheel_advance
_next_deadline = lib.tr_wheel_next_deadline
_wait = lib.tr_wheel_wait
_kick = lib.tr_wheel_kick
_len = lib.tr_wheel_len
_now = lib.tr_wheel_now
_memory = lib.tr_wheel_memory
_waiters = lib.tr_wheel_waiters
_close = lib.tr_wheel_close
_is_closed = lib.tr_wheel_is_closed

_NOT_FOUND: int = lib.TR_NOT_FOUND


def _int64(value: object, what: str) -> int:
    """``value`` as an int in the int64 range, or a clear TypeError/ValueError."""
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{what} must be an int (nanoseconds), not {type(value).__name__}")
        value = int(value)
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"{what} must fit in a signed 64-bit integer, got {value}")
    return value


def _seconds(value: object, what: str) -> float:
    """``value`` as a finite, non-negative number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{what} must be finite, got {value}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")
    return float(value)


def _token(token: object) -> int:
    if type(token) is int and 0 <= token <= TOKEN_MAX:
        return token
    if isinstance(token, bool) or not isinstance(token, int):
        raise TypeError(f"token must be an int, not {type(token).__name__}")
    if not 0 <= token <= TOKEN_MAX:
        raise ValueError(f"token must be in [0, 2**64), got {token}")
    return int(token)


class TimingWheel:
    """A hierarchical timing wheel of integer tokens with nanosecond deadlines.

    ``tick`` (seconds, default 1 ms) is the wheel's bucket width: it sets how
    far the levels reach (at least 30 days whatever the tick) and how deadlines
    are grouped, never how precisely they fire.  ``start_ns`` is the wheel's
    initial current time, on the caller's clock (default
    ``time.monotonic_ns()``).  ``batch`` is the size of the preallocated
    result buffers: advancing hands out at most this many tokens per C call.
    """

    __slots__ = ("__weakref__", "_dl", "_dlp", "_genp", "_lock", "_n", "_out", "_tick_ns", "_w")

    def __init__(self, tick: float = 0.001, *, start_ns: int | None = None, batch: int = 1024):
        tick = _seconds(tick, "tick")
        if tick * 1e9 > INT64_MAX:
            raise ValueError(f"tick is too long: {tick!r} s")
        tick_ns = round(tick * 1e9)
        if tick_ns < 1:
            raise ValueError(f"tick must be at least 1 ns, got {tick!r} s")
        start = time.monotonic_ns() if start_ns is None else _int64(start_ns, "start_ns")
        if isinstance(batch, bool) or not isinstance(batch, int):
            raise TypeError(f"batch must be an int, not {type(batch).__name__}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if batch > MAX_BATCH:
            raise ValueError(f"batch must be <= {MAX_BATCH}, got {batch}")
        out = ffi.new("tr_wheel **")
        check(_new(tick_ns, start, out), "TimingWheel")
        self._w = ffi.gc(out[0], _free)
        self._tick_ns: int = tick_ns
        # _lock guards the result buffers below between the C call that fills
        # them and the unpack that copies them out; nothing else.
        self._lock = threading.Lock()
        self._out = ffi.new("uint64_t[]", batch)
        self._dl = ffi.new("int64_t[]", batch)
        self._n = ffi.new("size_t *")
        self._dlp = ffi.new("int64_t *")
        self._genp = ffi.new("uint64_t *")

    # ---- scheduling ------------------------------------------------------------------------

    def insert_ns(self, token: int, deadline_ns: int) -> None:
        """Schedule ``token`` to be due at ``deadline_ns`` (any int64; the past is due now).

        Raises DuplicateTokenError if the token is pending, ClosedError after close().
        """
        if type(token) is not int or not 0 <= token <= TOKEN_MAX:
            token = _token(token)
        if type(deadline_ns) is not int or not INT64_MIN <= deadline_ns <= INT64_MAX:
            deadline_ns = _int64(deadline_ns, "deadline_ns")
        status = _insert(self._w, token, deadline_ns)
        if status != OK:
            check(status, "TimingWheel.insert")

    def insert_after(self, token: int, delay: float) -> int:
        """Schedule ``token`` ``delay`` seconds after the wheel's current time.

        Returns the deadline in ns (saturated at the int64 maximum).  ``delay``
        must be a finite number >= 0.
        """
        delay_ns = _seconds(delay, "delay") * 1e9
        now = int(_now(self._w))
        deadline = INT64_MAX if delay_ns >= INT64_MAX - now else now + round(delay_ns)
        self.insert_ns(token, deadline)
        return deadline

    def cancel(self, token: int) -> None:
        """Unschedule a pending token; UnknownTokenError if it is not pending
        (never inserted, cancelled, or already handed out by an advance)."""
        status = _cancel(self._w, _token(token))
        if status != OK:
            raise UnknownTokenError(f"TimingWheel.cancel: token {token} is not pending")

    def discard(self, token: int) -> bool:
        """Unschedule ``token`` if it is pending; returns whether it was."""
        status = _cancel(self._w, _token(token))
        if status not in (OK, _NOT_FOUND):
            check(status, "TimingWheel.discard")
        return bool(status == OK)

    # ---- firing ----------------------------------------------------------------------------

    def advance_ns(self, now_ns: int, max: int | None = None) -> list[int]:
        """Move the current time to ``now_ns`` (never back) and remove the due tokens.

        Returns up to ``max`` tokens (all that are due when None), earliest
        deadline first, ties in insertion order; the rest stay due for the next
        call.  ``max=0`` only moves the time.
        """
        if type(now_ns) is not int or not INT64_MIN <= now_ns <= INT64_MAX:
            now_ns = _int64(now_ns, "now_ns")
        if max is None:
            out, n = self._out, self._n
            cap = len(out)
            with self._lock:
                check(_advance(self._w, now_ns, out, ffi.NULL, cap, n), "TimingWheel.advance")
                got = n[0]
                tokens: list[int] = ffi.unpack(out, got)
                while got == cap:
                    check(_advance(self._w, now_ns, out, ffi.NULL, cap, n), "TimingWheel.advance")
                    got = n[0]
                    tokens += ffi.unpack(out, got)
            return tokens
        return self._take(now_ns, max, False)[0]

    def advance_with_deadlines_ns(
        self, now_ns: int, max: int | None = None
    ) -> list[tuple[int, int]]:
        """Like :meth:`advance_ns`, but returns ``(token, deadline_ns)`` pairs."""
        if type(now_ns) is not int or not INT64_MIN <= now_ns <= INT64_MAX:
            now_ns = _int64(now_ns, "now_ns")
        tokens, deadlines = self._take(now_ns, max, True)
        return list(zip(tokens, deadlines, strict=True))

    def _take(self, now_ns: int, limit: int | None, deadlines: bool) -> tuple[list[int], list[int]]:
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int):
                raise TypeError(f"max must be an int or None, not {type(limit).__name__}")
            if limit < 0:
                raise ValueError(f"max must be >= 0, got {limit}")
        out, dl, n = self._out, self._dl, self._n
        cap = len(out)
        tokens: list[int] = []
        times: list[int] = []
        with self._lock:
            while True:
                want = cap if limit is None else min(cap, limit - len(tokens))
                status = _advance(self._w, now_ns, out, dl if deadlines else ffi.NULL, want, n)
                check(status, "TimingWheel.advance")
                got = n[0]
                tokens += ffi.unpack(out, got)
                if deadlines:
                    times += ffi.unpack(dl, got)
                if got < want or want == 0 or len(tokens) == limit:
                    return tokens, times

    # ---- waiting ---------------------------------------------------------------------------

    def next_deadline_ns(self) -> tuple[int | None, int]:
        """``(earliest pending deadline in ns or None, wake-up generation)``.

        The deadline is exact (not rounded to a tick); advancing to it hands
        the token out.  Pass the generation to :meth:`wait`.
        """
        with self._lock:
            status = _next_deadline(self._w, self._dlp, self._genp)
            generation = int(self._genp[0])
            deadline = int(self._dlp[0]) if status == OK else None
        return deadline, generation

    def wait(self, generation: int, timeout: float | None = None) -> bool:
        """Sleep (GIL released) until the generation differs from ``generation``,
        ``timeout`` seconds pass (None: no limit), or the wheel is closed.

        Returns True when woken by a change (an insert earlier than the deadline
        last reported by :meth:`next_deadline_ns`, a :meth:`kick`, or
        :meth:`close`: check :attr:`closed`), False on timeout.  Returns at once
        if the generation already differs.
        """
        if type(generation) is not int or not 0 <= generation <= TOKEN_MAX:
            if isinstance(generation, bool) or not isinstance(generation, int):
                raise TypeError(f"generation must be an int, not {type(generation).__name__}")
            raise ValueError(f"generation must be in [0, 2**64), got {generation}")
        status = _wait(self._w, generation, timeout_ns(timeout))
        if status in (OK, CLOSED):
            return True
        if status == TIMEOUT:
            return False
        check(status, "TimingWheel.wait")
        return False  # pragma: no cover - check() raised

    def kick(self) -> None:
        """Wake every waiter as if the next deadline had changed."""
        _kick(self._w)

    def close(self) -> None:
        """Refuse further inserts and wake every waiter (idempotent).  Pending
        timers stay: advance, cancel and the queries keep working."""
        _close(self._w)

    # ---- queries ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return bool(_is_closed(self._w))

    @property
    def tick_ns(self) -> int:
        """The tick length in nanoseconds."""
        return self._tick_ns

    @property
    def now_ns(self) -> int:
        """The wheel's current time: the latest ``now_ns`` advanced to, or ``start_ns``."""
        return int(_now(self._w))

    @property
    def memory_bytes(self) -> int:
        """Bytes the C wheel holds (node pool, index, slots); kept for reuse when timers leave."""
        return int(_memory(self._w))

    @property
    def waiters(self) -> int:
        """Threads blocked in :meth:`wait` right now."""
        return int(_waiters(self._w))

    def __len__(self) -> int:
        return int(_len(self._w))

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<TimingWheel {state} tick={self._tick_ns}ns pending={len(self)}>"
