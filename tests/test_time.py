"""Time is converted once, with rounding, at the API boundary and kept in integer
nanoseconds inside: no task is early by a nanosecond, repeats do not drift, job
retries and delayed submits land on their exact mock time, and a fast-forward
past the clock's range is refused (issue 15, item 10)."""

from __future__ import annotations

import threading
import time

import pytest

from taskrunner import (
    ParallelTaskRunner,
    RepeatingMode,
    SequencedTaskRunner,
    SingleThreadTaskRunner,
    TaskRunner,
    ThreadPool,
)
from taskrunner.jobs import JobContext, JobManager, MemoryJobStore, RetryPolicy
from taskrunner.testing import MockClock, TaskEnvironment

WAIT = 10.0
DECIMAL_DELAYS = [0.001, 0.003, 0.007, 0.1, 0.3, 0.7, 1.001, 1.1, 2.675, 4.1, 4.35, 9.995]


def ns(seconds: float) -> int:
    """The nanosecond a decimal number of seconds means (what the API must use)."""
    return round(seconds * 1_000_000_000)


def runners(env: TaskEnvironment) -> list[TaskRunner]:
    return [
        env.pool,
        SequencedTaskRunner(env.pool),
        ParallelTaskRunner(env.pool, 2),
        SingleThreadTaskRunner(env.pool),
    ]


def test_decimal_delays_run_at_their_exact_mock_time_on_every_runner() -> None:
    with TaskEnvironment() as env:
        seen: list[tuple[int, int]] = []
        lock = threading.Lock()
        expected: list[tuple[int, int]] = []
        for r, runner in enumerate(runners(env)):
            for delay in DECIMAL_DELAYS:
                key = r * 100 + DECIMAL_DELAYS.index(delay)

                def record(key: int = key) -> None:
                    with lock:
                        seen.append((key, env.clock.now_ns()))

                runner.post_delayed_task(record, delay)
                expected.append((key, ns(delay)))
        env.fast_forward(10)
        assert sorted(seen) == sorted(expected)


def test_mock_time_reads_back_as_the_decimal_it_was_given() -> None:
    with TaskEnvironment() as env:
        now: list[float] = []
        env.pool.post_delayed_task(lambda: now.append(env.now()), 1.001)
        env.fast_forward(1.001)
        assert now == [1.001]
        assert env.clock.now_ns() == 1_001_000_000
    clock = MockClock(0.1)
    assert clock.now_ns() == 100_000_000
    clock.advance(0.7)
    assert clock.now_ns() == 800_000_000
    assert TaskEnvironment(start_time=2.675).clock.now_ns() == 2_675_000_000


@pytest.mark.parametrize("interval", [4.1, 0.3, 1.001])
def test_fixed_delay_repeats_do_not_drift(interval: float) -> None:
    runs = 3000
    with TaskEnvironment() as env:
        times: list[int] = []
        h = env.pool.post_repeating_task(lambda: times.append(env.clock.now_ns()), interval)
        env.fast_forward(interval * runs)
        h.stop()
    step = ns(interval)
    assert times[:runs] == [k * step for k in range(1, runs + 1)]


@pytest.mark.parametrize("interval", [0.1, 0.7, 4.1])
def test_fixed_rate_repeats_stay_on_their_grid(interval: float) -> None:
    runs = 3000
    with TaskEnvironment() as env:
        seq = SequencedTaskRunner(env.pool)
        times: list[int] = []
        h = seq.post_repeating_task(
            lambda: times.append(env.clock.now_ns()),
            interval,
            initial_delay=0.3,
            mode=RepeatingMode.FIXED_RATE,
        )
        env.fast_forward(0.3 + interval * (runs - 1))
        h.stop()
    assert times == [ns(0.3) + k * ns(interval) for k in range(runs)]


def test_a_sub_tick_delay_is_never_early() -> None:
    """A delay shorter than the wheel's tick waits for its time, like any other."""
    with TaskEnvironment() as env:
        out: list[int] = []
        env.pool.post_delayed_task(lambda: out.append(env.clock.now_ns()), 0.0005)
        env.run_until_idle()
        assert out == []
        env.fast_forward(0.0004999)
        assert out == []
        env.fast_forward(0.0000001)
        assert out == [500_000]
    pool = ThreadPool(1, name=f"subtick{threading.get_ident()}")
    try:
        posted = time.monotonic_ns()
        ran_at: list[int] = []
        assert pool.post_delayed_task(lambda: ran_at.append(time.monotonic_ns()), 0.0005).wait(WAIT)
        assert ran_at[0] - posted >= 500_000
    finally:
        pool.shutdown()


def test_fast_forward_past_the_clock_range_is_refused_and_leaves_the_environment_usable() -> None:
    with TaskEnvironment() as env:
        for bad in (1e10, float("inf"), float("nan"), 2**63 / 1e9):
            with pytest.raises(ValueError):
                env.fast_forward(bad)
        assert env.clock.now_ns() == 0
        out: list[float] = []
        env.pool.post_delayed_task(lambda: out.append(env.now()), 1.5)
        env.fast_forward(2)
        assert out == [1.5]
        env.fast_forward(9e9)  # within range: fine
        with pytest.raises(ValueError):
            env.pool.post_delayed_task(print, 9e8)  # its deadline would overflow the clock
        assert env.pending_delayed() == 0 and not env.pool._live
        env.fast_forward(1)
    with pytest.raises(ValueError):
        MockClock(1e10)
    clock = MockClock()
    with pytest.raises(ValueError):
        clock.advance(1e10)
    with pytest.raises(ValueError):
        clock.advance(float("nan"))
    assert clock.now_ns() == 0


# ---- the JobManager's due times -----------------------------------------------------------


def test_delayed_submits_run_at_their_exact_mock_time() -> None:
    with TaskEnvironment() as env:
        m = JobManager(MemoryJobStore(), env.pool, poll_interval=3600, lease_seconds=3600)
        ran: dict[int, int] = {}
        m.register("t", lambda ctx, args: ran.__setitem__(args, env.clock.now_ns()))
        m.start()
        env.fast_forward(0.123456789)  # an arbitrary, odd start
        t0 = env.clock.now_ns()
        for i, delay in enumerate(DECIMAL_DELAYS):
            m.submit("t", i, delay=delay)
        env.fast_forward(10)
        assert ran == {i: t0 + ns(d) for i, d in enumerate(DECIMAL_DELAYS)}
        m.shutdown()


@pytest.mark.parametrize("initial", [0.1, 0.003, 1.001])
def test_job_retries_run_at_their_exact_mock_time(initial: float) -> None:
    policy = RetryPolicy(max_attempts=6, initial_delay=initial, ratio=3.0, max_delay=1e6, jitter=0)
    with TaskEnvironment() as env:
        m = JobManager(
            MemoryJobStore(), env.pool, retry_policy=policy, poll_interval=3600, lease_seconds=3600
        )
        times: list[int] = []

        @m.handler("flaky")
        def flaky(ctx: JobContext, args: None) -> str:
            times.append(env.clock.now_ns())
            if ctx.attempt < 6:
                raise RuntimeError("again")
            return "ok"

        m.start()
        env.fast_forward(0.987654321)
        t0 = env.clock.now_ns()
        h = m.submit("flaky")
        env.fast_forward(initial * 400)
        assert h.future.result(0) == "ok"
        expected = [t0]
        for attempt in range(1, 6):
            expected.append(expected[-1] + ns(policy.delay_for(attempt)))
        assert times == expected
        m.shutdown()
