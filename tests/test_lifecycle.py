"""The runtime's lifecycle: shutdown from anywhere (a worker, a runner's own task),
bounded by its timeout; caps on threads; start on construction; repeating tasks
after shutdown; and nothing kept alive once it is done (issue 15).

A test of a call that used to hang runs that call on a daemon thread and fails
when it does not return in time (``returns_within``), so the suite never hangs;
each such test also carries a ``pytest.mark.timeout`` as a second line.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from taskrunner import (
    ParallelTaskRunner,
    RunnerClosedError,
    SequencedTaskRunner,
    ShutdownBehavior,
    ShutdownReport,
    SingleThreadTaskRunner,
    TaskRunner,
    TaskState,
    TaskTraits,
    ThreadPool,
    current_task_runner,
)
from taskrunner.runtime.pool import MAX_WORKERS

WAIT = 10.0
# How long a shutdown that was given a timeout may take beyond it (the
# implementation's grace is 50 ms; the rest is slack for a loaded machine).
SLACK = 1.0
KINDS = ["pool", "sequenced", "parallel", "single_thread"]
RUNNER_KINDS = ["sequenced", "parallel", "single_thread"]
SKIP = TaskTraits(shutdown_behavior=ShutdownBehavior.SKIP_ON_SHUTDOWN)


def unique(prefix: str) -> str:
    """A pool name of this thread's own (pytest-run-parallel runs a test on 4 threads)."""
    return f"{prefix}{threading.get_ident()}"


def pool_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"{name}-")]


def make(kind: str, pool: ThreadPool) -> TaskRunner:
    if kind == "pool":
        return pool
    if kind == "sequenced":
        return SequencedTaskRunner(pool)
    if kind == "parallel":
        return ParallelTaskRunner(pool, 2)
    assert kind == "single_thread"
    return SingleThreadTaskRunner(pool)


def returns_within(seconds: float, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` on a daemon thread; a test failure (not a hang) if it
    has not returned after ``seconds``."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn(*args, **kwargs)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=run, name="returns-within", daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{getattr(fn, '__qualname__', fn)} hung (> {seconds} s)"
    if "error" in result:
        raise result["error"]
    return result.get("value")


# ---- 1. shutdown from a worker --------------------------------------------------------


@pytest.mark.timeout(60)
def test_shutdown_from_a_worker_closes_and_a_later_shutdown_finishes() -> None:
    name = unique("fromworker")
    pool = ThreadPool(1, name=name)
    outcome: dict[str, Any] = {}
    posted = threading.Event()
    ran: list[int] = []

    def closer() -> None:
        posted.wait(WAIT)
        try:
            outcome["report"] = pool.shutdown()
        except BaseException as exc:
            outcome["error"] = exc

    first = pool.post_task(closer)
    later = [pool.post_task(ran.append, i) for i in range(5)]
    posted.set()
    assert first.wait(WAIT)
    assert "error" not in outcome, outcome.get("error")
    inner = outcome["report"]
    assert isinstance(inner, ShutdownReport)
    assert inner.still_running >= 1  # the calling task itself
    assert pool.is_closed
    with pytest.raises(RunnerClosedError):
        pool.post_task(print)
    # The implicit shutdown of a with block (or any later call) gets the final report.
    final = returns_within(WAIT, pool.shutdown, timeout=WAIT)
    assert isinstance(final, ShutdownReport)
    assert final.drained and final.dropped == 0 and final.still_running == 0
    assert all(h.state is TaskState.SUCCEEDED for h in later)  # graceful: the queue ran
    assert ran == list(range(5))
    for t in pool_threads(name):
        t.join(WAIT)
    assert pool_threads(name) == []


@pytest.mark.timeout(60)
def test_shutdown_from_a_worker_inside_a_with_block() -> None:
    name = unique("withworker")

    def body() -> None:
        with ThreadPool(2, name=name) as pool:
            assert pool.submit(lambda: pool.shutdown(timeout=WAIT)).result(WAIT) is not None

    returns_within(WAIT, body)
    for t in pool_threads(name):
        t.join(WAIT)
    assert pool_threads(name) == []


@pytest.mark.timeout(60)
def test_a_second_shutdown_honours_its_own_timeout() -> None:
    pool = ThreadPool(1, name=unique("second"))
    started, release = threading.Event(), threading.Event()

    def blocker() -> None:
        started.set()
        release.wait(WAIT)

    pool.post_task(blocker)
    assert started.wait(WAIT)
    assert pool.shutdown(wait=False) is None  # the first call: finishes in the background
    t0 = time.monotonic()
    report = returns_within(WAIT, pool.shutdown, timeout=0.1)
    assert time.monotonic() - t0 < 0.1 + SLACK
    assert isinstance(report, ShutdownReport)
    assert report.timed_out and report.still_running == 1
    release.set()
    final = returns_within(WAIT, pool.shutdown)
    assert final.still_running == 0 and not final.timed_out


# ---- 2. shutdown from one of the runner's own tasks ------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cancel_pending", [False, True])
def test_shutdown_from_the_runners_own_task(kind: str, cancel_pending: bool) -> None:
    """``current_task_runner().shutdown()`` inside a task: no deadlock, no error; the
    runner closes at once and finishes shutting down after the calling task."""
    pool = ThreadPool(2, name=unique(f"own{kind}"))
    try:
        runner = make(kind, pool)
        outcome: dict[str, Any] = {}
        posted = threading.Event()
        done = threading.Event()
        ran: list[int] = []

        def closer() -> None:
            posted.wait(WAIT)
            try:
                outcome["report"] = current_task_runner().shutdown(cancel_pending=cancel_pending)
                outcome["closed"] = runner.is_closed
            except BaseException as exc:
                outcome["error"] = exc
            finally:
                done.set()

        first = runner.post_task(closer)
        # Queued behind the closer (on the pool they may run beside it).
        later = [runner.post_task(ran.append, i) for i in range(5)]
        posted.set()
        assert done.wait(5.0), "shutdown() from the runner's own task deadlocked"
        assert "error" not in outcome, outcome.get("error")
        report = outcome["report"]
        assert isinstance(report, ShutdownReport)
        assert report.still_running >= 1  # the calling task
        assert outcome["closed"]
        with pytest.raises(RunnerClosedError):
            runner.post_task(print)
        assert first.wait(WAIT) and first.state is TaskState.SUCCEEDED
        for h in later:
            assert h.wait(WAIT)
        if cancel_pending and kind in ("sequenced", "single_thread"):
            # The queue behind the caller was dropped at once.  (On the pool and the
            # parallel runner another worker may have run some of them before the call.)
            assert all(h.state is TaskState.DROPPED for h in later) and ran == []
        elif not cancel_pending:
            assert all(h.state is TaskState.SUCCEEDED for h in later)
            assert sorted(ran) == list(range(5))
        if kind != "pool":
            assert returns_within(WAIT, runner.wait_idle, WAIT)
            again = returns_within(WAIT, runner.shutdown, timeout=WAIT)
            assert again.still_running == 0
    finally:
        returns_within(WAIT, pool.shutdown, timeout=WAIT)


@pytest.mark.timeout(60)
def test_pool_shutdown_from_a_sequenced_task_lets_the_sequence_finish() -> None:
    pool = ThreadPool(1, name=unique("seqpool"))
    seq = SequencedTaskRunner(pool)
    ran: list[int] = []
    reports: list[Any] = []
    posted = threading.Event()

    def closer() -> None:
        posted.wait(WAIT)
        reports.append(pool.shutdown())

    seq.post_task(closer)
    for i in range(5):
        seq.post_task(ran.append, i)
    posted.set()
    final = returns_within(WAIT, pool.shutdown, timeout=WAIT)
    assert isinstance(reports[0], ShutdownReport)
    assert final.drained
    assert ran == list(range(5))


# ---- 3. a timeout bounds the whole shutdown -------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cancel_pending", [False, True])
def test_shutdown_returns_within_its_timeout_while_a_task_blocks(
    kind: str, cancel_pending: bool
) -> None:
    name = unique(f"bound{kind}")
    pool = ThreadPool(1, name=name)
    runner = make(kind, pool)
    started, release = threading.Event(), threading.Event()

    def blocker() -> None:
        started.set()
        release.wait(WAIT)

    stuck = runner.post_task(blocker, traits=SKIP)
    queued = runner.post_task(print, traits=SKIP)
    assert started.wait(WAIT)
    try:
        t0 = time.monotonic()
        report = returns_within(WAIT, runner.shutdown, timeout=0.1, cancel_pending=cancel_pending)
        elapsed = time.monotonic() - t0
        assert elapsed < 0.1 + SLACK, f"shutdown(timeout=0.1) took {elapsed:.2f} s"
        assert report.timed_out and not report.drained
        assert report.still_running == 1
        assert stuck.state is TaskState.RUNNING
        assert queued.state is TaskState.DROPPED
    finally:
        release.set()
    assert stuck.wait(WAIT) and stuck.state is TaskState.SUCCEEDED  # it ended on its own
    returns_within(WAIT, pool.shutdown, timeout=WAIT)
    for t in pool_threads(name):
        t.join(WAIT)
    assert pool_threads(name) == []


@pytest.mark.timeout(60)
def test_pool_shutdown_timeout_also_bounds_its_runners() -> None:
    """The pool's timeout covers the runners built on it, dedicated threads included."""
    pool = ThreadPool(1, name=unique("boundall"))
    st = SingleThreadTaskRunner(pool)
    started, release = threading.Event(), threading.Event()

    def blocker() -> None:
        started.set()
        release.wait(WAIT)

    st.post_task(blocker)
    assert started.wait(WAIT)
    try:
        t0 = time.monotonic()
        report = returns_within(WAIT, pool.shutdown, timeout=0.1)
        assert time.monotonic() - t0 < 0.1 + SLACK
        assert report.timed_out and report.still_running == 1
    finally:
        release.set()
    st.thread.join(WAIT)
    assert not st.thread.is_alive()


def test_shutdown_without_a_timeout_still_waits_for_running_tasks() -> None:
    pool = ThreadPool(1, name=unique("nobound"))
    started = threading.Event()
    finished = threading.Event()

    def task() -> None:
        started.set()
        time.sleep(0.2)
        finished.set()

    pool.post_task(task)
    assert started.wait(WAIT)
    report = pool.shutdown(cancel_pending=True)
    assert finished.is_set()
    assert report is not None and report.still_running == 0 and not report.timed_out


# ---- 4. caps on threads --------------------------------------------------------------------


def test_worker_counts_are_capped() -> None:
    name = unique("cap")
    with pytest.raises(ValueError, match="workers"):
        ThreadPool(10**6, name=name)
    with pytest.raises(ValueError, match="workers"):
        ThreadPool(MAX_WORKERS + 1, name=name)
    with pytest.raises(ValueError, match="max_blocking_workers"):
        ThreadPool(1, max_blocking_workers=MAX_WORKERS + 1, name=name)
    assert pool_threads(name) == []  # nothing was started
    pool = ThreadPool(1, max_blocking_workers=MAX_WORKERS, name=name)
    pool.shutdown()


# ---- 5. post_repeating_task on a closed runner -------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("initial_delay", [None, 0.0, 1.0])
def test_post_repeating_task_after_shutdown_raises(kind: str, initial_delay: float | None) -> None:
    pool = ThreadPool(1, name=unique(f"rep{kind}"))
    runner = make(kind, pool)
    runner.shutdown()
    with pytest.raises(RunnerClosedError):
        runner.post_repeating_task(print, 1.0, initial_delay=initial_delay)
    pool.shutdown()


def test_post_repeating_task_on_a_runner_of_a_closed_pool_raises() -> None:
    pool = ThreadPool(1, name=unique("repclosedpool"))
    runners = [make(kind, pool) for kind in RUNNER_KINDS]
    pool.shutdown()
    for runner in runners:
        with pytest.raises(RunnerClosedError):
            runner.post_repeating_task(print, 1.0)


# ---- 6. a stopped repeating task keeps nothing alive ---------------------------------------


class Payload:
    """Something a callable captures, whose collection a test can watch."""


@pytest.mark.parametrize("kind", KINDS)
def test_a_stopped_repeating_task_releases_its_callable_and_runner(kind: str) -> None:
    pool = ThreadPool(1, name=unique(f"stoprep{kind}"))
    try:
        runner = make(kind, pool)
        payload = Payload()
        payload_gone = weakref.finalize(payload, lambda: None)
        ran = threading.Event()

        def tick(p: Payload = payload) -> None:
            ran.set()

        handle = runner.post_repeating_task(tick, 60.0, initial_delay=0)
        assert ran.wait(WAIT)
        assert runner.wait_idle(WAIT)
        handle.stop()
        del tick, payload
        gc.collect()
        assert not payload_gone.alive, "a stopped repeating task kept its callable's captures"
        if kind != "pool":
            runner_gone = weakref.finalize(runner, lambda: None)
            runner.shutdown()
            del runner
            gc.collect()
            assert not runner_gone.alive, "a stopped repeating task kept its runner"
        assert handle.is_stopped  # the handle itself still answers
        repr(handle)
    finally:
        pool.shutdown()


def test_a_repeating_task_stopped_by_shutdown_releases_its_callable() -> None:
    pool = ThreadPool(1, name=unique("shutrep"))
    seq = SequencedTaskRunner(pool)
    payload = Payload()
    payload_gone = weakref.finalize(payload, lambda: None)
    handle = seq.post_repeating_task(lambda p=payload: None, 0.001)
    del payload
    pool.shutdown()
    handle.stop()
    gc.collect()
    assert not payload_gone.alive


# ---- 7. idle workers hold no finished task ---------------------------------------------------


@pytest.mark.parametrize("kind", RUNNER_KINDS)
def test_a_dropped_runner_and_its_tasks_are_collected_while_the_pool_idles(kind: str) -> None:
    pool = ThreadPool(1, name=unique(f"gc{kind}"))
    try:
        runner = make(kind, pool)
        runner_gone = weakref.finalize(runner, lambda: None)
        payload = Payload()
        payload_gone = weakref.finalize(payload, lambda: None)
        handles = [runner.post_task(lambda p=payload: None) for _ in range(3)]
        assert all(h.wait(WAIT) for h in handles)
        tasks_gone = [weakref.finalize(h, lambda: None) for h in handles]
        assert runner.wait_idle(WAIT) and pool.wait_idle(WAIT)
        runner.shutdown()
        del runner, payload, handles
        gc.collect()
        assert not payload_gone.alive, "a finished task's captures are still referenced"
        assert not any(f.alive for f in tasks_gone), "a finished task is still referenced"
        assert not runner_gone.alive, "a runner that was shut down and dropped is still alive"
        assert pool.post_task(lambda: None).wait(WAIT)  # the pool is unaffected
    finally:
        pool.shutdown()


def test_a_finished_pool_task_is_not_kept_by_its_idle_worker() -> None:
    pool = ThreadPool(1, name=unique("gcpool"))
    try:
        payload = Payload()
        payload_gone = weakref.finalize(payload, lambda: None)
        handle = pool.post_task(lambda p=payload: None)
        assert handle.wait(WAIT) and pool.wait_idle(WAIT)
        task_gone = weakref.finalize(handle, lambda: None)
        del handle, payload
        gc.collect()
        assert not payload_gone.alive and not task_gone.alive
    finally:
        pool.shutdown()


# ---- 8. stats after a cancelling shutdown --------------------------------------------------


@pytest.mark.parametrize("kind", ["sequenced", "parallel"])
def test_a_cancelling_shutdown_leaves_nothing_counted_as_queued(kind: str) -> None:
    pool = ThreadPool(1, name=unique(f"statq{kind}"))
    started, release = threading.Event(), threading.Event()

    def blocker() -> None:
        started.set()
        release.wait(WAIT)

    pool.post_task(blocker)  # the only worker is busy: the runner's tasks stay queued
    assert started.wait(WAIT)
    try:
        runner = make(kind, pool)
        handles = [runner.post_task(print, i) for i in range(5)]
        assert runner.stats()["queued"] == 5
        report = runner.shutdown(wait=False, cancel_pending=True)
        assert report.dropped == 5
        assert all(h.state is TaskState.DROPPED for h in handles)
        assert runner.stats()["queued"] == 0
        assert runner.metrics_gauges().queued == 0  # type: ignore[attr-defined]
    finally:
        release.set()
    assert runner.wait_idle(WAIT)
    pool.shutdown()


# ---- 9. a pool runs without start() -------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_pool_starts_on_construction() -> None:
    pool = ThreadPool(2, name=unique("autostart"))
    try:
        assert pool.started
        h = pool.post_task(lambda: None)
        assert returns_within(WAIT, h.wait, WAIT)
        assert pool.submit(lambda: 42).result(WAIT) == 42
        assert pool.start() is pool  # still idempotent
    finally:
        pool.shutdown()


def test_deferred_start_is_an_opt_in() -> None:
    name = unique("deferred")
    pool = ThreadPool(1, name=name, start=False)
    assert not pool.started and pool_threads(name) == []
    h = pool.post_task(lambda: None)
    assert not h.wait(0.05) and h.state is TaskState.PENDING
    pool.start()
    assert h.wait(WAIT)
    pool.shutdown()
