"""taskrunner.testing: mock time that runs delayed work deterministically."""

from __future__ import annotations

import random
import threading

import pytest

from taskrunner import (
    DebounceTimer,
    OneShotTimer,
    RepeatingMode,
    SequencedTaskRunner,
    SingleThreadTaskRunner,
)
from taskrunner.testing import MockClock, TaskEnvironment


def test_fixed_rate_one_hour_runs_exactly_3600_times() -> None:
    with TaskEnvironment() as env:
        times: list[float] = []
        h = env.pool.post_repeating_task(
            lambda: times.append(env.now()), 1.0, mode=RepeatingMode.FIXED_RATE
        )
        env.fast_forward(3600)
        assert h.runs == 3600
        assert times == [float(i) for i in range(1, 3601)]
        h.stop()


def test_fixed_delay_counts_from_the_end_of_each_run() -> None:
    with TaskEnvironment() as env:
        times: list[float] = []
        h = env.pool.post_repeating_task(lambda: times.append(env.now()), 2.0, initial_delay=0.5)
        env.fast_forward(10)
        assert times == [0.5, 2.5, 4.5, 6.5, 8.5]
        h.stop()
        env.fast_forward(10)
        assert len(times) == 5


def test_ten_thousand_random_delays_fire_in_order_at_their_mock_times() -> None:
    rng = random.Random(7)
    with TaskEnvironment() as env:
        seq = SequencedTaskRunner(env.pool)
        fired: list[tuple[int, int]] = []
        delays_ns = [rng.randrange(1, 60_000_000_000) for _ in range(10_000)]
        for i, d in enumerate(delays_ns):
            seq.post_delayed_task(lambda i=i: fired.append((env.clock.now_ns(), i)), d / 1e9)
        env.fast_forward(60)
    expected = sorted(range(len(delays_ns)), key=lambda i: (delays_ns[i], i))
    assert [i for _, i in fired] == expected
    assert all(t == delays_ns[i] for t, i in fired)  # seconds -> ns rounds back exactly


def test_cancel_in_the_middle_of_a_fast_forward() -> None:
    with TaskEnvironment() as env:
        ran: list[str] = []
        late = env.pool.post_delayed_task(ran.append, 5.0, "late")

        def cancel_late() -> None:
            ran.append("canceller")
            assert late.cancel()

        env.pool.post_delayed_task(cancel_late, 2.0)
        env.fast_forward(10)
        assert ran == ["canceller"]


def test_nested_posts_run_within_the_same_fast_forward_in_order() -> None:
    with TaskEnvironment() as env:
        seq = SequencedTaskRunner(env.pool)
        log: list[tuple[str, float]] = []

        def outer() -> None:
            log.append(("outer", env.now()))
            seq.post_delayed_task(lambda: log.append(("inner", env.now())), 1.0)
            seq.post_task(lambda: log.append(("immediate", env.now())))

        seq.post_delayed_task(outer, 1.0)
        seq.post_delayed_task(lambda: log.append(("other", env.now())), 1.5)
        env.fast_forward(3)
        assert log == [("outer", 1.0), ("immediate", 1.0), ("other", 1.5), ("inner", 2.0)]
        assert env.now() == 3.0


def test_run_until_idle_does_not_move_time() -> None:
    with TaskEnvironment() as env:
        out: list[int] = []
        env.pool.post_task(out.append, 1)
        env.pool.post_delayed_task(out.append, 1.0, 2)
        env.run_until_idle()
        assert out == [1] and env.now() == 0.0
        assert env.pending_delayed() == 1
        env.fast_forward_until_idle()
        assert out == [1, 2] and env.now() == 1.0


def test_debounce_example_from_the_readme() -> None:
    with TaskEnvironment() as env:
        seq = SequencedTaskRunner(env.pool)
        hits: list[float] = []
        debounce = DebounceTimer(seq, 0.5, lambda: hits.append(env.now()))
        debounce()
        env.fast_forward(0.3)
        debounce()
        env.fast_forward(1.0)
        assert hits == [0.8]


def test_exponential_retry_example() -> None:
    with TaskEnvironment() as env:
        attempts: list[float] = []

        def flaky(attempt: int = 0) -> None:
            attempts.append(env.now())
            if attempt < 3:
                env.pool.post_delayed_task(flaky, 0.1 * 2**attempt, attempt + 1)

        env.pool.post_task(flaky)
        env.fast_forward_until_idle()
        assert attempts == pytest.approx([0.0, 0.1, 0.3, 0.7])


def test_single_thread_runner_and_timer_on_mock_time() -> None:
    with TaskEnvironment() as env:
        st = SingleThreadTaskRunner(env.pool)
        fired: list[tuple[float, int]] = []
        timer = OneShotTimer(st)
        timer.start(2.0, lambda: fired.append((env.now(), threading.get_ident())))
        env.fast_forward(1.9)
        assert fired == []
        env.fast_forward(0.1)
        assert fired == [(2.0, st.thread.ident)]


def test_task_errors_fail_the_test_with_the_original_traceback() -> None:
    def broken() -> None:
        raise KeyError("original")

    with pytest.raises(KeyError, match="original") as info, TaskEnvironment() as env:
        env.pool.post_delayed_task(broken, 1.0)
        env.fast_forward(2)
    assert any(entry.name == "broken" for entry in info.traceback)


def test_errors_can_be_collected_instead() -> None:
    with TaskEnvironment(raise_task_errors=False) as env:
        env.pool.post_task(lambda: 1 / 0)
        env.run_until_idle()
        assert isinstance(env.task_errors[0], ZeroDivisionError)


def test_mock_clock_never_goes_back() -> None:
    clock = MockClock(5)
    assert clock.now() == 5
    with pytest.raises(ValueError):
        clock.set_ns(0)
    with pytest.raises(ValueError):
        clock.advance(-1)
    with TaskEnvironment() as env, pytest.raises(ValueError):
        env.fast_forward(-1)
