"""Delayed tasks: the C timing wheel and the one timer thread that drives it.

A delayed post inserts the task's token into the wheel at ``clock.now_ns() +
delay``.  The timer thread asks the wheel for its next deadline, sleeps in C
(GIL released) until that deadline plus the leeway or until an insert brings
an earlier one, then advances the wheel to the clock's "now" and hands every
due token to the pool in one batch, earliest deadline first.  Leeway lets
deadlines that fall close together fire in one wake-up.

With a clock that is not real (``taskrunner.testing.MockClock``) there is no
timer thread: the test environment calls :meth:`DelayedTasks.fire_due` as it
moves mock time forward.

Thread-safety: ``add``/``cancel`` may be called from any thread (the wheel has
its own lock).  The timer thread is the only caller of ``fire_due`` unless
there is no timer thread, in which case the single test thread driving the
mock clock is; ``_fire_lock`` guards that so two drivers cannot interleave
batches and reorder them.  ``start``/``close`` may race each other from any
threads: ``_thread_lock`` makes sure at most one timer thread is ever started.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from taskrunner.native.binding import CLOSED, EMPTY, OK, check, ffi, lib
from taskrunner.runtime.clock import Clock

log = logging.getLogger("taskrunner.delays")

_insert = lib.tr_wheel_insert
_cancel = lib.tr_wheel_cancel
_advance = lib.tr_wheel_advance
_next_deadline = lib.tr_wheel_next_deadline
_wait = lib.tr_wheel_wait

BATCH = 1024

# fire(tokens, deadlines_ns, now_ns): hands due tokens to the scheduler.
FireCallback = Callable[[list[int], list[int], int], None]


class DelayedTasks:
    """The pool's delayed-task queue (one wheel, at most one timer thread)."""

    def __init__(
        self,
        clock: Clock,
        fire: FireCallback,
        *,
        tick_ns: int = 1_000_000,
        leeway_ns: int = 0,
        name: str = "taskrunner",
    ) -> None:
        self._clock = clock
        self._fire = fire
        self._leeway_ns = leeway_ns
        self._name = name
        out = ffi.new("tr_wheel **")
        check(lib.tr_wheel_new(tick_ns, clock.now_ns(), out), "TimingWheel")
        self._w = ffi.gc(out[0], lib.tr_wheel_free)
        self.tick_ns = tick_ns
        # Guards fire_due() so batches are handed over one at a time, in order.
        self._fire_lock = threading.Lock()
        # Guards _thread and _closed: one timer thread at most, none after close.
        self._thread_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    # ---- posting side (any thread) ---------------------------------------

    def add(self, token: int, deadline_ns: int) -> int:
        """Schedule ``token``; returns the wheel's status (TR_OK or TR_CLOSED...)."""
        return int(_insert(self._w, token, deadline_ns))

    def cancel(self, token: int) -> bool:
        """Unschedule ``token``; False if it is not pending (fired or unknown)."""
        return bool(_cancel(self._w, token) == OK)

    def __len__(self) -> int:
        return int(lib.tr_wheel_len(self._w))

    @property
    def memory_bytes(self) -> int:
        return int(lib.tr_wheel_memory(self._w))

    def next_deadline_ns(self) -> int | None:
        out = ffi.new("int64_t *")
        if _next_deadline(self._w, out, ffi.NULL) != OK:
            return None
        return int(out[0])

    # ---- firing ---------------------------------------------------------------

    def fire_due(self, now_ns: int) -> int:
        """Advance the wheel to ``now_ns`` and hand every due token over, in
        deadline order.  Returns how many fired."""
        tokens_buf = ffi.new("uint64_t[]", BATCH)
        deadlines_buf = ffi.new("int64_t[]", BATCH)
        n = ffi.new("size_t *")
        total = 0
        with self._fire_lock:
            while True:
                check(_advance(self._w, now_ns, tokens_buf, deadlines_buf, BATCH, n), "advance")
                count = int(n[0])
                if count == 0:
                    break
                total += count
                self._fire(ffi.unpack(tokens_buf, count), ffi.unpack(deadlines_buf, count), now_ns)
                if count < BATCH:
                    break
        return total

    # ---- the timer thread --------------------------------------------------

    def start(self) -> None:
        """Start the timer thread (only for a real clock; idempotent, and a
        no-op after :meth:`close`)."""
        if not self._clock.is_real:
            return
        with self._thread_lock:
            if self._thread is not None or self._closed:
                return
            thread = threading.Thread(target=self._run, name=f"{self._name}-timer", daemon=True)
            self._thread = thread
            thread.start()

    def _run(self) -> None:
        lib.tr_set_thread_timer_slack(1000)  # 1 µs: precise timed waits
        w = self._w
        deadline = ffi.new("int64_t *")
        generation = ffi.new("uint64_t *")
        now_ns = self._clock.now_ns
        leeway = self._leeway_ns
        while True:
            status = _next_deadline(w, deadline, generation)
            if status == OK:
                # A timer is due once now >= its exact deadline; the leeway lets
                # the ones that follow within it fire in the same wake-up.
                timeout = deadline[0] + leeway - now_ns()
                if timeout > 0:
                    status = _wait(w, generation[0], timeout)
                    if status == CLOSED:
                        break
                    if status == OK:  # an earlier deadline arrived: re-read it
                        continue
                self._fire_safely(now_ns())
            elif status == EMPTY:
                if _wait(w, generation[0], -1) == CLOSED:
                    break
            else:
                break

    def _fire_safely(self, now_ns: int) -> int:
        try:
            return self.fire_due(now_ns)
        except Exception:  # pragma: no cover - a bug; keep the timer thread alive
            log.exception(
                "%s: the timer thread failed to fire due tasks",
                self._name,
                extra={"runner": self._name},
            )
            return 0

    def close(self, join_timeout: float | None = None) -> None:
        """Refuse further inserts, wake and join the timer thread."""
        with self._thread_lock:
            self._closed = True
            thread = self._thread
        lib.tr_wheel_close(self._w)
        if thread is not None and thread is not threading.current_thread():
            thread.join(join_timeout)
