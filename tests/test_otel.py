"""OpenTelemetry: task spans parented across threads, job attempts linked to
their submit across a retry and a restart, exceptions recorded."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.context import Context, attach, detach
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from taskrunner import SequencedTaskRunner, ThreadPool
from taskrunner.integrations.otel import (
    OtelTracer,
    extract_context,
    inject_context,
    job_attempt_span,
    job_submit_span,
)

WAIT = 10.0


def provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    """A provider of the test's own (never the global one: it can be set only once)."""
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp, exporter


def by_name(spans: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    out = {s.name: s for s in spans}
    assert len(out) == len(spans), "span names are not unique"
    return out


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def test_task_spans_are_children_of_the_posters_span_across_threads() -> None:
    tp, exporter = provider()
    tracer = tp.get_tracer("test")
    ran_on: dict[str, int] = {}

    def leaf() -> None:
        ran_on["leaf"] = threading.get_ident()

    with ThreadPool(2, name="otel", tracer=OtelTracer(tp)) as pool:
        seq = SequencedTaskRunner(pool, name="otel-seq")

        def middle() -> None:
            ran_on["middle"] = threading.get_ident()
            seq.post_task(leaf, name="leaf")  # posted from inside a task

        with tracer.start_as_current_span("request"):
            pool.post_task(middle, name="middle")
        assert pool.wait_idle(WAIT) and seq.wait_idle(WAIT) and pool.wait_idle(WAIT)
    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {"request", "middle", "leaf"}  # no span for the run loop
    request, middle, leaf_span = spans["request"], spans["middle"], spans["leaf"]
    assert ran_on["middle"] != threading.get_ident()
    assert parent_id(middle) == request.context.span_id
    assert parent_id(leaf_span) == middle.context.span_id
    assert {s.context.trace_id for s in spans.values()} == {request.context.trace_id}
    assert middle.attributes is not None and leaf_span.attributes is not None
    assert middle.attributes["taskrunner.runtime.runner"] == "otel"
    assert leaf_span.attributes["taskrunner.runtime.runner"] == "otel-seq"
    assert middle.attributes["taskrunner.runtime.task.priority"] == "user_visible"
    assert middle.status.status_code is StatusCode.UNSET


def test_a_failing_task_records_the_exception_on_its_span() -> None:
    tp, exporter = provider()
    errors: list[BaseException] = []

    def explode() -> None:
        raise KeyError("missing")

    with ThreadPool(
        1, name="otel-err", tracer=OtelTracer(tp), error_handler=lambda e, t: errors.append(e)
    ) as pool:
        task = pool.post_task(explode, name="explode")
        assert task.wait(WAIT) and pool.wait_idle(WAIT)
    assert task.state.value == "failed"
    assert [type(e) for e in errors] == [KeyError]  # the error handler still saw it
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    (event,) = [e for e in span.events if e.name == "exception"]
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "KeyError"


def test_a_task_posted_outside_any_span_starts_a_trace() -> None:
    tp, exporter = provider()
    with ThreadPool(1, name="otel-root", tracer=OtelTracer(tp)) as pool:
        assert pool.post_task(lambda: None, name="alone").wait(WAIT)
        assert pool.wait_idle(WAIT)
    (span,) = exporter.get_finished_spans()
    assert span.parent is None


def test_job_attempts_hang_off_the_submit_across_a_retry_and_a_restart() -> None:
    tp, exporter = provider()
    # Submit: inside the caller's span, store the carrier as a job row would (JSON).
    with (
        tp.get_tracer("test").start_as_current_span("handler"),
        job_submit_span("email", "job-1", tracer_provider=tp),
    ):
        row = json.dumps({"trace_context": inject_context()})
    stored = json.loads(row)["trace_context"]
    assert "traceparent" in stored

    # Attempt 1 fails on a pool thread, inside a traced task.
    def attempt(n: int, fail: bool) -> None:
        with job_attempt_span("email", "job-1", n, stored, tracer_provider=tp):
            if fail:
                raise ConnectionError("smtp down")

    with ThreadPool(1, name="jobs", tracer=OtelTracer(tp)) as pool:
        first = pool.post_task(attempt, 1, True, name="run-job")
        assert first.wait(WAIT) and pool.wait_idle(WAIT)

    # Attempt 2 after a "restart": a fresh thread, no current context at all.
    def restarted() -> None:
        token = attach(Context())
        try:
            attempt(2, False)
        finally:
            detach(token)

    t = threading.Thread(target=restarted)
    t.start()
    t.join()

    spans = exporter.get_finished_spans()
    submit = next(s for s in spans if s.name == "submit email")
    handler = next(s for s in spans if s.name == "handler")
    attempts = sorted(
        (s for s in spans if s.name == "attempt email"),
        key=lambda s: s.attributes["taskrunner.job.attempt"] if s.attributes else 0,
    )
    run_task = next(s for s in spans if s.name == "run-job")
    assert submit.kind is SpanKind.PRODUCER
    assert parent_id(submit) == handler.context.span_id
    assert len(attempts) == 2
    for span in attempts:
        assert span.kind is SpanKind.CONSUMER
        assert span.context.trace_id == submit.context.trace_id
        assert parent_id(span) == submit.context.span_id
        assert span.attributes is not None and span.attributes["taskrunner.job.id"] == "job-1"
    first_span, second_span = attempts
    assert first_span.status.status_code is StatusCode.ERROR
    assert any(e.name == "exception" for e in first_span.events)
    assert second_span.status.status_code is StatusCode.UNSET
    # The first attempt ran inside a pool task of another trace: linked to it.
    assert [link.context.span_id for link in first_span.links] == [run_task.context.span_id]
    assert list(second_span.links) == []


def test_attempt_span_without_a_stored_context_or_as_a_linked_trace() -> None:
    tp, exporter = provider()
    assert inject_context() == {}  # no span: nothing to store
    assert not trace.get_current_span(extract_context(None)).get_span_context().is_valid
    assert not trace.get_current_span(extract_context({"traceparent": "junk"})).is_recording()
    with tp.get_tracer("test").start_as_current_span("outer") as outer:
        with job_attempt_span("x", "j", 1, {}, tracer_provider=tp):
            pass
        carrier = inject_context()
    with job_attempt_span("y", "j", 1, carrier, parent=False, tracer_provider=tp):
        pass
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert parent_id(spans["attempt x"]) == outer.get_span_context().span_id
    linked = spans["attempt y"]
    assert linked.parent is None  # a new trace...
    assert [link.context.span_id for link in linked.links] == [outer.get_span_context().span_id]


@pytest.mark.thread_unsafe(reason="two managers take turns on one store file")
def test_job_manager_traces_a_retried_job_across_a_restart(tmp_path: Path) -> None:
    """Through the JobManager: the submit context is stored in the job row, and
    both attempts (the second by a new manager on a new pool) hang off it."""
    from taskrunner.jobs import JobContext, JobManager, RetryPolicy, SQLiteJobStore

    tp, exporter = provider()
    store = SQLiteJobStore(tmp_path / "otel.db")
    policy = RetryPolicy(max_attempts=2, initial_delay=0.001, jitter=0)
    pool = ThreadPool(1, name="otel-jobs", tracer=OtelTracer(tp)).start()
    first = JobManager(store, pool, retry_policy=policy, lease_seconds=0.2, poll_interval=0.05)
    started = threading.Event()

    @first.handler("email")
    def hang(ctx: JobContext, args: object) -> None:
        started.set()
        while True:
            ctx.sleep(0.01)

    first.start()
    with tp.get_tracer("test").start_as_current_span("request"):
        handle = first.submit("email", {"to": "a"})
    assert started.wait(WAIT)
    first.shutdown(graceful=False)  # the "crash": attempt 1 is left for recovery
    pool.shutdown()
    assert store.get(handle.id).trace_context is not None

    pool2 = ThreadPool(1, name="otel-jobs2", tracer=OtelTracer(tp)).start()
    second = JobManager(store, pool2, retry_policy=policy, lease_seconds=0.2, poll_interval=0.05)
    second.register("email", lambda ctx, args: "sent")
    second.start()
    assert second.result(handle.id, WAIT) == "sent"
    second.shutdown()
    pool2.shutdown()
    store.close()

    spans = exporter.get_finished_spans()
    submit = next(s for s in spans if s.name == "submit email")
    request = next(s for s in spans if s.name == "request")
    attempts = [s for s in spans if s.name == "attempt email"]
    assert parent_id(submit) == request.context.span_id
    assert len(attempts) == 2
    assert {s.attributes["taskrunner.job.attempt"] for s in attempts if s.attributes} == {1, 2}
    for span in attempts:
        assert span.context.trace_id == submit.context.trace_id
        assert parent_id(span) == submit.context.span_id
