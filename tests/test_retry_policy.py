"""RetryPolicy (backoff growth, cap, jitter, validation) and retry_call."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskrunner.jobs import JobCancelled, RetryPolicy, StoreError, retry_call


class Fixed:
    """An rng whose random() returns a chosen value."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_delays_grow_geometrically_up_to_the_cap() -> None:
    policy = RetryPolicy(initial_delay=0.5, ratio=3.0, max_delay=10.0, jitter=0.0)
    delays = [policy.delay_for(n) for n in range(1, 7)]
    assert delays == [0.5, 1.5, 4.5, 10.0, 10.0, 10.0]
    assert policy.base_delay(10_000) == 10.0  # no overflow for huge attempt numbers


def test_ratio_one_gives_a_constant_delay() -> None:
    policy = RetryPolicy(initial_delay=2.0, ratio=1.0, max_delay=2.0, jitter=0.0)
    assert {policy.delay_for(n) for n in range(1, 20)} == {2.0}


def test_jitter_only_shortens_a_delay_within_its_fraction() -> None:
    policy = RetryPolicy(initial_delay=1.0, ratio=2.0, max_delay=8.0, jitter=0.25)
    assert policy.delay_for(3, Fixed(0.0)) == 4.0
    assert policy.delay_for(3, Fixed(0.5)) == 3.5
    assert policy.delay_for(3, Fixed(0.999999)) == pytest.approx(3.0, abs=1e-5)
    rng = random.Random(7)
    samples = [policy.delay_for(3, rng) for _ in range(2000)]
    assert min(samples) >= 3.0 and max(samples) <= 4.0
    assert max(samples) - min(samples) > 0.9  # spread over the whole band
    with pytest.raises(ValueError, match=r"rng.random\(\)"):
        policy.delay_for(1, Fixed(1.5))


@given(
    initial=st.floats(0, 100),
    ratio=st.floats(1, 10),
    extra=st.floats(0, 1000),
    jitter=st.floats(0, 1),
    attempt=st.integers(1, 5000),
    u=st.floats(0, 1, exclude_max=True),
)
def test_a_delay_is_always_within_its_bounds(
    initial: float, ratio: float, extra: float, jitter: float, attempt: int, u: float
) -> None:
    policy = RetryPolicy(
        initial_delay=initial, ratio=ratio, max_delay=initial + extra, jitter=jitter
    )
    base = policy.base_delay(attempt)
    assert initial <= base <= policy.max_delay
    delay = policy.delay_for(attempt, Fixed(u))
    assert base * (1 - jitter) - 1e-9 <= delay <= base <= policy.max_delay
    if attempt > 1:
        assert policy.base_delay(attempt - 1) <= base  # never shrinks


@pytest.mark.parametrize(
    ("fields", "error", "words"),
    [
        ({"max_attempts": 0}, ValueError, "max_attempts"),
        ({"max_attempts": 2.0}, TypeError, "max_attempts"),
        ({"max_attempts": True}, TypeError, "max_attempts"),
        ({"initial_delay": -1}, ValueError, "initial_delay"),
        ({"initial_delay": "1"}, TypeError, "initial_delay"),
        ({"initial_delay": float("nan")}, ValueError, "initial_delay"),
        ({"ratio": 0.5}, ValueError, "ratio"),
        ({"ratio": float("inf")}, ValueError, "ratio"),
        ({"max_delay": 0.5, "initial_delay": 1.0}, ValueError, "max_delay"),
        ({"jitter": -0.1}, ValueError, "jitter"),
        ({"jitter": 1.5}, ValueError, "jitter"),
        ({"retry_on": [OSError]}, TypeError, "retry_on"),
        ({"retry_on": (OSError, 5)}, TypeError, "retry_on"),
    ],
)
def test_every_field_is_validated(
    fields: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        RetryPolicy(**fields)


def test_attempt_numbers_are_validated() -> None:
    policy = RetryPolicy()
    with pytest.raises(ValueError, match="attempt"):
        policy.delay_for(0)
    with pytest.raises(TypeError, match="attempt"):
        policy.delay_for(1.0)  # type: ignore[arg-type]


def test_should_retry_follows_retry_on_and_never_retries_cancellation() -> None:
    policy = RetryPolicy(retry_on=(OSError, StoreError))
    assert policy.should_retry(ConnectionError())
    assert policy.should_retry(StoreError("disk"))
    assert not policy.should_retry(ValueError())
    assert not RetryPolicy().should_retry(KeyboardInterrupt())
    assert not RetryPolicy(retry_on=(BaseException,)).should_retry(JobCancelled())
    assert not RetryPolicy(retry_on=()).should_retry(OSError())
    assert RetryPolicy(max_attempts=3).allows_another(2)
    assert not RetryPolicy(max_attempts=3).allows_another(3)


class Flaky:
    """Fails the first ``failures`` calls with ``error``, then returns ``"done"``."""

    def __init__(self, failures: int, error: type[Exception] = OSError) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"failure {self.calls}")
        return "done"


def test_retry_call_sleeps_between_attempts_and_returns_the_result() -> None:
    policy = RetryPolicy(max_attempts=4, initial_delay=1.0, ratio=2.0, jitter=0.0)
    sleeps: list[float] = []
    seen: list[tuple[int, str, float]] = []
    flaky = Flaky(3)
    result = retry_call(
        flaky,
        policy,
        sleep=sleeps.append,
        on_retry=lambda n, exc, delay: seen.append((n, str(exc), delay)),
    )
    assert result == "done" and flaky.calls == 4
    assert sleeps == [1.0, 2.0, 4.0]
    assert seen == [(1, "failure 1", 1.0), (2, "failure 2", 2.0), (3, "failure 3", 4.0)]


def test_retry_call_gives_up_after_max_attempts_with_the_last_error() -> None:
    sleeps: list[float] = []
    flaky = Flaky(10)
    with pytest.raises(OSError, match="failure 3"):
        retry_call(flaky, RetryPolicy(max_attempts=3, jitter=0.0), sleep=sleeps.append)
    assert flaky.calls == 3 and len(sleeps) == 2


def test_retry_call_does_not_retry_what_the_policy_excludes() -> None:
    sleeps: list[float] = []
    flaky = Flaky(1, ValueError)
    with pytest.raises(ValueError, match="failure 1"):
        retry_call(flaky, RetryPolicy(retry_on=(OSError,)), sleep=sleeps.append)
    assert flaky.calls == 1 and sleeps == []


def test_retry_call_uses_the_given_rng_for_jitter() -> None:
    policy = RetryPolicy(max_attempts=2, initial_delay=10.0, max_delay=10.0, jitter=0.5)
    sleeps: list[float] = []
    retry_call(Flaky(1), policy, sleep=sleeps.append, rng=Fixed(0.5))
    assert sleeps == [7.5]
