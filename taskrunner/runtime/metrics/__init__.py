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
scheduler: the pool logs the first failure (ERROR, ``taskrunner.pool``) and
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

from taskrunner.runtime.metrics.api import (
    CANCELLED,
    DEFAULT_DURATION_BUCKETS,
    DEFAULT_JOB_ATTEMPT_BUCKETS,
    DEFAULT_JOB_DURATION_BUCKETS,
    DROPPED,
    FAILED,
    OUTCOMES,
    REJECTED,
    SUCCEEDED,
    Metrics,
    MetricsSource,
    NoopMetrics,
    RunnerGauges,
    TaskTracer,
)
from taskrunner.runtime.metrics.collector import InProcessMetrics, MetricsSnapshot
from taskrunner.runtime.metrics.histograms import HistogramData, merge_histograms

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
