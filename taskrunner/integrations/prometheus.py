"""Prometheus export of an :class:`~taskrunner.runtime.metrics.InProcessMetrics`.

Install with the ``prometheus`` extra (``pip install 'taskrunner[prometheus]'``)::

    from prometheus_client import CollectorRegistry
    from taskrunner import ThreadPool
    from taskrunner.integrations.prometheus import register, serve

    registry = CollectorRegistry()
    metrics = register(registry=registry)       # an InProcessMetrics, exported
    pool = ThreadPool(metrics=metrics).start()
    server, thread = serve(9464, registry=registry)

The collector reads the in-process counters at scrape time, so the hot path
pays only for the in-process collector; a scrape costs one
:meth:`~taskrunner.runtime.metrics.InProcessMetrics.snapshot`.  Collecting is
thread-safe and may run while the pools work.

Metric names (stable; a change is a breaking change)
------------------------------------------------------
Labels: ``runner`` is a pool's or runner's ``name`` (name your runners: the
default names of runners contain an object id); ``priority`` is
``best_effort``, ``user_visible`` or ``user_blocking``; ``outcome`` is
``succeeded``, ``failed``, ``cancelled``, ``dropped`` or ``rejected``.

=============================================  =========  ==============================
name                                           type       labels
=============================================  =========  ==============================
``taskrunner_tasks_posted_total``              counter    runner, priority
``taskrunner_tasks_total``                     counter    runner, priority, outcome
``taskrunner_category_tasks_total``            counter    runner, category, outcome
``taskrunner_task_duration_seconds``           histogram  runner, priority
``taskrunner_task_queue_wait_seconds``         histogram  runner, priority
``taskrunner_queue_rejections_total``          counter    runner, policy
``taskrunner_queue_depth``                     gauge      runner, priority
``taskrunner_runner_queue_depth``              gauge      runner
``taskrunner_runner_queue_capacity``           gauge      runner
``taskrunner_tasks_running``                   gauge      runner
``taskrunner_delayed_tasks``                   gauge      runner
``taskrunner_workers``                         gauge      runner, group
``taskrunner_timer_lateness_seconds``          histogram  runner
``taskrunner_jobs_total``                      counter    type, state
``taskrunner_job_attempts_total``              counter    type, outcome
``taskrunner_job_attempt_duration_seconds``    histogram  type, outcome
``taskrunner_job_attempts_used``               histogram  type, state
``taskrunner_store_write_retries_total``       counter    operation
``taskrunner_store_write_failures_total``      counter    operation
=============================================  =========  ==============================

See :data:`METRICS` for what each one counts.  ``taskrunner_queue_depth`` is a
pool's ready queue by priority; ``taskrunner_runner_queue_depth`` the queue of
a runner built on a pool (sequenced, parallel, single-thread).  Gauges of a
pool or runner disappear once it has shut down; counters stay.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

try:
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "taskrunner.integrations.prometheus needs prometheus-client: "
        "pip install 'taskrunner[prometheus]' (or prometheus-client>=0.20)"
    ) from exc

from taskrunner.runtime.metrics import HistogramData, InProcessMetrics, MetricsSnapshot
from taskrunner.runtime.traits import TaskPriority

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

__all__ = ["METRICS", "MetricSpec", "TaskrunnerCollector", "register", "serve"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One exported metric family: its full name (without the ``_total``
    suffix a counter's sample gets), type, label names and help text."""

    name: str
    type: str
    labels: tuple[str, ...]
    help: str


def _spec(name: str, kind: str, labels: tuple[str, ...], text: str) -> MetricSpec:
    return MetricSpec(name, kind, labels, text)


#: Every family the collector exports, by name.  Counter names omit ``_total``
#: (prometheus-client adds it to the sample).
METRICS: Mapping[str, MetricSpec] = {
    s.name: s
    for s in (
        _spec(
            "taskrunner_tasks_posted",
            "counter",
            ("runner", "priority"),
            "Tasks accepted by a runner.",
        ),
        _spec(
            "taskrunner_tasks",
            "counter",
            ("runner", "priority", "outcome"),
            "Tasks ended, by outcome (succeeded, failed, cancelled, dropped, rejected).",
        ),
        _spec(
            "taskrunner_category_tasks",
            "counter",
            ("runner", "category", "outcome"),
            "Tasks with a category ended, by outcome.",
        ),
        _spec(
            "taskrunner_task_duration_seconds",
            "histogram",
            ("runner", "priority"),
            "Run time of tasks that ran.",
        ),
        _spec(
            "taskrunner_task_queue_wait_seconds",
            "histogram",
            ("runner", "priority"),
            "Wait from ready (posted, or due) to start, of tasks that ran.",
        ),
        _spec(
            "taskrunner_queue_rejections",
            "counter",
            ("runner", "policy"),
            "Times a full bounded queue applied its policy.",
        ),
        _spec(
            "taskrunner_queue_depth",
            "gauge",
            ("runner", "priority"),
            "Tasks ready and waiting in a pool's queues.",
        ),
        _spec(
            "taskrunner_runner_queue_depth",
            "gauge",
            ("runner",),
            "Tasks waiting in a runner's own queue (sequenced, parallel, single-thread).",
        ),
        _spec(
            "taskrunner_runner_queue_capacity",
            "gauge",
            ("runner",),
            "Capacity of a bounded runner's queue.",
        ),
        _spec("taskrunner_tasks_running", "gauge", ("runner",), "Tasks running now."),
        _spec("taskrunner_delayed_tasks", "gauge", ("runner",), "Delayed tasks not yet due."),
        _spec("taskrunner_workers", "gauge", ("runner", "group"), "Live worker threads."),
        _spec(
            "taskrunner_timer_lateness_seconds",
            "histogram",
            ("runner",),
            "How late delayed tasks were handed to their queues after their deadline.",
        ),
        _spec("taskrunner_jobs", "counter", ("type", "state"), "Job transitions into a state."),
        _spec(
            "taskrunner_job_attempts",
            "counter",
            ("type", "outcome"),
            "Job attempts ended, by outcome.",
        ),
        _spec(
            "taskrunner_job_attempt_duration_seconds",
            "histogram",
            ("type", "outcome"),
            "Duration of job attempts.",
        ),
        _spec(
            "taskrunner_job_attempts_used",
            "histogram",
            ("type", "state"),
            "Attempts a job had started when it reached a final state.",
        ),
        _spec(
            "taskrunner_store_write_retries",
            "counter",
            ("operation",),
            "Job-store writes that failed and were retried.",
        ),
        _spec(
            "taskrunner_store_write_failures",
            "counter",
            ("operation",),
            "Job-store writes that failed for good.",
        ),
    )
}


def _priority(value: int) -> str:
    try:
        return TaskPriority(value).name.lower()
    except ValueError:
        return str(value)


def _text(value: object) -> str:
    return "" if value is None else str(value)


class _Families:
    """The families of one collection, created empty from :data:`METRICS`."""

    def __init__(self) -> None:
        self.by_name: dict[str, Metric] = {}
        for spec in METRICS.values():
            family: Metric
            if spec.type == "counter":
                family = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
            elif spec.type == "gauge":
                family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
            else:
                family = HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)
            self.by_name[spec.name] = family

    def add(self, name: str, labels: Iterable[object], value: float) -> None:
        family = self.by_name[name]
        family.add_metric([_text(x) for x in labels], value)  # type: ignore[attr-defined]

    def add_histogram(self, name: str, labels: Iterable[object], h: HistogramData) -> None:
        buckets = [
            ("+Inf" if bound == float("inf") else repr(float(bound)), float(n))
            for bound, n in h.cumulative()
        ]
        family = self.by_name[name]
        family.add_metric([_text(x) for x in labels], buckets, h.sum)  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[Metric]:
        return iter(self.by_name.values())


class TaskrunnerCollector(Collector):
    """A prometheus-client collector exporting an :class:`InProcessMetrics`
    under the names of :data:`METRICS`.  ``collect`` may run on any thread
    (each scrape takes one snapshot)."""

    def __init__(self, metrics: InProcessMetrics) -> None:
        if not isinstance(metrics, InProcessMetrics):
            raise TypeError(f"metrics must be an InProcessMetrics, not {type(metrics).__name__}")
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        """The families without samples (lets a registry detect name clashes)."""
        return list(_Families())

    def collect(self) -> Iterable[Metric]:
        return list(families_from(self.metrics.snapshot()))


def families_from(snap: MetricsSnapshot) -> _Families:
    """Turn a snapshot into the exported families."""
    f = _Families()
    posted: dict[tuple[str, str], int] = {}
    for (runner, prio, _category), n in snap.posted.items():
        pkey = (runner, _priority(prio))
        posted[pkey] = posted.get(pkey, 0) + n
    for labels, n in posted.items():
        f.add("taskrunner_tasks_posted", labels, n)
    tasks: dict[tuple[str, str, str], int] = {}
    by_category: dict[tuple[str, str, str], int] = {}
    for (runner, prio, category, outcome), n in snap.tasks.items():
        tkey = (runner, _priority(prio), outcome)
        tasks[tkey] = tasks.get(tkey, 0) + n
        if category is not None:
            ckey = (runner, category, outcome)
            by_category[ckey] = by_category.get(ckey, 0) + n
    for tlabels, n in tasks.items():
        f.add("taskrunner_tasks", tlabels, n)
    for clabels, n in by_category.items():
        f.add("taskrunner_category_tasks", clabels, n)
    for (runner, prio), h in snap.run_seconds.items():
        f.add_histogram("taskrunner_task_duration_seconds", (runner, _priority(prio)), h)
    for (runner, prio), h in snap.queue_wait_seconds.items():
        f.add_histogram("taskrunner_task_queue_wait_seconds", (runner, _priority(prio)), h)
    for (runner, policy), n in snap.rejections.items():
        f.add("taskrunner_queue_rejections", (runner, policy), n)
    for runner, g in snap.runners.items():
        if g.kind == "pool":
            for prio, n in sorted(g.queued_by_priority.items()):
                f.add("taskrunner_queue_depth", (runner, _priority(prio)), n)
            f.add("taskrunner_delayed_tasks", (runner,), g.delayed)
            for group, n in sorted(g.workers.items()):
                f.add("taskrunner_workers", (runner, group), n)
        else:
            f.add("taskrunner_runner_queue_depth", (runner,), g.queued)
            if g.capacity is not None:
                f.add("taskrunner_runner_queue_capacity", (runner,), g.capacity)
        f.add("taskrunner_tasks_running", (runner,), g.running)
    for runner, h in snap.timer_lateness_seconds.items():
        f.add_histogram("taskrunner_timer_lateness_seconds", (runner,), h)
    for labels, n in snap.jobs.items():
        f.add("taskrunner_jobs", labels, n)
    for labels, n in snap.job_attempts.items():
        f.add("taskrunner_job_attempts", labels, n)
    for labels, h in snap.job_attempt_seconds.items():
        f.add_histogram("taskrunner_job_attempt_duration_seconds", labels, h)
    for labels, h in snap.job_attempts_used.items():
        f.add_histogram("taskrunner_job_attempts_used", labels, h)
    for operation, n in snap.store_write_retries.items():
        f.add("taskrunner_store_write_retries", (operation,), n)
    for operation, n in snap.store_write_failures.items():
        f.add("taskrunner_store_write_failures", (operation,), n)
    return f


def register(
    metrics: InProcessMetrics | None = None,
    *,
    registry: CollectorRegistry | None = None,
) -> InProcessMetrics:
    """Export ``metrics`` (a new :class:`InProcessMetrics` if None) on
    ``registry`` (default: prometheus-client's global ``REGISTRY``) and return
    it, to pass as ``ThreadPool(metrics=...)``.  Raises ValueError if the
    registry already has these names (register once per registry)."""
    metrics = InProcessMetrics() if metrics is None else metrics
    (REGISTRY if registry is None else registry).register(TaskrunnerCollector(metrics))
    return metrics


def serve(
    port: int,
    *,
    addr: str = "0.0.0.0",
    registry: CollectorRegistry | None = None,
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``registry`` (default: the global ``REGISTRY``) at
    ``http://addr:port/metrics`` from a daemon thread, using
    ``prometheus_client.start_http_server``.  ``port=0`` picks a free port
    (``server.server_port``).  Stop with ``server.shutdown()`` then
    ``server.server_close()``; the thread is a daemon and does not hold up
    interpreter exit."""
    server, thread = start_http_server(
        port, addr=addr, registry=REGISTRY if registry is None else registry
    )
    return server, thread
