"""The Prometheus export: a real registry scraped to text and parsed back."""

from __future__ import annotations

import subprocess
import sys
import threading
import urllib.request

import pytest

pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import taskrunner.integrations.prometheus as tp
from taskrunner import (
    QueueFullError,
    QueuePolicy,
    SequencedTaskRunner,
    SingleThreadTaskRunner,
    TaskPriority,
    TaskTraits,
    ThreadPool,
)
from taskrunner.runtime.metrics import InProcessMetrics

WAIT = 10.0
UB = TaskTraits(priority=TaskPriority.USER_BLOCKING)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(registry: CollectorRegistry) -> tuple[dict[str, str], Samples]:
    """Render the registry as the text format and parse it back:
    ({family: type}, {(sample name, labels): value})."""
    text = generate_latest(registry).decode()
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return types, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def fresh() -> tuple[CollectorRegistry, InProcessMetrics]:
    """A registry with a collector of its own (made in the test, not a
    fixture: pytest-run-parallel shares fixtures between threads)."""
    reg = CollectorRegistry()
    return reg, tp.register(registry=reg)


def test_scrape_shows_tasks_queues_histograms_and_runners() -> None:
    reg, metrics = fresh()
    name = f"prom{threading.get_ident()}"
    pool = ThreadPool(2, name=name, metrics=metrics).start()
    try:
        gate = threading.Event()
        arrived = threading.Barrier(3)

        def hold() -> None:
            arrived.wait(WAIT)
            gate.wait(WAIT)

        for _ in range(2):
            pool.post_task(hold, traits=UB)
        arrived.wait(WAIT)
        for _ in range(4):
            pool.post_task(lambda: None)
        pool.post_task(lambda: None, traits=TaskTraits(category="io"))
        pool.post_task(lambda: 1 / 0)
        pool.post_task(lambda: None).cancel()
        types, samples = scrape(reg)
        assert types["taskrunner_queue_depth"] == "gauge"
        assert value(samples, "taskrunner_queue_depth", runner=name, priority="user_visible") == 6
        assert value(samples, "taskrunner_queue_depth", runner=name, priority="best_effort") == 0
        assert value(samples, "taskrunner_tasks_running", runner=name) == 2
        assert value(samples, "taskrunner_workers", runner=name, group="cpu") == 2
        gate.set()
        seq = SequencedTaskRunner(pool, name=f"{name}-seq")
        for _ in range(3):
            seq.post_task(lambda: None)
        assert seq.wait_idle(WAIT)
        assert pool.wait_idle(WAIT)

        types, samples = scrape(reg)
        assert types["taskrunner_tasks"] == "counter"
        assert types["taskrunner_task_duration_seconds"] == "histogram"

        def tasks(outcome: str, priority: str = "user_visible", runner: str = name) -> float:
            return value(
                samples, "taskrunner_tasks_total", runner=runner, priority=priority, outcome=outcome
            )

        assert tasks("succeeded") == 5
        assert tasks("succeeded", "user_blocking") == 2
        assert tasks("failed") == 1
        assert tasks("cancelled") == 1
        assert tasks("succeeded", runner=f"{name}-seq") == 3
        posted = value(
            samples, "taskrunner_tasks_posted_total", runner=name, priority="user_visible"
        )
        assert posted == 7
        assert (
            value(
                samples,
                "taskrunner_category_tasks_total",
                runner=name,
                category="io",
                outcome="succeeded",
            )
            == 1
        )
        assert value(samples, "taskrunner_runner_queue_depth", runner=f"{name}-seq") == 0

        # The histogram: cumulative buckets ending in +Inf == _count, for the 6
        # USER_VISIBLE tasks that ran (5 succeeded, 1 failed).
        hist = "taskrunner_task_duration_seconds"
        labels = {"runner": name, "priority": "user_visible"}
        buckets = sorted(
            (float(dict(lbls)["le"]), v)
            for (n, lbls), v in samples.items()
            if n == f"{hist}_bucket" and {k: v for k, v in lbls if k != "le"} == labels
        )
        assert [le for le, _ in buckets][-1] == float("inf")
        counts = [v for _, v in buckets]
        assert counts == sorted(counts)  # cumulative
        assert counts[-1] == value(samples, f"{hist}_count", **labels) == 6
        assert value(samples, f"{hist}_sum", **labels) >= 0
        wait_count = value(samples, "taskrunner_task_queue_wait_seconds_count", **labels)
        assert wait_count == 6
    finally:
        pool.shutdown(timeout=WAIT)
    _types, samples = scrape(reg)
    assert ("taskrunner_tasks_running", frozenset({("runner", name)})) not in samples
    assert (
        value(
            samples,
            "taskrunner_tasks_total",
            runner=name,
            priority="user_visible",
            outcome="succeeded",
        )
        == 5
    )


def test_rejections_timers_jobs_and_store_retries() -> None:
    reg, metrics = fresh()
    name = f"rj{threading.get_ident()}"
    with ThreadPool(1, name=name, metrics=metrics) as pool:
        started, gate = threading.Event(), threading.Event()

        def hold() -> None:
            started.set()
            gate.wait(WAIT)

        st = SingleThreadTaskRunner(pool, capacity=2, policy=QueuePolicy.REJECT, name=f"{name}-st")
        st.post_task(hold)
        assert started.wait(WAIT)
        st.post_task(lambda: None)
        st.post_task(lambda: None)
        with pytest.raises(QueueFullError):
            st.post_task(lambda: None)
        _types, samples = scrape(reg)
        assert value(samples, "taskrunner_runner_queue_capacity", runner=f"{name}-st") == 2
        assert value(samples, "taskrunner_runner_queue_depth", runner=f"{name}-st") == 2
        gate.set()
        done = pool.post_delayed_task(lambda: None, 0.001)
        assert done.wait(WAIT)
        assert st.wait_idle(WAIT)
        st.shutdown()
    metrics.job_state_changed("email", "succeeded", 2)
    metrics.job_attempt_finished("email", 2, "succeeded", 0.25)
    metrics.store_write_retried("claim")
    _types, samples = scrape(reg)
    st_name = f"{name}-st"
    assert value(samples, "taskrunner_queue_rejections_total", runner=st_name, policy="reject") == 1
    assert (
        value(
            samples,
            "taskrunner_tasks_total",
            runner=st_name,
            priority="user_visible",
            outcome="rejected",
        )
        == 1
    )
    assert value(samples, "taskrunner_timer_lateness_seconds_count", runner=name) == 1
    assert value(samples, "taskrunner_jobs_total", type="email", state="succeeded") == 1
    assert value(samples, "taskrunner_job_attempts_total", type="email", outcome="succeeded") == 1
    assert value(
        samples, "taskrunner_job_attempt_duration_seconds_sum", type="email", outcome="succeeded"
    ) == pytest.approx(0.25)
    assert (
        value(
            samples,
            "taskrunner_job_attempts_used_bucket",
            type="email",
            state="succeeded",
            le="2.0",
        )
        == 1
    )
    assert value(samples, "taskrunner_store_write_retries_total", operation="claim") == 1


def test_every_exported_name_is_documented() -> None:
    reg, metrics = fresh()
    with ThreadPool(1, name=f"doc{threading.get_ident()}", metrics=metrics) as pool:
        pool.post_task(lambda: None).wait(WAIT)
        assert pool.wait_idle(WAIT)
        types, _samples = scrape(reg)
    assert set(types) <= set(tp.METRICS)
    doc = tp.__doc__ or ""
    for spec in tp.METRICS.values():
        shown = f"{spec.name}_total" if spec.type == "counter" else spec.name
        assert f"``{shown}``" in doc, f"{shown} is not in the module's table"
        assert all(label in doc for label in spec.labels)
    # describe() announces every family, so a registry can refuse a clash.
    described = {m.name for m in tp.TaskrunnerCollector(InProcessMetrics()).describe()}
    assert described == set(tp.METRICS)
    with pytest.raises(ValueError):
        tp.register(metrics, registry=reg)
    with pytest.raises(TypeError):
        tp.TaskrunnerCollector(object())  # type: ignore[arg-type]


@pytest.mark.thread_unsafe(reason="opens a server socket")
def test_serve_exposes_the_registry_over_http() -> None:
    reg, metrics = fresh()
    with ThreadPool(1, name="served", metrics=metrics) as pool:
        pool.post_task(lambda: None).wait(WAIT)
        assert pool.wait_idle(WAIT)
        server, thread = tp.serve(0, addr="127.0.0.1", registry=reg)
        try:
            url = f"http://127.0.0.1:{server.server_port}/metrics"
            with urllib.request.urlopen(url, timeout=WAIT) as response:
                text = response.read().decode()
        finally:
            server.shutdown()
            server.server_close()
            thread.join(WAIT)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {
        (s.name, frozenset(s.labels.items())): s.value for s in families["taskrunner_tasks"].samples
    }
    key = frozenset(
        {"runner": "served", "priority": "user_visible", "outcome": "succeeded"}.items()
    )
    assert samples[("taskrunner_tasks_total", key)] == 1


@pytest.mark.thread_unsafe(reason="runs subprocesses")
def test_optional_dependencies_stay_optional() -> None:
    code = """
import sys
sys.modules["prometheus_client"] = None
sys.modules["opentelemetry"] = None
import taskrunner
from taskrunner.runtime.metrics import InProcessMetrics
with taskrunner.ThreadPool(1, metrics=InProcessMetrics()) as pool:
    assert pool.post_task(lambda: None).wait(10)
for module, extra in (
    ("taskrunner.integrations.prometheus", "prometheus"),
    ("taskrunner.integrations.otel", "otel"),
):
    try:
        __import__(module)
    except ImportError as exc:
        assert f"taskrunner[{extra}]" in str(exc), exc
    else:
        raise AssertionError(module + " imported without its dependency")
print("ok")
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
