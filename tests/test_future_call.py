"""Futures handed out by the runners (``submit``,
``post_task_and_reply_with_result``) always settle: a task that never runs
(cancelled, dropped by a shutdown or a queue policy) cancels its future and
notifies its waiters, so ``result()``, ``wait()`` and ``as_completed()``
never wait for a task that is gone."""

from __future__ import annotations

import threading
from concurrent import futures

import pytest

from taskrunner import QueuePolicy, SequencedTaskRunner, SingleThreadTaskRunner, ThreadPool

LONG = 30.0


def test_submit_future_of_a_dropped_task_is_cancelled() -> None:
    pool = ThreadPool(1, start=False)  # never started: its shutdown drops what was posted
    future = pool.submit(int)
    pool.shutdown(timeout=LONG)
    assert future.cancelled()
    assert futures.wait([future], timeout=LONG).not_done == set()


def test_reply_future_of_a_dropped_task_is_cancelled() -> None:
    pool = ThreadPool(1, start=False)  # never started: its shutdown drops what was posted
    seq = SequencedTaskRunner(pool)
    replies: list[int] = []
    future = seq.post_task_and_reply_with_result(lambda: 1, replies.append, reply_runner=seq)
    pool.shutdown(timeout=LONG)
    assert future.cancelled() and replies == []
    with pytest.raises(futures.CancelledError):
        future.result(LONG)


def test_forceful_shutdown_cancels_the_futures_of_queued_tasks() -> None:
    pool = ThreadPool(1).start()
    gate, started = threading.Event(), threading.Event()

    def block() -> bool:
        started.set()
        return gate.wait(LONG)

    first = pool.submit(block)
    assert started.wait(LONG)
    queued = [pool.submit(int) for _ in range(5)]
    threading.Timer(0.1, gate.set).start()
    pool.shutdown(cancel_pending=True, timeout=LONG)
    assert first.result(LONG) is True
    _, not_done = futures.wait(queued, timeout=LONG)
    assert not not_done and all(f.cancelled() for f in queued)


def test_queue_policy_drop_cancels_the_future() -> None:
    with ThreadPool(1) as pool:
        gate = threading.Event()
        runner = SingleThreadTaskRunner(pool, capacity=2, policy=QueuePolicy.DROP_NEWEST)
        fs = [runner.submit(gate.wait, LONG) for _ in range(6)]
        gate.set()
        _, not_done = futures.wait(fs, timeout=LONG)
        assert not not_done and any(f.cancelled() for f in fs)
        runner.shutdown(timeout=LONG)


def test_cancelled_future_is_notified_at_once() -> None:
    with ThreadPool(1) as pool:
        gate = threading.Event()
        pool.post_task(gate.wait, LONG)
        victim = pool.submit(int)
        assert victim.cancel()
        # The task is gone: wait() sees the future done without the pool
        # ever reaching it.
        done, _ = futures.wait([victim], timeout=LONG)
        assert done == {victim}
        gate.set()


def test_results_and_errors_still_arrive() -> None:
    errors: list[BaseException] = []
    with ThreadPool(2, error_handler=lambda exc, task: errors.append(exc)) as pool:
        assert pool.submit(pow, 2, 10).result(LONG) == 1024
        with pytest.raises(ZeroDivisionError):
            pool.submit(divmod, 1, 0).result(LONG)
        pool.flush(LONG)
    assert len(errors) == 1 and isinstance(errors[0], ZeroDivisionError)
