"""Free-threading: every task is accounted for exactly once while 8 threads race.

Under free-threaded CPython (3.14t) the GIL protects nothing, and on every
build cffi releases the GIL around each call into the C core.  These tests
drive one pool (then sequenced, parallel and single-thread runners) from 8
threads that post, cancel and shut down at once, and then check a ledger the
test keeps itself against what the runtime says happened:

* every task that was posted ran exactly once, or was cancelled exactly once
  (one ``cancel()`` returned True), or was dropped; never two of these;
* the handle's final state says the same, and so do the counters in
  ``stats()`` and the :class:`ShutdownReport`;
* a post that raised (closed runner, full queue) never ran.

The ledger records runs by appending to a ``deque`` (an atomic append on every
build), so a task run twice shows up as two entries even when the two runs
overlap; :func:`test_the_audit_catches_double_runs_and_lying_cancels` checks
that the audit does catch that.

The last tests check the build itself: on a free-threaded interpreter,
importing taskrunner must leave the GIL disabled, and the extension must be
built without the limited API.
"""

from __future__ import annotations

import collections
import functools
import itertools
import os
import random
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from taskrunner import (
    QueueFullError,
    QueuePolicy,
    RunnerClosedError,
    ShutdownBehavior,
    ShutdownReport,
    SingleThreadTaskRunner,
    Task,
    TaskPriority,
    TaskState,
    TaskTraits,
    ThreadPool,
)
from taskrunner.runtime.clock import MONOTONIC
from taskrunner.runtime.delays import DelayedTasks
from taskrunner.runtime.runners.sequenced import ParallelTaskRunner, SequencedTaskRunner

THREADS = 8
WAIT = 60.0  # a bound for things that should happen at once; only a hang reaches it
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
RAN = (TaskState.SUCCEEDED, TaskState.FAILED)
# Traits the posters pick from: every priority, the blocking group, a capped
# category, and BLOCK_SHUTDOWN (which shutdown must run, never drop).
TRAITS = (
    TaskTraits(priority=TaskPriority.BEST_EFFORT),
    TaskTraits(priority=TaskPriority.USER_VISIBLE),
    TaskTraits(priority=TaskPriority.USER_BLOCKING),
    TaskTraits(may_block=True),
    TaskTraits(category="db"),
    TaskTraits(shutdown_behavior=ShutdownBehavior.BLOCK_SHUTDOWN),
)
_names = itertools.count()


def unique(prefix: str) -> str:
    """A runner name no other test (or parallel copy of this one) uses."""
    return f"{prefix}{next(_names)}"


class PlannedError(Exception):
    """The failure a task was posted to raise."""


# ---- the ledger and its audit --------------------------------------------------------------


@dataclass
class Ledger:
    """What the test itself saw, kept apart from what the runtime reports.

    Every per-id list slot is written by one thread only (the poster that owns
    the id); the deques are appended to by any thread (atomic appends).
    """

    size: int
    handles: list[Task | None] = field(init=False)
    refused: list[bool] = field(init=False)  # the post raised: the task must never run
    planned_failure: list[bool] = field(init=False)
    delayed: list[bool] = field(init=False)
    traits: list[TaskTraits | None] = field(init=False)
    runs: collections.deque[int] = field(default_factory=collections.deque)
    cancel_wins: collections.deque[int] = field(default_factory=collections.deque)
    handler_calls: collections.deque[int] = field(default_factory=collections.deque)
    thread_errors: collections.deque[BaseException] = field(default_factory=collections.deque)

    def __post_init__(self) -> None:
        self.handles = [None] * self.size
        self.refused = [False] * self.size
        self.planned_failure = [False] * self.size
        self.delayed = [False] * self.size
        self.traits = [None] * self.size

    def work(self, i: int, fail: bool) -> None:
        """The body of task ``i``: note the run (and a little CPU work)."""
        self.runs.append(i)
        sum(range(64))
        if fail:
            raise PlannedError(i)

    def recent(self, rng: random.Random, i: int, per_thread: int) -> int:
        """The id of a task some thread (any) posted lately, while ``i`` is being
        posted: likely still pending, so a cancel has something to race."""
        back = min(i % per_thread, rng.randrange(16))
        return rng.randrange(THREADS) * per_thread + i % per_thread - back

    def try_cancel(self, j: int) -> None:
        handle = self.handles[j]
        if handle is not None and handle.cancel():
            self.cancel_wins.append(j)

    def cancel_from_task(self, i: int, j: int) -> None:
        """Task ``i``: cancel task ``j`` from a worker thread."""
        self.runs.append(i)
        self.try_cancel(j)

    def on_error(self, exc: BaseException, task: Task) -> None:
        if isinstance(exc, PlannedError):
            self.handler_calls.append(int(exc.args[0]))
        else:  # pragma: no cover - only a bug gets here
            self.thread_errors.append(exc)

    def guarded(self, body: Callable[[], None]) -> Callable[[], None]:
        """``body`` for a thread: an exception is recorded, not lost."""

        def run() -> None:
            try:
                body()
            except BaseException as exc:  # pragma: no cover - reported by audit()
                self.thread_errors.append(exc)

        return run

    def states(self) -> collections.Counter[TaskState]:
        return collections.Counter(h.state for h in self.handles if h is not None)


def run_threads(ledger: Ledger, body: Callable[[int], None]) -> None:
    """Run ``body(0)`` .. ``body(7)`` on 8 threads at once and join them."""
    threads = [
        threading.Thread(target=ledger.guarded(functools.partial(body, t)), name=f"ft-{t}")
        for t in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive(), f"{thread.name} hung"


def audit(ledger: Ledger) -> list[str]:
    """Every discrepancy between the ledger and the handles (empty: all accounted for)."""
    problems = [f"a thread raised {exc!r}" for exc in ledger.thread_errors]
    runs = collections.Counter(ledger.runs)
    wins = collections.Counter(ledger.cancel_wins)
    handled = collections.Counter(ledger.handler_calls)
    for i in range(ledger.size):
        handle = ledger.handles[i]
        ran, won = runs[i], wins[i]
        if handle is None:
            if ran or won:
                problems.append(f"task {i}: never posted (refused={ledger.refused[i]}) but ran")
            continue
        state = handle.state
        if state in RAN:
            if ran != 1 or won:
                problems.append(f"task {i}: {state.name} but ran {ran}x, cancel won {won}x")
            expected = TaskState.FAILED if ledger.planned_failure[i] else TaskState.SUCCEEDED
            if state is not expected:
                problems.append(f"task {i}: {state.name}, expected {expected.name}")
            if handled[i] != (1 if state is TaskState.FAILED else 0):
                problems.append(f"task {i}: {state.name}, error handler called {handled[i]}x")
        elif state is TaskState.CANCELLED:
            if ran or won != 1:
                problems.append(f"task {i}: CANCELLED but ran {ran}x, cancel won {won}x")
        elif state is TaskState.DROPPED:
            if ran or won:
                problems.append(f"task {i}: DROPPED but ran {ran}x, cancel won {won}x")
            traits = ledger.traits[i]
            blocks = traits is not None and traits.shutdown_behavior is _BLOCK
            if blocks and not ledger.delayed[i]:
                problems.append(f"task {i}: a queued BLOCK_SHUTDOWN task was dropped")
        else:
            problems.append(f"task {i}: still {state.name} after everything finished")
    return problems


_BLOCK = ShutdownBehavior.BLOCK_SHUTDOWN


# ---- the pool stress ---------------------------------------------------------------------


def post_one(pool: ThreadPool, ledger: Ledger, rng: random.Random, i: int) -> None:
    """Post task ``i`` of some random kind; record the handle or the refusal."""
    fail = rng.random() < 0.05
    ledger.planned_failure[i] = fail
    kind = rng.random()
    try:
        if kind < 0.15:
            ledger.delayed[i] = True
            handle = pool.post_delayed_task(ledger.work, rng.uniform(0.0002, 0.003), i, fail)
        elif kind < 0.40:
            traits = rng.choice(TRAITS)
            ledger.traits[i] = traits
            handle = pool.post_task(ledger.work, i, fail, traits=traits)
        elif kind < 0.45:
            ledger.planned_failure[i] = False
            handle = pool.post_task(ledger.cancel_from_task, i, rng.randrange(ledger.size))
        else:
            handle = pool.post_task(ledger.work, i, fail)
    except RunnerClosedError:
        ledger.refused[i] = True
        raise
    ledger.handles[i] = handle


def stress_pool(
    pool: ThreadPool,
    ledger: Ledger,
    per_thread: int,
    *,
    seed: int,
    after_posting: Callable[[int, bool], None] = lambda n, last: None,
) -> None:
    """8 threads post ``per_thread`` tasks each and cancel random ones, any thread's.

    ``after_posting(n, last)`` runs on the poster after each post: ``n`` posts
    so far in all, ``last`` when it was this poster's last one."""
    start = threading.Barrier(THREADS)
    posted = itertools.count(1).__next__

    def poster(t: int) -> None:
        rng = random.Random(seed * 1000 + t)
        start.wait(WAIT)
        for i in range(t * per_thread, (t + 1) * per_thread):
            try:
                post_one(pool, ledger, rng, i)
            except RunnerClosedError:
                return
            after_posting(posted(), i == (t + 1) * per_thread - 1)
            if rng.random() < 0.3:
                ledger.try_cancel(ledger.recent(rng, i, per_thread))

    run_threads(ledger, poster)


def make_pool(ledger: Ledger, workers: int = 4) -> ThreadPool:
    return ThreadPool(
        workers,
        name=unique("ft"),
        error_handler=ledger.on_error,
        category_limits={"db": 2},
        max_blocking_workers=4,
        best_effort_limit=1,
    )


def test_eight_threads_post_cancel_and_run_on_one_pool() -> None:
    """No shutdown race: afterwards the counters in stats() match the handles exactly."""
    per_thread = 1500
    ledger = Ledger(THREADS * per_thread)
    pool = make_pool(ledger).start()
    try:
        stress_pool(pool, ledger, per_thread, seed=1)
        for handle in ledger.handles:
            assert handle is not None and handle.wait(WAIT), "a task never finished"
        assert pool.wait_idle(WAIT)
        stats = pool.stats()
    finally:
        report = pool.shutdown(timeout=WAIT)
    assert audit(ledger) == []
    states = ledger.states()
    assert sum(states.values()) == ledger.size
    assert states[TaskState.CANCELLED] > 0 and states[TaskState.FAILED] > 0  # both paths ran
    assert stats["completed"] == states[TaskState.SUCCEEDED]
    assert stats["failed"] == states[TaskState.FAILED]
    assert stats["cancelled"] == states[TaskState.CANCELLED]
    assert stats["dropped"] == states[TaskState.DROPPED] == 0
    assert stats["queued_total"] == 0 and stats["running"] == 0
    assert stats["delayed_pending"] == 0
    assert report is not None and report.drained and report.dropped == 0


@pytest.mark.parametrize("cancel_pending", [True, False], ids=["forceful", "graceful"])
def test_shutdown_racing_posters_and_cancellers_loses_nothing(cancel_pending: bool) -> None:
    """Shutdown starts while 8 threads still post and cancel: every handle the
    posters got ends final, ran at most once, and the report counts the drops."""
    per_thread = 1500
    ledger = Ledger(THREADS * per_thread)
    pool = make_pool(ledger, workers=2).start()
    # A few tasks far in the future, so shutdown certainly has delayed tasks to drop.
    far = [pool.post_delayed_task(ledger.work, 60.0, -1, False) for _ in range(THREADS)]
    halfway = threading.Event()
    shut = threading.Event()
    holder = threading.Lock()  # taken (for good) by the one poster that waits for shutdown
    reports: list[ShutdownReport | None] = []

    def after_posting(n: int, last: bool) -> None:
        if n == THREADS * per_thread // 4:
            halfway.set()
        # One poster with posts left waits for shutdown to return, so that at least
        # one post certainly races it, however the threads are scheduled.
        if n >= THREADS * per_thread // 2 and not last and holder.acquire(blocking=False):
            shut.wait(WAIT)

    def shut_down() -> None:
        halfway.wait(WAIT)
        try:
            reports.append(pool.shutdown(timeout=0.01, cancel_pending=cancel_pending))
        finally:
            shut.set()

    closer = threading.Thread(target=ledger.guarded(shut_down))
    closer.start()
    stress_pool(pool, ledger, per_thread, seed=2, after_posting=after_posting)
    closer.join(WAIT)
    assert not closer.is_alive(), "shutdown hung"
    report = reports[0]
    assert report is not None and pool.is_closed and pool.shutdown() is report
    # The 10 ms timeout bounds the whole shutdown: workers it stopped waiting for
    # (still_running) may still drop what they had taken.  Let them end.
    for thread in threading.enumerate():
        if thread.name.startswith(f"{pool.name}-"):
            thread.join(WAIT)

    assert audit(ledger) == []
    assert all(h.state is TaskState.DROPPED for h in far)
    states = ledger.states()
    stats = pool.stats()
    assert stats["completed"] == states[TaskState.SUCCEEDED]
    assert stats["failed"] == states[TaskState.FAILED]
    assert stats["cancelled"] == states[TaskState.CANCELLED]
    # The report counts every task shutdown dropped, the far ones included (by
    # the time it returned, when it left workers running); stats() counts the
    # same drops, and refused posts are neither.
    if report.still_running == 0:
        assert report.dropped == states[TaskState.DROPPED] + len(far), (report, dict(states))
    else:
        assert report.dropped <= states[TaskState.DROPPED] + len(far), (report, dict(states))
    assert stats["dropped"] == states[TaskState.DROPPED] + len(far), (stats, dict(states))
    assert stats["queued_total"] == 0 and stats["running"] == 0
    assert any(ledger.refused), "no post raced the shutdown: the test proved nothing"


def test_wait_never_misses_a_finish() -> None:
    """Waiters race the workers finishing their tasks: a lost wake-up would
    show as a wait that times out (Task.wait's store-then-load handshake)."""
    ledger = Ledger(THREADS * 300)
    pool = make_pool(ledger).start()
    missed: collections.deque[int] = collections.deque()
    try:

        def waiter(t: int) -> None:
            for i in range(t * 300, (t + 1) * 300):
                handle = pool.post_task(ledger.work, i, False)
                ledger.handles[i] = handle
                if not handle.wait(WAIT):
                    missed.append(i)

        run_threads(ledger, waiter)
    finally:
        pool.shutdown(timeout=WAIT)
    assert list(missed) == []
    assert audit(ledger) == []


def test_the_audit_catches_double_runs_and_lying_cancels() -> None:
    """The audit is able to fail: a task body that runs twice, and a cancel()
    that claims a win it did not have, are both reported."""
    ledger = Ledger(40)
    pool = make_pool(ledger, workers=2).start()

    def run_twice(i: int) -> None:  # what a pool that ran a task twice would look like
        ledger.work(i, False)
        ledger.work(i, False)

    try:
        for i in range(40):
            if i == 7:
                handle = pool.post_task(run_twice, 7)
            else:
                handle = pool.post_task(ledger.work, i, False)
            ledger.handles[i] = handle
        assert pool.wait_idle(WAIT)
        ledger.cancel_wins.append(11)  # a cancel() that "won" after the task ran
        ledger.runs.append(39)  # a second run of task 39, as if a worker ran it again
        assert ledger.handles[39] is not None
    finally:
        pool.shutdown(timeout=WAIT)
    problems = audit(ledger)
    assert any(p.startswith("task 7: SUCCEEDED but ran 2x") for p in problems), problems
    assert any(p.startswith("task 11: SUCCEEDED but ran 1x, cancel won 1x") for p in problems)
    assert any(p.startswith("task 39: SUCCEEDED but ran 2x") for p in problems)
    assert len(problems) == 3, problems


# ---- runners -------------------------------------------------------------------------------


def test_sequences_and_a_parallel_runner_from_eight_threads() -> None:
    """8 threads post to 4 sequences and a ParallelTaskRunner(3) on one pool:
    no sequence ever runs two tasks at once or reorders one poster's tasks,
    the parallel runner never exceeds 3, and every task is accounted for."""
    per_thread = 800
    ledger = Ledger(THREADS * per_thread)
    pool = make_pool(ledger).start()
    seqs: list[SequencedTaskRunner | ParallelTaskRunner] = [
        SequencedTaskRunner(pool, name=unique("ftseq"), budget=0.0005) for _ in range(4)
    ]
    seqs.append(ParallelTaskRunner(pool, 3, name=unique("ftpar")))
    caps = [1, 1, 1, 1, 3]
    lock = threading.Lock()
    inflight = [0] * len(seqs)  # guarded by lock
    peak = [0] * len(seqs)  # guarded by lock
    order: list[collections.deque[tuple[int, int]]] = [collections.deque() for _ in seqs]
    runner_of = [0] * ledger.size

    def task(k: int, poster: int, n: int, i: int, fail: bool) -> None:
        with lock:
            inflight[k] += 1
            peak[k] = max(peak[k], inflight[k])
        order[k].append((poster, n))
        try:
            ledger.work(i, fail)
        finally:
            with lock:
                inflight[k] -= 1

    def poster(t: int) -> None:
        rng = random.Random(3000 + t)
        for n, i in enumerate(range(t * per_thread, (t + 1) * per_thread)):
            k = rng.randrange(len(seqs))
            runner_of[i] = k
            fail = rng.random() < 0.05
            ledger.planned_failure[i] = fail
            if rng.random() < 0.1:
                ledger.delayed[i] = True
                delay = rng.uniform(0.0002, 0.002)
                handle = seqs[k].post_delayed_task(task, delay, k, t, n, i, fail)
            else:
                handle = seqs[k].post_task(task, k, t, n, i, fail)
            ledger.handles[i] = handle
            if rng.random() < 0.3:
                ledger.try_cancel(ledger.recent(rng, i, per_thread))

    try:
        run_threads(ledger, poster)
        for handle in ledger.handles:
            assert handle is not None and handle.wait(WAIT), "a task never finished"
        for runner in seqs:
            assert runner.wait_idle(WAIT)
        runner_stats = [runner.stats() for runner in seqs]
        pool_stats = pool.stats()
    finally:
        pool.shutdown(timeout=WAIT)

    assert audit(ledger) == []
    assert peak[:4] == [1, 1, 1, 1], "a sequence ran two tasks at once"
    assert 1 <= peak[4] <= 3
    for k in range(4):  # a sequence keeps each poster's immediate tasks in order
        immediate = [(p, n) for p, n in order[k] if not ledger.delayed[p * per_thread + n]]
        for p in range(THREADS):
            mine = [n for q, n in immediate if q == p]
            assert mine == sorted(mine), f"sequence {k} reordered poster {p}'s tasks"
    runs = collections.Counter(ledger.runs)
    for k, stats in enumerate(runner_stats):
        ran_here = sum(runs[i] for i in range(ledger.size) if runner_of[i] == k)
        assert stats["completed"] == ran_here
        assert stats["queued"] == 0 and stats["running"] == 0
        assert stats["max_concurrency_seen"] <= caps[k]
    assert pool_stats["cancelled"] == ledger.states()[TaskState.CANCELLED]


@pytest.mark.parametrize("policy", list(QueuePolicy), ids=lambda p: p.value)
def test_single_thread_runner_from_eight_threads(policy: QueuePolicy) -> None:
    """8 threads post to one bounded SingleThreadTaskRunner: tasks run on its
    thread (or the poster's, for CALLER_RUNS) in each poster's order, and every
    rejection is counted once."""
    per_thread = 400
    ledger = Ledger(THREADS * per_thread)
    pool = ThreadPool(2, name=unique("ftst"), error_handler=ledger.on_error).start()
    st = SingleThreadTaskRunner(pool, capacity=8, policy=policy, name=unique("ftst"))
    where: list[int] = [0] * ledger.size  # the thread each task ran on
    order: collections.deque[tuple[int, int]] = collections.deque()
    raised: collections.deque[int] = collections.deque()

    def task(poster: int, n: int, i: int, fail: bool) -> None:
        where[i] = threading.get_ident()
        if where[i] == runner_ident:
            order.append((poster, n))
        ledger.work(i, fail)

    def poster(t: int) -> None:
        rng = random.Random(4000 + t)
        for n, i in enumerate(range(t * per_thread, (t + 1) * per_thread)):
            fail = rng.random() < 0.05
            ledger.planned_failure[i] = fail
            try:
                ledger.handles[i] = st.post_task(task, t, n, i, fail)
            except QueueFullError:
                ledger.refused[i] = True
                raised.append(i)
            if rng.random() < 0.2:
                ledger.try_cancel(ledger.recent(rng, i, per_thread))

    runner_ident = st.thread.ident
    try:
        run_threads(ledger, poster)
        for handle in ledger.handles:
            assert handle is None or handle.wait(WAIT), "a task never finished"
        assert st.wait_idle(WAIT)
        stats = st.stats()
        rejected = st.rejected_count
    finally:
        st.shutdown()
        pool.shutdown(timeout=WAIT)

    assert audit(ledger) == []
    states = ledger.states()
    ran = set(ledger.runs)
    on_posters = sum(1 for i in ran if where[i] != runner_ident)
    for p in range(THREADS):
        mine = [n for q, n in order if q == p]
        assert mine == sorted(mine), f"poster {p}'s tasks ran out of order"
    assert stats["completed"] == len(ran) - on_posters
    if policy is QueuePolicy.WAIT:
        assert rejected == 0 and not raised and on_posters == 0
        assert states[TaskState.DROPPED] == 0
    elif policy is QueuePolicy.REJECT:
        assert rejected == len(raised) and states[TaskState.DROPPED] == 0
    elif policy is QueuePolicy.CALLER_RUNS:
        assert rejected == on_posters and states[TaskState.DROPPED] == 0
    else:  # DROP_NEWEST, DROP_OLDEST: each rejection is one DROPPED handle
        assert rejected == states[TaskState.DROPPED] and not raised
    if policy is not QueuePolicy.CALLER_RUNS:
        assert on_posters == 0


# ---- lock discipline found by the audit ------------------------------------------------------


def test_repeating_task_posts_without_holding_its_lock() -> None:
    """A repeating task's post may run it at once on the posting thread (a full
    CALLER_RUNS runner); that run takes the schedule's lock, so the post must
    not hold it (it used to: a self-deadlock)."""
    pool = ThreadPool(1, name=unique("ftrep")).start()
    st = SingleThreadTaskRunner(
        pool, capacity=2, policy=QueuePolicy.CALLER_RUNS, name=unique("ftrep")
    )
    gate, started, ran = threading.Event(), threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        gate.wait(WAIT)

    st.post_task(hold)
    try:
        assert started.wait(WAIT)
        st.post_task(lambda: None)
        st.post_task(lambda: None)  # the ring is full: the next post runs here
        handles: list[Any] = []
        starter = threading.Thread(
            target=lambda: handles.append(st.post_repeating_task(ran.set, 60.0, initial_delay=0)),
            daemon=True,
        )
        starter.start()
        starter.join(WAIT)
        assert not starter.is_alive(), "post_repeating_task deadlocked on its own lock"
        assert ran.is_set() and handles[0].runs == 1
        handles[0].stop()
        assert handles[0].is_stopped
    finally:
        gate.set()
        st.shutdown()
        pool.shutdown(timeout=WAIT)


def test_concurrent_starts_make_one_timer_thread() -> None:
    """DelayedTasks.start() from 8 threads at once starts one timer thread."""
    name = unique("ftdelays")
    delays = DelayedTasks(MONOTONIC, lambda tokens, deadlines, now: None, name=name)
    barrier = threading.Barrier(THREADS)

    def start() -> None:
        barrier.wait(WAIT)
        delays.start()

    threads = [threading.Thread(target=start) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        timers = [t for t in threading.enumerate() if t.name == f"{name}-timer"]
        assert len(timers) == 1
    finally:
        delays.close()
    delays.start()  # after close: a no-op
    assert [t for t in threading.enumerate() if t.name == f"{name}-timer"] == []


# ---- the build --------------------------------------------------------------------------------


def _import_and_report_gil() -> subprocess.CompletedProcess[str]:
    """Import the whole library in a fresh interpreter and print sys._is_gil_enabled().

    PYTHON_GIL is removed from the environment: forcing the GIL off would hide
    exactly the module that turns it back on.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    code = (
        "import sys, taskrunner, taskrunner.native._core, taskrunner.jobs, taskrunner.testing\n"
        "print(sys._is_gil_enabled())"
    )
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.skipif(
    not FREE_THREADED,
    reason="needs a free-threaded interpreter (Py_GIL_DISABLED); this build has the GIL",
)
def test_importing_taskrunner_leaves_the_gil_disabled() -> None:
    import taskrunner.native._core

    result = _import_and_report_gil()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", "importing taskrunner re-enabled the GIL"
    assert "global interpreter lock" not in result.stderr, result.stderr
    # The extension is built for this interpreter, without the limited API.
    assert ".abi3." not in os.path.basename(taskrunner.native._core.__file__)


def test_the_extension_uses_the_limited_api_only_with_a_gil() -> None:
    from taskrunner.native._build import ffibuilder

    kwds = ffibuilder._assigned_source[3]
    assert kwds["py_limited_api"] is (not FREE_THREADED)
