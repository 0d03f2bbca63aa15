"""Metrics: the protocol's events, the in-process collector, gauges, hooks that fail."""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from taskrunner import (
    QueueFullError,
    QueuePolicy,
    SequencedTaskRunner,
    SingleThreadTaskRunner,
    Task,
    TaskPriority,
    TaskTraits,
    ThreadPool,
)
from taskrunner.runtime.metrics import (
    DEFAULT_DURATION_BUCKETS,
    OUTCOMES,
    HistogramData,
    InProcessMetrics,
    Metrics,
    MetricsSnapshot,
    MetricsSource,
    NoopMetrics,
    TaskTracer,
    merge_histograms,
)
from taskrunner.runtime.metrics.histograms import Hist
from taskrunner.runtime.pool.observe import PostCounter, TaskTimes
from taskrunner.testing import TaskEnvironment

WAIT = 10.0
BE = TaskTraits(priority=TaskPriority.BEST_EFFORT)
UB = TaskTraits(priority=TaskPriority.USER_BLOCKING)


_names = itertools.count()


@contextlib.contextmanager
def observed_pool(workers: int = 2) -> Iterator[tuple[ThreadPool, InProcessMetrics]]:
    """A started pool with its own collector (per test *and* per thread: the
    suite also runs with pytest-run-parallel, where fixtures are shared)."""
    metrics = InProcessMetrics()
    pool = ThreadPool(workers, name=f"mp{next(_names)}", metrics=metrics).start()
    try:
        yield pool, metrics
    finally:
        pool.shutdown(timeout=WAIT)


def block_workers(pool: ThreadPool, n: int) -> threading.Event:
    """Occupy n workers until the returned event is set."""
    gate = threading.Event()
    arrived = threading.Barrier(n + 1)

    def hold() -> None:
        arrived.wait(WAIT)
        gate.wait(WAIT)

    for _ in range(n):
        pool.post_task(hold, traits=UB)
    arrived.wait(WAIT)
    return gate


def outcomes(snap: MetricsSnapshot, runner: str) -> dict[str, int]:
    out = dict.fromkeys(OUTCOMES, 0)
    for (r, _p, _c, outcome), n in snap.tasks.items():
        if r == runner:
            out[outcome] += n
    return out


def posted(snap: MetricsSnapshot, runner: str) -> int:
    return sum(n for (r, _p, _c), n in snap.posted.items() if r == runner)


def fail() -> None:
    raise ValueError("boom")


# ---- the pool's events -------------------------------------------------------------------


def test_every_posted_task_ends_in_one_outcome() -> None:
    with observed_pool() as (pool, metrics):
        gate = block_workers(pool, 2)
        doomed = pool.post_task(lambda: None, name="doomed")
        assert doomed.cancel()
        for _ in range(50):
            pool.post_task(lambda: None)
        pool.post_task(fail)
        pool.post_task(lambda: None, traits=TaskTraits(category="io"))
        delayed = pool.post_delayed_task(lambda: None, 0.001)
        gate.set()
        assert delayed.wait(WAIT)
        assert pool.wait_idle(WAIT)
        snap = metrics.snapshot()
        got = outcomes(snap, pool.name)
        # 2 blockers + 50 + 1 categorised + 1 delayed succeeded; 1 failed; 1 cancelled.
        assert got == {"succeeded": 54, "failed": 1, "cancelled": 1, "dropped": 0, "rejected": 0}
        assert posted(snap, pool.name) == sum(got.values()) == 56
        assert snap.posted[(pool.name, TaskPriority.USER_BLOCKING, None)] == 2
        assert snap.tasks[(pool.name, 1, "io", "succeeded")] == 1
        runs = snap.run_seconds[(pool.name, int(TaskPriority.USER_VISIBLE))]
        waits = snap.queue_wait_seconds[(pool.name, int(TaskPriority.USER_VISIBLE))]
        assert runs.count == waits.count == 53  # every task that ran at USER_VISIBLE
        assert sum(runs.counts) == runs.count and runs.sum >= 0
        assert snap.timer_lateness_seconds[pool.name].count == 1


def test_a_finished_task_is_already_counted() -> None:
    with observed_pool() as (pool, metrics):
        seq = SequencedTaskRunner(pool, name=f"{pool.name}-seq")
        for i in range(30):
            target = pool if i % 2 else seq
            task = target.post_task(fail if i % 10 == 0 else lambda: None)
            assert task.wait(WAIT)  # no wait_idle: the handle alone
            snap = metrics.snapshot()
            done = sum(outcomes(snap, pool.name).values()) + sum(outcomes(snap, seq.name).values())
            assert done == i + 1
        doomed = pool.post_delayed_task(lambda: None, 3600)
        assert doomed.cancel()
        assert outcomes(metrics.snapshot(), pool.name)["cancelled"] == 1


def test_stats_shows_the_in_process_summary() -> None:
    with observed_pool() as (pool, _metrics):
        for _ in range(10):
            pool.post_task(lambda: None)
        assert pool.wait_idle(WAIT)
        summary = pool.stats()["metrics"]
        assert summary["posted"] == 10
        assert summary["outcomes"]["succeeded"] == 10
        assert summary["run_ms"]["count"] == 10
        assert summary["queue_wait_ms"]["p99"] is not None


def test_queue_depth_running_and_workers_are_read_when_looked_at() -> None:
    with observed_pool() as (pool, metrics):
        gate = block_workers(pool, 2)
        try:
            for traits, n in ((BE, 3), (TaskTraits(), 5), (UB, 2)):
                for _ in range(n):
                    pool.post_task(lambda: None, traits=traits)
            pool.post_delayed_task(lambda: None, 3600)
            g = metrics.snapshot().runners[pool.name]
            assert g.kind == "pool"
            assert dict(g.queued_by_priority) == {0: 3, 1: 5, 2: 2}
            assert g.queued == 10
            assert g.running == 2
            assert g.delayed == 1
            assert g.workers == {"cpu": 2, "blocking": 0}
        finally:
            gate.set()
        assert pool.wait_idle(WAIT)
        g = metrics.snapshot().runners[pool.name]
        assert g.queued == 0 and g.running == 0


def test_shutdown_drops_are_counted_and_gauges_go_away() -> None:
    metrics = InProcessMetrics()
    pool = ThreadPool(1, name="dropper", metrics=metrics).start()
    gate = block_workers(pool, 1)
    for _ in range(5):
        pool.post_task(lambda: None)
    pool.post_delayed_task(lambda: None, 3600)
    gate.set()
    report = pool.shutdown(cancel_pending=True, timeout=WAIT)
    assert report is not None
    snap = metrics.snapshot()
    got = outcomes(snap, "dropper")
    assert got["dropped"] == report.dropped
    assert got["succeeded"] + got["dropped"] == posted(snap, "dropper") == 7
    assert "dropper" not in snap.runners  # a closed pool's gauges disappear; counters stay


def test_timer_lateness_on_mock_time() -> None:
    metrics = InProcessMetrics()
    with TaskEnvironment(metrics=metrics) as env:
        for delay in (0.5, 1.0, 1.0):
            env.pool.post_delayed_task(lambda: None, delay)
        env.fast_forward(2.0)
        late = metrics.snapshot().timer_lateness_seconds["taskenv"]
        assert late.count == 3
        assert late.counts[0] == 3  # fired exactly at their deadlines (mock time)


# ---- runners -------------------------------------------------------------------------------


def test_sequenced_runner_tasks_count_under_the_runner_not_its_run_loop() -> None:
    with observed_pool() as (pool, metrics):
        seq = SequencedTaskRunner(pool, name="seq")
        for _ in range(20):
            seq.post_task(lambda: None)
        seq.post_task(fail)
        assert seq.wait_idle(WAIT)
        assert pool.wait_idle(WAIT)
        snap = metrics.snapshot()
        assert outcomes(snap, "seq")["succeeded"] == 20
        assert outcomes(snap, "seq")["failed"] == 1
        assert posted(snap, "seq") == 21
        # The run loops are internal: the pool counts nothing of its own.
        assert posted(snap, pool.name) == 0
        assert sum(outcomes(snap, pool.name).values()) == 0
        assert snap.runners["seq"].kind == "runner"
        assert snap.run_seconds[("seq", 1)].count == 21  # failures ran too


def test_single_thread_rejections_and_caller_runs() -> None:
    with observed_pool() as (pool, metrics):
        started, gate = threading.Event(), threading.Event()

        def hold() -> None:
            started.set()
            gate.wait(WAIT)

        runner = SingleThreadTaskRunner(pool, capacity=2, policy=QueuePolicy.REJECT, name="st")
        caller = SingleThreadTaskRunner(pool, capacity=2, policy=QueuePolicy.CALLER_RUNS, name="cr")
        try:
            runner.post_task(hold)
            assert started.wait(WAIT)
            runner.post_task(lambda: None)
            runner.post_task(lambda: None)
            with pytest.raises(QueueFullError):
                runner.post_task(lambda: None)
            g = metrics.snapshot().runners["st"]
            assert (g.queued, g.running, g.capacity) == (2, 1, 2)
            started.clear()
            caller.post_task(hold)
            assert started.wait(WAIT)
            caller.post_task(lambda: None)
            caller.post_task(lambda: None)
            ran_here: list[int] = []
            caller.post_task(lambda: ran_here.append(threading.get_ident()))
            assert ran_here == [threading.get_ident()]
        finally:
            gate.set()
        assert runner.wait_idle(WAIT) and caller.wait_idle(WAIT)
        snap = metrics.snapshot()
        assert snap.rejections[("st", "reject")] == 1
        assert snap.rejections[("cr", "caller_runs")] == 1
        assert outcomes(snap, "st") == {
            "succeeded": 3, "failed": 0, "cancelled": 0, "dropped": 0, "rejected": 1,
        }  # fmt: skip
        assert outcomes(snap, "cr")["succeeded"] == 4  # the caller-run task counted by its run
        runner.shutdown()
        caller.shutdown()


# ---- jobs ------------------------------------------------------------------------------------


def test_job_hooks() -> None:
    metrics = InProcessMetrics()
    metrics.job_state_changed("email", "pending", 0)
    metrics.job_state_changed("email", "running", 1)
    metrics.job_attempt_finished("email", 1, "retrying", 0.02)
    metrics.job_state_changed("email", "pending", 1)
    metrics.job_state_changed("email", "running", 2)
    metrics.job_attempt_finished("email", 2, "succeeded", 0.5)
    metrics.job_state_changed("email", "succeeded", 2)
    metrics.store_write_retried("finish")
    metrics.store_write_retried("finish")
    metrics.store_write_failed("finish")
    snap = metrics.snapshot()
    assert snap.jobs[("email", "pending")] == 2
    assert snap.jobs[("email", "succeeded")] == 1
    assert snap.job_attempts == {("email", "retrying"): 1, ("email", "succeeded"): 1}
    used = snap.job_attempts_used[("email", "succeeded")]
    assert (used.count, used.sum) == (1, 2.0)
    assert used.cumulative()[1] == (2.0, 1)  # le=2 holds it, le=1 does not
    assert used.cumulative()[0] == (1.0, 0)
    assert snap.job_attempt_seconds[("email", "succeeded")].sum == pytest.approx(0.5)
    assert snap.store_write_retries == {"finish": 2}
    assert snap.store_write_failures == {"finish": 1}


# ---- off, no-op, failing hooks, tracer ---------------------------------------------------------


class Recorder:
    """A Metrics that records every call (thread-safe)."""

    def __init__(self, fail: bool = False) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.fail = fail

    def _record(self, name: str, *args: Any) -> None:
        with self.lock:
            self.calls.append((name, args))
        if self.fail and name not in ("add_source", "remove_source"):
            raise RuntimeError(f"{name} is broken")

    def tasks_posted(self, runner: str, priority: int, category: str | None, count: int) -> None:
        self._record("tasks_posted", runner, priority, category, count)

    def tasks_ran(
        self,
        runner: str,
        priority: int,
        category: str | None,
        outcome: str,
        queue_wait_ns: Sequence[int],
        run_ns: Sequence[int],
    ) -> None:
        self._record("tasks_ran", runner, priority, category, outcome, list(run_ns))

    def task_not_run(self, runner: str, priority: int, category: str | None, outcome: str) -> None:
        self._record("task_not_run", runner, priority, category, outcome)

    def task_rejected(self, runner: str, priority: int, category: str | None, policy: str) -> None:
        self._record("task_rejected", runner, priority, category, policy)

    def timers_fired(self, runner: str, lateness_ns: Sequence[int]) -> None:
        self._record("timers_fired", runner, list(lateness_ns))

    def add_source(self, runner: str, source: MetricsSource) -> None:
        self._record("add_source", runner, source)

    def remove_source(self, source: MetricsSource) -> None:
        self._record("remove_source", source)

    def job_state_changed(self, job_type: str, state: str, attempt: int) -> None:
        self._record("job_state_changed", job_type, state, attempt)

    def job_attempt_finished(
        self, job_type: str, attempt: int, outcome: str, duration_s: float
    ) -> None:
        self._record("job_attempt_finished", job_type, attempt, outcome, duration_s)

    def store_write_retried(self, operation: str) -> None:
        self._record("store_write_retried", operation)

    def store_write_failed(self, operation: str) -> None:
        self._record("store_write_failed", operation)

    def names(self) -> list[str]:
        with self.lock:
            return [name for name, _ in self.calls]


def test_protocols_are_implemented() -> None:
    assert isinstance(InProcessMetrics(), Metrics)
    assert isinstance(NoopMetrics(), Metrics)
    assert isinstance(Recorder(), Metrics)
    with ThreadPool(1) as pool:
        assert isinstance(pool, MetricsSource)
        assert isinstance(SequencedTaskRunner(pool), MetricsSource)


def test_noop_metrics_means_off() -> None:
    with ThreadPool(1, metrics=NoopMetrics()) as pool:
        assert pool.metrics is None
        assert pool.post_task(lambda: None).wait(WAIT)
        assert "metrics" not in pool.stats()

    class JobsOnly(NoopMetrics):
        def job_state_changed(self, job_type: str, state: str, attempt: int) -> None:
            pass

    with ThreadPool(1, metrics=JobsOnly()) as pool:
        assert isinstance(pool.metrics, JobsOnly)  # a subclass is a real sink
    with pytest.raises(TypeError):
        ThreadPool(1, metrics=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ThreadPool(1, tracer=object())  # type: ignore[arg-type]


def test_events_reach_a_custom_metrics_in_bulk() -> None:
    rec = Recorder()
    pool = ThreadPool(2, name="rec", metrics=rec).start()
    assert rec.calls[0] == ("add_source", ("rec", pool))
    for _ in range(30):
        pool.post_task(lambda: None)
    assert pool.wait_idle(WAIT)
    assert "tasks_ran" not in rec.names()  # buffered: the hot path made no call
    pool.flush_metrics()
    posts = [a for n, a in rec.calls if n == "tasks_posted"]
    assert posts == [("rec", 1, None, 30)]
    ran = [a for n, a in rec.calls if n == "tasks_ran"]
    assert sum(len(a[-1]) for a in ran) == 30
    assert all(a[:4] == ("rec", 1, None, "succeeded") for a in ran)
    pool.flush_metrics()  # nothing new: no more calls
    assert len([n for n in rec.names() if n in ("tasks_posted", "tasks_ran")]) == 1 + len(ran)
    pool.shutdown()
    assert rec.calls[-1] == ("remove_source", (pool,))


@pytest.mark.thread_unsafe(reason="caplog")
def test_failing_metrics_hooks_do_not_break_the_pool(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder(fail=True)
    with ThreadPool(2, name="broken", metrics=rec) as pool:
        tasks = [pool.post_task(lambda: None) for _ in range(10)]
        tasks.append(pool.post_task(fail))
        assert all(t.wait(WAIT) for t in tasks)
        pool.flush_metrics()
        pool.flush_metrics()
        assert pool.post_task(lambda: None).wait(WAIT)
    broken = [r for r in caplog.records if "metrics hook failed" in r.getMessage()]
    assert len(broken) == 1  # logged once per pool
    assert broken[0].runner == "broken"  # type: ignore[attr-defined]


def test_tracer_wraps_user_tasks_in_the_posters_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    class Tracer:
        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.seen: list[tuple[str, str, str]] = []

        def run_task(self, task: Task, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
            with self.lock:
                self.seen.append((task.name, task.runner.name, var.get()))
            fn(*args)

    tracer = Tracer()
    assert isinstance(tracer, TaskTracer)
    with ThreadPool(2, name="traced", tracer=tracer) as pool:
        seq = SequencedTaskRunner(pool, name="tseq")
        var.set("poster")
        pool.post_task(lambda: None, name="direct").wait(WAIT)
        seq.post_task(lambda: None, name="in-seq").wait(WAIT)
        failing = pool.post_task(fail, name="failing")
        assert failing.wait(WAIT)
        assert pool.wait_idle(WAIT)
        stats = pool.stats()
    assert failing.state.value == "failed"  # the exception went through the tracer
    assert stats["failed"] == 1
    # The sequenced runner's run loop is internal: not wrapped.
    assert sorted(tracer.seen) == [
        ("direct", "traced", "poster"),
        ("failing", "traced", "poster"),
        ("in-seq", "tseq", "poster"),
    ]


# ---- concurrency ---------------------------------------------------------------------------


def test_concurrent_posters_and_readers_lose_nothing() -> None:
    with observed_pool() as (pool, metrics):
        threads, per = 4, 2000
        stop = threading.Event()
        barrier = threading.Barrier(threads + 1)
        seen: list[int] = []

        def reader() -> None:
            last = 0
            while not stop.is_set():
                n = posted(metrics.snapshot(), pool.name)
                assert n >= last  # counters never go backwards
                last = n
            seen.append(last)

        def poster(i: int) -> None:
            traits = TaskTraits(category=f"c{i % 2}")
            barrier.wait(WAIT)
            for _ in range(per):
                pool.post_task(lambda: None, traits=traits)

        watcher = threading.Thread(target=reader)
        watcher.start()
        posters = [threading.Thread(target=poster, args=(i,)) for i in range(threads)]
        for t in posters:
            t.start()
        barrier.wait(WAIT)
        for t in posters:
            t.join()
        assert pool.wait_idle(WAIT)
        stop.set()
        watcher.join()
        snap = metrics.snapshot()
        assert posted(snap, pool.name) == threads * per
        assert outcomes(snap, pool.name)["succeeded"] == threads * per
        assert snap.run_seconds[(pool.name, 1)].count == threads * per
        assert snap.tasks[(pool.name, 1, "c0", "succeeded")] == threads * per // 2


def test_post_counter_reads_are_exact_under_concurrency() -> None:
    counter = PostCounter()
    flush_lock = threading.Lock()
    total = [0]
    stop = threading.Event()

    def flusher() -> None:
        while not stop.is_set():
            with flush_lock:
                total[0] += counter.take_new()

    def poster() -> None:
        for _ in range(20_000):
            counter.next()

    f = threading.Thread(target=flusher)
    f.start()
    ps = [threading.Thread(target=poster) for _ in range(3)]
    for t in ps:
        t.start()
    for t in ps:
        t.join()
    stop.set()
    f.join()
    with flush_lock:
        total[0] += counter.take_new()
    assert total[0] == 60_000


def test_task_times_drain_while_the_owner_appends() -> None:
    times = TaskTimes()
    lock = threading.Lock()
    drained: list[int] = []
    done = threading.Event()

    def drain() -> None:  # as ThreadPool._drain_locked does
        for buf in times.bufs.copy().values():
            n = len(buf)
            n -= n & 1
            chunk = buf[:n]
            del buf[:n]
            drained.extend(chunk)

    def drainer() -> None:
        while not done.is_set():
            with lock:
                drain()

    d = threading.Thread(target=drainer)
    d.start()
    for i in range(20_000):
        buf = times.buf("r", i % 3, None)
        buf.append(i)
        buf.append(-i)
    done.set()
    d.join()
    drain()
    assert len(drained) == 40_000
    pairs = list(zip(drained[0::2], drained[1::2], strict=True))
    assert all(b == -a for a, b in pairs)  # never torn
    assert sorted(a for a, _ in pairs) == list(range(20_000))


# ---- histograms ----------------------------------------------------------------------------


def test_bulk_and_single_observations_agree() -> None:
    bounds = tuple(round(b * 1e9) for b in DEFAULT_DURATION_BUCKETS)
    rng = random.Random(7)
    values = [rng.choice(bounds) + rng.choice((-1, 0, 1)) for _ in range(500)]
    values += [rng.randrange(0, 100 * 10**9) for _ in range(500)] + [0, -5]
    one, bulk = Hist(bounds), Hist(bounds)
    for v in values:
        one.observe(v)
    bulk.observe_many(values)
    assert bulk.counts == one.counts
    assert (bulk.total, bulk.count) == (one.total, one.count)
    exact = [sum(1 for v in values if v <= b) for b in bounds]
    cumulative = [sum(one.counts[: i + 1]) for i in range(len(bounds))]
    assert cumulative == exact  # le semantics: a value equal to a bound is inside it


def test_histogram_data_quantile_and_merge() -> None:
    h = HistogramData(bounds=(1.0, 2.0, 4.0), counts=(2, 2, 0, 1), sum=9.0, count=5)
    assert h.cumulative() == [(1.0, 2), (2.0, 4), (4.0, 4), (float("inf"), 5)]
    assert h.quantile(0.2) == pytest.approx(0.5)
    assert h.quantile(0.6) == pytest.approx(1.5)
    assert h.quantile(1.0) == 4.0  # in +Inf: the last bound
    assert h.mean == pytest.approx(1.8)
    empty = HistogramData(bounds=(1.0,), counts=(0, 0), sum=0.0, count=0)
    assert empty.quantile(0.5) is None and empty.mean is None
    merged = merge_histograms([h, h])
    assert merged is not None and merged.counts == (4, 4, 0, 2) and merged.count == 10
    assert merge_histograms([]) is None
    with pytest.raises(ValueError):
        merge_histograms([h, empty])
    with pytest.raises(ValueError):
        h.quantile(1.5)
    with pytest.raises(ValueError):
        InProcessMetrics(duration_buckets=(1.0, 0.5))
