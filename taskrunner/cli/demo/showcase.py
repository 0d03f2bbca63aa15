"""The runtime showcase the demo runs on its own pool while the jobs run:
priorities, a sequence, backpressure, delayed and repeating tasks.
"""

from __future__ import annotations

import dataclasses
import random
import statistics
import threading
import time

from taskrunner.cli.console import Progress
from taskrunner.errors import QueueFullError
from taskrunner.runtime.pool import ThreadPool
from taskrunner.runtime.runners.sequenced import SequencedTaskRunner
from taskrunner.runtime.runners.single_thread import QueuePolicy, SingleThreadTaskRunner
from taskrunner.runtime.traits import TaskPriority, TaskTraits

# ---------------------------------------------------------------- the runtime showcase


@dataclasses.dataclass(slots=True)
class Check:
    what: str
    detail: str
    ok: bool | None  # None: a figure, not a promise


class Counter:
    """A thread-safe count with a wait."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.value = 0

    def add(self, n: int = 1) -> None:
        with self._cond:
            self.value += n
            self._cond.notify_all()

    def wait_for(self, target: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.value >= target, timeout)


def runtime_showcase(pool: ThreadPool, progress: Progress, rng: random.Random) -> list[Check]:
    """Exercise the runners in this process; returns what was checked and measured."""
    checks: list[Check] = []
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        progress.update("runtime", done[0])

    checks.append(_priorities(rng))
    advance(_PRIORITY_TASKS)
    progress.event("runtime: 3,000 tasks of mixed priority ran on a 2-worker pool")
    checks.append(_sequenced(pool))
    advance(_SEQUENCE_TASKS)
    checks.extend(_bounded(pool))
    advance(_BOUNDED_TASKS * 2)
    progress.event("runtime: the bounded single-thread runner pushed back on a fast producer")
    checks.extend(_delayed(pool, rng))
    advance(_DELAYED_TASKS)
    progress.event("runtime: delayed tasks fired (a quarter were cancelled first)")
    return checks


_PRIORITY_TASKS = 3000
_SEQUENCE_TASKS = 2000
_BOUNDED_TASKS = 300
_DELAYED_TASKS = 1000
RUNTIME_TASKS = _PRIORITY_TASKS + _SEQUENCE_TASKS + 2 * _BOUNDED_TASKS + _DELAYED_TASKS


def _priorities(rng: random.Random) -> Check:
    """Queue tasks of three priorities before the pool starts; see in what order they start."""
    levels = [TaskPriority(i % 3) for i in range(_PRIORITY_TASKS)]
    rng.shuffle(levels)
    order = [0] * _PRIORITY_TASKS  # order[i]: when task i started (1 = first)
    started = [0]
    lock = threading.Lock()  # guards started and order

    def task(i: int) -> None:
        with lock:
            started[0] += 1
            order[i] = started[0]
        sum(range(300))  # a little work

    pool = ThreadPool(2, name="priorities", start=False)  # deferred start: queue first
    try:
        for i, level in enumerate(levels):
            pool.post_task(task, i, traits=TaskTraits(priority=level))
        pool.start()
        pool.wait_idle()
    finally:
        pool.shutdown()
    means = {
        level: statistics.mean(order[i] for i in range(_PRIORITY_TASKS) if levels[i] is level)
        for level in TaskPriority
    }
    b, v, e = (
        means[TaskPriority.USER_BLOCKING],
        means[TaskPriority.USER_VISIBLE],
        means[TaskPriority.BEST_EFFORT],
    )
    return Check(
        "priorities",
        f"mean start position: USER_BLOCKING {b:.0f}, USER_VISIBLE {v:.0f}, BEST_EFFORT {e:.0f}",
        b < v < e,
    )


def _sequenced(pool: ThreadPool) -> Check:
    seq = SequencedTaskRunner(pool, name="demo-sequence")
    seen: list[int] = []
    for i in range(_SEQUENCE_TASKS):
        seq.post_task(seen.append, i)
    seq.wait_idle()
    most = seq.stats()["max_concurrency_seen"]
    seq.shutdown()
    ok = seen == list(range(_SEQUENCE_TASKS)) and most == 1
    return Check(
        "sequenced runner",
        f"{len(seen):,} tasks on the pool ran in posting order, at most {most} at a time",
        ok,
    )


def _bounded(pool: ThreadPool) -> list[Check]:
    """A slow consumer (0.5 ms a task) behind 16 slots, fed as fast as possible."""

    def consume() -> None:
        time.sleep(0.0005)  # simulated device I/O

    checks = []
    single = SingleThreadTaskRunner(pool, capacity=16, policy=QueuePolicy.REJECT, name="reject")
    refused = 0
    for _ in range(_BOUNDED_TASKS):
        try:
            single.post_task(consume)
        except QueueFullError:
            refused += 1
    single.wait_idle()
    stats = single.stats()
    single.shutdown()
    ran = stats["completed"]
    checks.append(
        Check(
            "bounded runner, REJECT",
            f"capacity 16: {ran} ran, {refused} refused with QueueFullError "
            f"(counted: {stats['rejected']})",
            ran + refused == _BOUNDED_TASKS and refused == stats["rejected"] and refused > 0,
        )
    )
    single = SingleThreadTaskRunner(pool, capacity=16, policy=QueuePolicy.WAIT, name="wait")
    t0 = time.perf_counter()
    for _ in range(_BOUNDED_TASKS):
        single.post_task(consume)
    blocked = time.perf_counter() - t0
    single.wait_idle()
    stats = single.stats()
    single.shutdown()
    checks.append(
        Check(
            "bounded runner, WAIT",
            f"capacity 16: all {stats['completed']} ran; the producer was held to the "
            f"consumer's pace ({blocked * 1000:.0f} ms to post {_BOUNDED_TASKS})",
            stats["completed"] == _BOUNDED_TASKS and stats["rejected"] == 0,
        )
    )
    return checks


def _delayed(pool: ThreadPool, rng: random.Random) -> list[Check]:
    clock = pool.clock
    lateness: list[float] = []
    lock = threading.Lock()
    fired = Counter()
    cancelled_ran = [0]

    def fire(due_ns: int, cancelled: bool) -> None:
        late_ms = (clock.now_ns() - due_ns) / 1e6
        with lock:
            lateness.append(late_ms)
            if cancelled:
                cancelled_ran[0] += 1
        fired.add()

    handles = []
    for i in range(_DELAYED_TASKS):
        delay = rng.uniform(0.05, 1.0)
        due = clock.now_ns() + int(delay * 1e9)
        handles.append(pool.post_delayed_task(fire, delay, due, i % 4 == 0))
    cancelled = sum(1 for h in handles[::4] if h.cancel())
    expected = _DELAYED_TASKS - cancelled
    complete = fired.wait_for(expected, 20.0)
    pool.wait_idle(5.0)
    with lock:
        late = sorted(lateness)
        ran_cancelled = cancelled_ran[0]
    early = sum(1 for x in late if x < 0)
    p50 = late[len(late) // 2] if late else float("nan")
    p99 = late[min(len(late) - 1, int(len(late) * 0.99))] if late else float("nan")
    return [
        Check(
            "delayed tasks",
            f"{len(late)} of {expected} fired, none early ({early} early); "
            f"{cancelled} cancelled, {ran_cancelled} of those ran",
            complete and len(late) == expected and early == 0 and ran_cancelled == 0,
        ),
        Check("delayed lateness", f"p50 {p50:.2f} ms, p99 {p99:.2f} ms after the due time", None),
    ]
