"""``InProcessMetrics``: the collector that keeps every event in this process
(one lock guards its tables; the hot path never reaches it)."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taskrunner.runtime.metrics.api import (
    DEFAULT_DURATION_BUCKETS,
    DEFAULT_JOB_ATTEMPT_BUCKETS,
    DEFAULT_JOB_DURATION_BUCKETS,
    OUTCOMES,
    MetricsSource,
    RunnerGauges,
)
from taskrunner.runtime.metrics.histograms import (
    Hist,
    HistogramData,
    merge_histograms,
    scaled_bounds,
)

if TYPE_CHECKING:
    pass

log = logging.getLogger("taskrunner.metrics")


#: Job states after which a job is done (its attempts are observed then).
_FINAL_JOB_STATES = frozenset({"succeeded", "failed", "cancelled"})


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
        self._duration_bounds = scaled_bounds(duration_buckets, 1e9)
        self._job_bounds = scaled_bounds(job_duration_buckets, 1e9)
        self._attempt_bounds = scaled_bounds(job_attempt_buckets, 1.0)
        self._lock = threading.Lock()
        # (kind, *labels) -> count, and -> histogram; kinds are the _K* names.
        self._counters: dict[tuple[Any, ...], int] = {}
        self._hists: dict[tuple[Any, ...], Hist] = {}
        self._sources_lock = threading.Lock()
        self._sources: list[tuple[str, weakref.ref[MetricsSource]]] = []

    def _hist(self, key: tuple[Any, ...], bounds: tuple[int, ...]) -> Hist:
        """The histogram for ``key`` (caller holds ``_lock``)."""
        h = self._hists.get(key)
        if h is None:
            h = self._hists[key] = Hist(bounds)
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
