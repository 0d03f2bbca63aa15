"""Observability hooks: the :class:`Metrics` protocol, its no-op and in-process
collectors, and the :class:`TaskTracer` hook that wraps task execution.

Design
------
*Events are pushed, levels are pulled.*  Events -- tasks posted, tasks that
ran, a task that ended without running, a full queue applying its policy,
timers firing late, a job changing state, a store write retried -- are pushed
to the pool's ``Metrics`` object.  Levels -- queue depth per priority, running
tasks, delayed tasks, workers -- are never pushed: each pool and runner is a
:class:`MetricsSource` whose :meth:`~MetricsSource.metrics_gauges` reads its
queues when a collector looks (:meth:`InProcessMetrics.snapshot`, a
Prometheus scrape).  A queue depth therefore costs nothing per task.

*The hot path makes no call.*  A post bumps a lock-free counter (the C
``next()`` of an ``itertools.count``) and stamps the task with the time;
a worker times each task and appends two integers to a buffer of its own
thread.  The pool pushes these to the ``Metrics`` object in bulk
(:meth:`Metrics.tasks_posted` and :meth:`Metrics.tasks_ran` with thousands of
values per call): when a buffer holds 1024 tasks, when its thread exits, at
shutdown, and whenever a reader asks (:meth:`MetricsSource.flush_metrics`,
which :meth:`InProcessMetrics.snapshot` calls on every source first, so what
a reader sees is complete up to the moment it looked).  A sink that pushes
elsewhere instead of being read (statsd, say) should call its sources'
``flush_metrics`` on a timer.  Failures, cancellations, drops, rejections and
tasks run outside the runtime's own threads (``caller_runs``) are rare and
reported one call each.

*Off means off.*  ``ThreadPool(metrics=None)`` (the default, and what a
:class:`NoopMetrics` is turned into) makes no call at all: the worker loop
tests one local variable per task, the post path one attribute.

Outcomes
--------
Every posted task ends in exactly one outcome, reported once: ``succeeded``
and ``failed`` (it ran: :meth:`Metrics.tasks_ran`), ``cancelled``,
``dropped`` (shutdown, a closed runner, or a refused post after its task was
created) and ``rejected`` (a full queue's policy discarded it:
:meth:`Metrics.task_not_run`).  A queue policy applied to a task is also
reported on its own (:meth:`Metrics.task_rejected`), including
``caller_runs``, whose task then runs and is counted by its run.  So
``posted == sum(outcomes) + pending`` whenever the pools are idle.  Internal
tasks (a runner's run loop on the pool) are never counted.  A task's outcome
(and its timings) are recorded *before* its handle says it finished, so once
``task.wait()`` returned, the next read counts it.

Thread-safety
-------------
Every hook may be called from any thread at once and must return quickly: it
runs on the scheduler's threads, sometimes under a pool's ``_flush_lock``, so
it must not call back into the pool.  A hook that raises does not break the
scheduler: the pool logs the first failure (ERROR, ``taskrunner.runtime.pool.threadpool``) and
goes on.  :class:`InProcessMetrics` never relies on the GIL: one lock guards
its tables, and the hot path never reaches it (it sees one call per bulk
push).

Shutdown
--------
A pool pushes everything pending when it shuts down and each worker when it
exits, then the pool removes itself as a source.  Counters and histograms stay
in the collector (one collector may outlive many pools; counters never go
backwards); gauges of a closed pool or runner disappear.
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from taskrunner.runtime.task import Task

__all__ = [
    "CANCELLED",
    "DEFAULT_DURATION_BUCKETS",
    "DEFAULT_JOB_ATTEMPT_BUCKETS",
    "DEFAULT_JOB_DURATION_BUCKETS",
    "DROPPED",
    "FAILED",
    "OUTCOMES",
    "REJECTED",
    "SUCCEEDED",
    "HistogramData",
    "InProcessMetrics",
    "Metrics",
    "MetricsSnapshot",
    "MetricsSource",
    "NoopMetrics",
    "RunnerGauges",
    "TaskTracer",
    "merge_histograms",
]

log = logging.getLogger("taskrunner.metrics")

#: Task outcomes (the ``outcome`` label).  Each posted task ends in exactly one.
SUCCEEDED = "succeeded"  #: ran and returned
FAILED = "failed"  #: ran and raised
CANCELLED = "cancelled"  #: its handle's cancel() won before it started
DROPPED = "dropped"  #: never ran: shutdown, a closed runner, or a refused post
REJECTED = "rejected"  #: never ran: a full queue's policy discarded it
OUTCOMES = (SUCCEEDED, FAILED, CANCELLED, DROPPED, REJECTED)

#: Upper bounds (seconds) for task run time, queue wait and timer lateness:
#: 10 µs to 60 s, 1-2.5-5 steps.
DEFAULT_DURATION_BUCKETS: tuple[float, ...] = (
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
#: Upper bounds (seconds) for one job attempt: 1 ms to 1 h.
DEFAULT_JOB_DURATION_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
#: Upper bounds for the number of attempts a job used before a final state.
DEFAULT_JOB_ATTEMPT_BUCKETS: tuple[float, ...] = (1, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50, 100)

#: Job states after which a job is done (its attempts are observed then).
_FINAL_JOB_STATES = frozenset({"succeeded", "failed", "cancelled"})


# ---- the gauge readings and their sources ----------------------------------------------


@dataclass(frozen=True, slots=True)
class RunnerGauges:
    """One runner's levels, read when a collector looks (never pushed).

    A pool fills ``queued_by_priority`` (its ready queues, by priority value),
    ``delayed`` and ``workers`` (by group: ``"cpu"``, ``"blocking"``); a
    runner built on a pool fills ``queued`` (tasks waiting in the runner
    itself) and, when its queue is bounded, ``capacity``.
    """

    #: ``"pool"`` or ``"runner"``.
    kind: str
    #: Tasks waiting (all priorities).
    queued: int
    #: Tasks running now.
    running: int
    #: Pools: ready tasks by priority value (``TaskPriority``), 0 included.
    queued_by_priority: Mapping[int, int] = field(default_factory=dict)
    #: Pools: delayed tasks not yet due.
    delayed: int = 0
    #: Bounded runners: the queue's capacity.
    capacity: int | None = None
    #: Pools: live worker threads by group.
    workers: Mapping[str, int] = field(default_factory=dict)


@runtime_checkable
class MetricsSource(Protocol):
    """A pool or runner, as a collector sees it (``Metrics.add_source``).

    Both methods may be called from any thread, at any time, also during and
    after shutdown; neither blocks for long.
    """

    def metrics_gauges(self) -> RunnerGauges:
        """Read the levels now."""
        ...

    def flush_metrics(self) -> None:
        """Push every event still buffered to the metrics now (a collector
        calls it before reading; a push-based sink may call it on a timer)."""
        ...


# ---- the protocol --------------------------------------------------------------------


@runtime_checkable
class Metrics(Protocol):
    """What the scheduler, the runners and the JobManager report.

    ``runner`` is the runner's ``name``; ``priority`` the task's
    ``TaskPriority`` value (an int); ``category`` its ``TaskTraits.category``.
    Task durations are integer nanoseconds of ``time.monotonic_ns`` (real time,
    even under a mock clock); a job attempt's are seconds.  Every method may
    be called from any thread at once and should return quickly; see the module
    docstring for the outcomes and for when buffered events arrive.
    """

    def tasks_posted(self, runner: str, priority: int, category: str | None, count: int) -> None:
        """``count`` more tasks were accepted by ``runner`` (pending, with a handle)."""
        ...

    def tasks_ran(
        self,
        runner: str,
        priority: int,
        category: str | None,
        outcome: str,
        queue_wait_ns: Sequence[int],
        run_ns: Sequence[int],
    ) -> None:
        """``len(run_ns)`` tasks ran and ended with ``outcome`` (``succeeded``
        or ``failed``).  ``queue_wait_ns[i]`` is task i's wait from ready
        (posted, or due for a delayed task) to start; ``run_ns[i]`` its run
        time.  The sequences have the same length and are the callee's to keep
        (or reorder)."""
        ...

    def task_not_run(self, runner: str, priority: int, category: str | None, outcome: str) -> None:
        """A task ended without running: ``cancelled``, ``dropped`` or ``rejected``."""
        ...

    def task_rejected(self, runner: str, priority: int, category: str | None, policy: str) -> None:
        """A full queue applied ``policy`` (a ``QueuePolicy`` value) to a task.
        Unless the policy is ``caller_runs`` the task also ends ``rejected``
        (reported separately through :meth:`task_not_run`)."""
        ...

    def timers_fired(self, runner: str, lateness_ns: Sequence[int]) -> None:
        """Delayed tasks of pool ``runner`` fell due; ``lateness_ns[i]`` is how
        long after its deadline the i-th was handed to its queue (>= 0, by the
        pool's clock).  Called once per batch of due timers."""
        ...

    def add_source(self, runner: str, source: MetricsSource) -> None:
        """Register a pool or runner.  The collector may hold it weakly (the
        in-process collector does), so a source needs no unregistering to be
        garbage-collected."""
        ...

    def remove_source(self, source: MetricsSource) -> None:
        """Forget a source (no error if it is unknown)."""
        ...

    def job_state_changed(self, job_type: str, state: str, attempt: int) -> None:
        """A job of ``job_type`` entered ``state`` (a ``JobState`` value);
        ``attempt`` is the number of attempts it has started so far."""
        ...

    def job_attempt_finished(
        self, job_type: str, attempt: int, outcome: str, duration_s: float
    ) -> None:
        """Attempt number ``attempt`` ended with ``outcome`` (for example
        ``succeeded``, ``retrying``, ``failed``, ``cancelled``, ``timeout``,
        ``interrupted``) after ``duration_s`` seconds."""
        ...

    def store_write_retried(self, operation: str) -> None:
        """A job-store write (``operation``: insert, claim, finish, ...)
        failed and will be retried."""
        ...

    def store_write_failed(self, operation: str) -> None:
        """A job-store write failed for good (its retries ran out)."""
        ...


class NoopMetrics:
    """A :class:`Metrics` that records nothing.

    A pool given one treats it as ``metrics=None``: it makes no call at all.
    Subclass it to implement only the hooks you need (a subclass is called).
    """

    __slots__ = ()

    def tasks_posted(self, runner: str, priority: int, category: str | None, count: int) -> None:
        pass

    def tasks_ran(
        self,
        runner: str,
        priority: int,
        category: str | None,
        outcome: str,
        queue_wait_ns: Sequence[int],
        run_ns: Sequence[int],
    ) -> None:
        pass

    def task_not_run(self, runner: str, priority: int, category: str | None, outcome: str) -> None:
        pass

    def task_rejected(self, runner: str, priority: int, category: str | None, policy: str) -> None:
        pass

    def timers_fired(self, runner: str, lateness_ns: Sequence[int]) -> None:
        pass

    def add_source(self, runner: str, source: MetricsSource) -> None:
        pass

    def remove_source(self, source: MetricsSource) -> None:
        pass

    def job_state_changed(self, job_type: str, state: str, attempt: int) -> None:
        pass

    def job_attempt_finished(
        self, job_type: str, attempt: int, outcome: str, duration_s: float
    ) -> None:
        pass

    def store_write_retried(self, operation: str) -> None:
        pass

    def store_write_failed(self, operation: str) -> None:
        pass


# ---- the tracing hook ---------------------------------------------------------------------


@runtime_checkable
class TaskTracer(Protocol):
    """Wraps the execution of each task (``ThreadPool(tracer=...)``), for
    example in a tracing span (:class:`taskrunner.integrations.otel.OtelTracer`).

    ``run_task`` is called on the thread that runs the task, inside the task's
    copy of the poster's ``contextvars`` context (so a tracer that keeps its
    current span in a context variable sees the poster's span as current).  It
    must call ``fn(*args)`` exactly once and let its exception propagate: the
    scheduler records the outcome and reports the error.  Internal tasks (a
    runner's run loop) are not wrapped; the runner's own tasks are.
    """

    def run_task(self, task: Task, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        """Run ``fn(*args)`` for ``task``."""
        ...


# ---- histograms --------------------------------------------------------------------------------


def _scaled_bounds(bounds: Iterable[float], per_unit: float) -> tuple[int, ...]:
    out = tuple(round(b * per_unit) for b in bounds)
    if not out or any(b <= a for a, b in pairwise(out)):
        raise ValueError("histogram bounds must be a non-empty, strictly increasing sequence")
    return out


class _Hist:
    """Bucket counts over integer values (not cumulative; the last is +Inf).
    Not thread-safe by itself: guarded by its collector's lock."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[int, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0
        self.count = 0

    def observe(self, value: int) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def observe_many(self, values: Sequence[int]) -> None:
        n = len(values)
        if n < 8:
            for v in values:
                self.observe(v)
            return
        self.total += sum(values)
        self.count += n
        # Sort once (in C; in place when handed a list, which the protocol
        # allows), then place the values bucket by bucket with one bisect each;
        # values cluster, so this usually ends after a few buckets.
        if type(values) is list:
            ordered = values
            ordered.sort()
        else:
            ordered = sorted(values)
        counts = self.counts
        placed = 0
        for i, bound in enumerate(self.bounds):
            upto = bisect_right(ordered, bound, placed)  # values <= bound
            if upto > placed:
                counts[i] += upto - placed
                placed = upto
                if placed == n:
                    return
        counts[-1] += n - placed


@dataclass(frozen=True, slots=True)
class HistogramData:
    """A histogram read from a collector.

    ``bounds`` are the buckets' upper bounds (seconds, or a count) in
    increasing order; ``counts`` has one entry per bound plus the +Inf bucket
    and is *not* cumulative; ``sum`` and ``count`` cover every observation.
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float
    count: int

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= bound)`` pairs, ending with ``(inf, count)``."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, c in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += c
            out.append((bound, running))
        return out

    def quantile(self, q: float) -> float | None:
        """An estimate of the ``q`` quantile (0..1), interpolated linearly
        inside the bucket that holds it (like Prometheus'
        ``histogram_quantile``); None without observations, the last bound if
        it falls in the +Inf bucket."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q}")
        if self.count == 0:
            return None
        rank = q * self.count
        lower, seen = 0.0, 0
        for bound, c in zip(self.bounds, self.counts, strict=False):
            if c and seen + c >= rank:
                return lower + (bound - lower) * ((rank - seen) / c)
            seen += c
            lower = bound
        return self.bounds[-1]

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None


def merge_histograms(parts: Iterable[HistogramData]) -> HistogramData | None:
    """The sum of histograms with the same bounds (None if there are none)."""
    total: HistogramData | None = None
    for h in parts:
        if total is None:
            total = h
            continue
        if h.bounds != total.bounds:
            raise ValueError("cannot merge histograms with different bounds")
        total = HistogramData(
            bounds=total.bounds,
            counts=tuple(x + y for x, y in zip(total.counts, h.counts, strict=True)),
            sum=total.sum + h.sum,
            count=total.count + h.count,
        )
    return total


# ---- the in-process collector ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Everything an :class:`InProcessMetrics` holds, read at one time.

    Counters are keyed by their labels; histograms are :class:`HistogramData`
    in seconds (attempt counts for ``job_attempts_used``).  ``runners`` holds
    the gauges read for this snapshot, by runner name (sources sharing a name
    are added up).
    """

    #: (runner, priority, category) -> tasks posted
    posted: Mapping[tuple[str, int, str | None], int]
    #: (runner, priority, category, outcome) -> tasks that ended so
    tasks: Mapping[tuple[str, int, str | None, str], int]
    #: (runner, policy) -> times a full queue applied ``policy``
    rejections: Mapping[tuple[str, str], int]
    #: (runner, priority) -> run time of tasks that ran
    run_seconds: Mapping[tuple[str, int], HistogramData]
    #: (runner, priority) -> wait from ready to start
    queue_wait_seconds: Mapping[tuple[str, int], HistogramData]
    #: pool -> how late delayed tasks were handed to their queues
    timer_lateness_seconds: Mapping[str, HistogramData]
    #: (job type, state) -> transitions into ``state``
    jobs: Mapping[tuple[str, str], int]
    #: (job type, outcome) -> attempts that ended so
    job_attempts: Mapping[tuple[str, str], int]
    #: (job type, outcome) -> attempt durations
    job_attempt_seconds: Mapping[tuple[str, str], HistogramData]
    #: (job type, final state) -> attempts a job had used
    job_attempts_used: Mapping[tuple[str, str], HistogramData]
    #: operation -> store writes retried
    store_write_retries: Mapping[str, int]
    #: operation -> store writes that failed for good
    store_write_failures: Mapping[str, int]
    #: runner -> its gauges now
    runners: Mapping[str, RunnerGauges]


class InProcessMetrics:
    """A thread-safe, in-process :class:`Metrics` collector: counters and
    histograms in memory, read with :meth:`snapshot` (and summarised by a
    pool's ``stats()["metrics"]``); :mod:`taskrunner.integrations.prometheus` exports it
    at scrape time.  Bucket bounds are in seconds (``job_attempt_buckets``:
    attempts).  One collector may serve many pools and runners; their names
    are the ``runner`` label.

    Locks: ``_lock`` guards the tables (``_counters``, ``_hists``);
    ``_sources_lock`` guards ``_sources``.  Neither is held while a source's
    method runs, and no other lock is taken while one is held.
    """

    def __init__(
        self,
        *,
        duration_buckets: Sequence[float] = DEFAULT_DURATION_BUCKETS,
        job_duration_buckets: Sequence[float] = DEFAULT_JOB_DURATION_BUCKETS,
        job_attempt_buckets: Sequence[float] = DEFAULT_JOB_ATTEMPT_BUCKETS,
    ) -> None:
        self._duration_bounds = _scaled_bounds(duration_buckets, 1e9)
        self._job_bounds = _scaled_bounds(job_duration_buckets, 1e9)
        self._attempt_bounds = _scaled_bounds(job_attempt_buckets, 1.0)
        self._lock = threading.Lock()
        # (kind, *labels) -> count, and -> histogram; kinds are the _K* names.
        self._counters: dict[tuple[Any, ...], int] = {}
        self._hists: dict[tuple[Any, ...], _Hist] = {}
        self._sources_lock = threading.Lock()
        self._sources: list[tuple[str, weakref.ref[MetricsSource]]] = []

    def _hist(self, key: tuple[Any, ...], bounds: tuple[int, ...]) -> _Hist:
        """The histogram for ``key`` (caller holds ``_lock``)."""
        h = self._hists.get(key)
        if h is None:
            h = self._hists[key] = _Hist(bounds)
        return h

    def _add(self, key: tuple[Any, ...], n: int = 1) -> None:
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + n

    # ---- tasks ----------------------------------------------------------------------------------

    def tasks_posted(self, runner: str, priority: int, category: str | None, count: int) -> None:
        self._add((_KPOSTED, runner, int(priority), category), count)

    def tasks_ran(
        self,
        runner: str,
        priority: int,
        category: str | None,
        outcome: str,
        queue_wait_ns: Sequence[int],
        run_ns: Sequence[int],
    ) -> None:
        priority = int(priority)
        key = (_KTASKS, runner, priority, category, outcome)
        bounds = self._duration_bounds
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + len(run_ns)
            self._hist((_KRUN, runner, priority), bounds).observe_many(run_ns)
            self._hist((_KWAIT, runner, priority), bounds).observe_many(queue_wait_ns)

    def task_not_run(self, runner: str, priority: int, category: str | None, outcome: str) -> None:
        self._add((_KTASKS, runner, int(priority), category, outcome))

    def task_rejected(self, runner: str, priority: int, category: str | None, policy: str) -> None:
        self._add((_KREJECTIONS, runner, policy))

    def timers_fired(self, runner: str, lateness_ns: Sequence[int]) -> None:
        with self._lock:
            self._hist((_KLATENESS, runner), self._duration_bounds).observe_many(lateness_ns)

    # ---- sources --------------------------------------------------------------------------------

    def add_source(self, runner: str, source: MetricsSource) -> None:
        ref = weakref.ref(source)
        with self._sources_lock:
            self._sources.append((runner, ref))

    def remove_source(self, source: MetricsSource) -> None:
        with self._sources_lock:
            self._sources = [(n, r) for n, r in self._sources if r() not in (None, source)]

    def _live_sources(self) -> list[tuple[str, MetricsSource]]:
        with self._sources_lock:
            pairs = [(n, r()) for n, r in self._sources]
            live = [(n, s) for n, s in pairs if s is not None]
            if len(live) < len(pairs):  # some were garbage-collected: forget them
                self._sources = [(n, r) for n, r in self._sources if r() is not None]
        return live

    # ---- jobs -----------------------------------------------------------------------------------

    def job_state_changed(self, job_type: str, state: str, attempt: int) -> None:
        state = str(state)
        with self._lock:
            key = (_KJOBS, job_type, state)
            self._counters[key] = self._counters.get(key, 0) + 1
            if state in _FINAL_JOB_STATES:
                self._hist((_KJOB_USED, job_type, state), self._attempt_bounds).observe(attempt)

    def job_attempt_finished(
        self, job_type: str, attempt: int, outcome: str, duration_s: float
    ) -> None:
        value = max(0, round(duration_s * 1e9))
        with self._lock:
            key = (_KJOB_ATTEMPTS, job_type, outcome)
            self._counters[key] = self._counters.get(key, 0) + 1
            self._hist((_KJOB_SECONDS, job_type, outcome), self._job_bounds).observe(value)

    def store_write_retried(self, operation: str) -> None:
        self._add((_KSTORE_RETRIES, operation))

    def store_write_failed(self, operation: str) -> None:
        self._add((_KSTORE_FAILURES, operation))

    # ---- reading --------------------------------------------------------------------------------

    def snapshot(self) -> MetricsSnapshot:
        """Read everything.  First every live source pushes what it buffered
        and reports its gauges (each source once, outside this collector's
        locks); then the tables are copied under ``_lock``.  Thread-safe."""
        runners: dict[str, RunnerGauges] = {}
        for runner, source in self._live_sources():
            try:
                source.flush_metrics()
                gauges = source.metrics_gauges()
            except Exception:
                log.exception("metrics source %s failed", runner, extra={"runner": runner})
                continue
            prev = runners.get(runner)
            runners[runner] = gauges if prev is None else _add_gauges(prev, gauges)
        with self._lock:
            counters = dict(self._counters)
            hists = {
                k: (tuple(h.counts), h.total, h.count, h.bounds) for k, h in self._hists.items()
            }
        by_kind: dict[str, dict[Any, Any]] = {}
        for key, n in counters.items():
            by_kind.setdefault(key[0], {})[key[1:] if len(key) > 2 else key[1]] = n
        h_by_kind: dict[str, dict[Any, HistogramData]] = {}
        for key, (counts, total, count, bounds) in hists.items():
            per_unit = 1.0 if key[0] == _KJOB_USED else 1e9  # values are ns, or attempts
            data = HistogramData(
                bounds=tuple(b / per_unit for b in bounds),
                counts=counts,
                sum=total / per_unit,
                count=count,
            )
            h_by_kind.setdefault(key[0], {})[key[1:] if len(key) > 2 else key[1]] = data
        return MetricsSnapshot(
            posted=by_kind.get(_KPOSTED, {}),
            tasks=by_kind.get(_KTASKS, {}),
            rejections=by_kind.get(_KREJECTIONS, {}),
            run_seconds=h_by_kind.get(_KRUN, {}),
            queue_wait_seconds=h_by_kind.get(_KWAIT, {}),
            timer_lateness_seconds=h_by_kind.get(_KLATENESS, {}),
            jobs=by_kind.get(_KJOBS, {}),
            job_attempts=by_kind.get(_KJOB_ATTEMPTS, {}),
            job_attempt_seconds=h_by_kind.get(_KJOB_SECONDS, {}),
            job_attempts_used=h_by_kind.get(_KJOB_USED, {}),
            store_write_retries=by_kind.get(_KSTORE_RETRIES, {}),
            store_write_failures=by_kind.get(_KSTORE_FAILURES, {}),
            runners=runners,
        )

    def summary(self, runner: str) -> dict[str, Any]:
        """A plain-dict digest of one runner's task metrics (what a pool's
        ``stats()["metrics"]`` shows): tasks posted, ended by outcome,
        rejections by policy, and run time, queue wait and timer lateness as
        count, mean, p50 and p99 in milliseconds (estimated from the buckets)."""
        snap = self.snapshot()
        outcomes = dict.fromkeys(OUTCOMES, 0)
        for (r, _p, _c, outcome), n in snap.tasks.items():
            if r == runner:
                outcomes[outcome] = outcomes.get(outcome, 0) + n
        return {
            "posted": sum(n for (r, _p, _c), n in snap.posted.items() if r == runner),
            "outcomes": outcomes,
            "rejections": {p: n for (r, p), n in snap.rejections.items() if r == runner},
            "run_ms": _digest(h for (r, _p), h in snap.run_seconds.items() if r == runner),
            "queue_wait_ms": _digest(
                h for (r, _p), h in snap.queue_wait_seconds.items() if r == runner
            ),
            "timer_lateness_ms": _digest(
                h for r, h in snap.timer_lateness_seconds.items() if r == runner
            ),
        }


# Table kinds: the first item of each key in InProcessMetrics' tables.
_KPOSTED = "posted"  # (_KPOSTED, runner, priority, category)
_KTASKS = "tasks"  # (_KTASKS, runner, priority, category, outcome)
_KREJECTIONS = "rejections"  # (_KREJECTIONS, runner, policy)
_KRUN = "run"  # (_KRUN, runner, priority): ns
_KWAIT = "wait"  # (_KWAIT, runner, priority): ns
_KLATENESS = "lateness"  # (_KLATENESS, runner): ns
_KJOBS = "jobs"  # (_KJOBS, type, state)
_KJOB_ATTEMPTS = "job_attempts"  # (_KJOB_ATTEMPTS, type, outcome)
_KJOB_SECONDS = "job_seconds"  # (_KJOB_SECONDS, type, outcome): ns
_KJOB_USED = "job_used"  # (_KJOB_USED, type, state): attempts
_KSTORE_RETRIES = "store_retries"  # (_KSTORE_RETRIES, operation)
_KSTORE_FAILURES = "store_failures"  # (_KSTORE_FAILURES, operation)


def _add_gauges(a: RunnerGauges, b: RunnerGauges) -> RunnerGauges:
    """Two sources with one name: their levels added up."""
    by_prio = dict(a.queued_by_priority)
    for p, n in b.queued_by_priority.items():
        by_prio[p] = by_prio.get(p, 0) + n
    workers = dict(a.workers)
    for g, n in b.workers.items():
        workers[g] = workers.get(g, 0) + n
    capacity = None
    if a.capacity is not None or b.capacity is not None:
        capacity = (a.capacity or 0) + (b.capacity or 0)
    return RunnerGauges(
        kind=a.kind if a.kind == b.kind else "pool",
        queued=a.queued + b.queued,
        running=a.running + b.running,
        queued_by_priority=by_prio,
        delayed=a.delayed + b.delayed,
        capacity=capacity,
        workers=workers,
    )


def _digest(parts: Iterable[HistogramData]) -> dict[str, float | int | None]:
    h = merge_histograms(parts)
    if h is None or h.count == 0:
        return {"count": 0, "mean": None, "p50": None, "p99": None}

    def ms(x: float | None) -> float | None:
        return None if x is None else x * 1e3

    return {
        "count": h.count,
        "mean": ms(h.mean),
        "p50": ms(h.quantile(0.5)),
        "p99": ms(h.quantile(0.99)),
    }
