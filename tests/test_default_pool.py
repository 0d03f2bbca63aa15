"""The process-wide default pool (issue 19): created on first use or set once,
the runner factories on it, and its graceful, bounded shutdown at exit.

These tests replace the process's default pool, so they cannot share the
process with each other under pytest-run-parallel (``thread_unsafe``).  The
exit-time shutdown is checked in child interpreters.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterator

import pytest

import taskrunner
from taskrunner import (
    DefaultPoolError,
    ParallelTaskRunner,
    RunnerClosedError,
    SequencedTaskRunner,
    SingleThreadTaskRunner,
    ThreadPool,
)
from taskrunner.runtime import defaults

WAIT = 10.0

pytestmark = pytest.mark.thread_unsafe(reason="replaces the process-wide default pool")


@pytest.fixture(autouse=True)
def fresh_default() -> Iterator[None]:
    previous = defaults._forget_for_tests()
    yield
    mine = defaults._forget_for_tests()
    if mine is not None:
        mine.shutdown(timeout=WAIT)
    if previous is not None and not previous.is_closed:
        taskrunner.set_default_pool(previous)


def test_default_pool_is_created_started_and_shared() -> None:
    pool = taskrunner.default_pool()
    assert isinstance(pool, ThreadPool) and pool.started and pool.name == "default"
    assert taskrunner.default_pool() is pool
    assert pool.submit(lambda: 5).result(WAIT) == 5


def test_racing_first_uses_get_one_pool() -> None:
    got: list[ThreadPool] = []
    barrier = threading.Barrier(4)

    def use() -> None:
        barrier.wait(WAIT)
        got.append(taskrunner.default_pool())

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert len(got) == 4 and all(p is got[0] for p in got)


def test_set_default_pool_once() -> None:
    mine = ThreadPool(2, name="mine")
    taskrunner.set_default_pool(mine)
    assert taskrunner.default_pool() is mine
    other = ThreadPool(1, name="other")
    try:
        with pytest.raises(DefaultPoolError, match="already set"):
            taskrunner.set_default_pool(other)
    finally:
        other.shutdown(timeout=WAIT)
    assert taskrunner.default_pool() is mine


def test_set_after_first_use_raises() -> None:
    taskrunner.default_pool()
    other = ThreadPool(1, name="late")
    try:
        with pytest.raises(DefaultPoolError):
            taskrunner.set_default_pool(other)
    finally:
        other.shutdown(timeout=WAIT)


def test_set_default_pool_bad_input() -> None:
    with pytest.raises(TypeError, match="must be a ThreadPool"):
        taskrunner.set_default_pool("pool")  # type: ignore[arg-type]
    closed = ThreadPool(1, name="closed")
    closed.shutdown(timeout=WAIT)
    with pytest.raises(RunnerClosedError):
        taskrunner.set_default_pool(closed)
    # Neither attempt chose the default.
    assert taskrunner.default_pool().name == "default"


def test_factories_build_on_the_default_pool() -> None:
    seq = taskrunner.create_sequenced_runner(name="s")
    par = taskrunner.create_parallel_runner(2, name="p")
    one = taskrunner.create_single_thread_runner(capacity=8, name="o")
    assert isinstance(seq, SequencedTaskRunner) and seq.name == "s"
    assert isinstance(par, ParallelTaskRunner) and isinstance(one, SingleThreadTaskRunner)
    for runner in (seq, par, one):
        assert runner.pool is taskrunner.default_pool()
        assert runner.submit(lambda: 1).result(WAIT) == 1
    one.shutdown(timeout=WAIT)


def test_shutdown_default_pool_closes_it_and_keeps_it() -> None:
    pool = taskrunner.default_pool()
    seq = taskrunner.create_sequenced_runner()
    report = taskrunner.shutdown_default_pool(timeout=WAIT)
    assert report is not None and report.drained
    assert pool.is_closed and seq.is_closed
    assert taskrunner.default_pool() is pool  # no new pool behind the user's back
    with pytest.raises(RunnerClosedError):
        taskrunner.create_sequenced_runner()


def test_shutdown_default_pool_before_any_use_is_a_no_op() -> None:
    assert taskrunner.shutdown_default_pool() is None


def test_default_pool_runners_are_collected() -> None:
    done = threading.Event()
    finalized = threading.Event()
    seq = taskrunner.create_sequenced_runner()
    seq.post_task(done.set)
    assert done.wait(WAIT)
    assert seq.flush(WAIT)
    weakref.finalize(seq, finalized.set)
    del seq
    gc.collect()
    assert finalized.is_set()
    one = taskrunner.create_single_thread_runner()
    one.shutdown(timeout=WAIT)
    gone = threading.Event()
    weakref.finalize(one, gone.set)
    del one
    gc.collect()
    assert gone.is_set()


def _run_child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_exit_shuts_the_default_pool_down_gracefully() -> None:
    # A task queued behind a busy one still runs at exit (graceful drain).
    code = (
        "import threading, taskrunner\n"
        "seq = taskrunner.create_sequenced_runner()\n"
        "gate = threading.Event()\n"
        "seq.post_task(gate.wait, 0.2)\n"
        "seq.post_task(lambda: print('drained at exit', flush=True))\n"
    )
    result = _run_child(code)
    assert result.returncode == 0, result.stderr
    assert "drained at exit" in result.stdout


def test_exit_shutdown_is_bounded() -> None:
    # A task that never returns does not hold the process: EXIT_TIMEOUT bounds it.
    code = (
        "import threading, taskrunner, taskrunner.runtime.defaults as d\n"
        "d.EXIT_TIMEOUT = 0.2\n"
        "started = threading.Event()\n"
        "taskrunner.default_pool().post_task(lambda: (started.set(), threading.Event().wait()))\n"
        "started.wait(10)\n"
        "print('leaving', flush=True)\n"
    )
    result = _run_child(code)
    assert result.returncode == 0, result.stderr
    assert "leaving" in result.stdout


def test_exit_shuts_down_a_set_default_pool() -> None:
    # atexit runs handlers last-registered first: one registered before
    # set_default_pool runs after the exit-time shutdown and sees it closed.
    code = (
        "import atexit, taskrunner\n"
        "pool = taskrunner.ThreadPool(1, name='mine')\n"
        "atexit.register(lambda: print('closed', pool.is_closed, flush=True))\n"
        "taskrunner.set_default_pool(pool)\n"
    )
    result = _run_child(code)
    assert result.returncode == 0, result.stderr
    assert "closed True" in result.stdout
