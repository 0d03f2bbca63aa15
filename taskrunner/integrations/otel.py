"""OpenTelemetry tracing: a span per task and per job attempt.

Install with the ``otel`` extra (``pip install 'taskrunner[otel]'``; it needs
only ``opentelemetry-api``, and records nothing until an SDK or a vendor's
``TracerProvider`` is configured).

Tasks
-----
``ThreadPool(tracer=OtelTracer())`` wraps every task the pool or a runner
built on it runs in a span named after the task (``Task.name``), with the
attributes ``taskrunner.runtime.task.name``, ``taskrunner.runtime.runner``,
``taskrunner.runtime.task.priority`` and ``taskrunner.runtime.task.category``.  The span's
parent is the span that was current *where the task was posted*, on whatever
thread: each task runs in a copy of its poster's ``contextvars`` context,
captured at post time, and OpenTelemetry keeps the current span in a context
variable (its default runtime context).  So a request handler's span is the
parent of the tasks it posts, and a task's span the parent of the tasks *it*
posts (replies included).  An exception escaping the task is recorded on the
span (an ``exception`` event) and sets its status to ERROR; the scheduler then
handles it as usual.  Internal tasks (a runner's run loop) get no span.

Jobs
----
A job may run long after, and in another process than, the code that
submitted it.  The JobManager stores the submitter's trace context with the
job (the ``trace_context`` field): :func:`inject_context` at submit,
:func:`extract_context` when it is read back.  :func:`job_attempt_span` opens
the span of one attempt as a child of that stored context (or, with
``parent=False``, as a new trace linked to it), so every attempt -- including a
retry after a restart -- hangs off the submit.  :func:`job_submit_span` is a
convenience span for the submit itself.  The carrier format is W3C Trace
Context plus W3C Baggage (``traceparent``, ``tracestate``, ``baggage``),
whatever propagator the application configured globally, because it is stored
and may be read by another process.

Thread-safety: everything here may be used from any thread; an
:class:`OtelTracer` holds no mutable state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import trace
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.context import Context
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.trace import Link, Span, SpanKind, TracerProvider
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "taskrunner.integrations.otel needs opentelemetry-api: "
        "pip install 'taskrunner[otel]' (or opentelemetry-api>=1.25)"
    ) from exc

if TYPE_CHECKING:
    from taskrunner.runtime.task import Task

__all__ = [
    "INSTRUMENTATION_NAME",
    "OtelTracer",
    "extract_context",
    "inject_context",
    "job_attempt_span",
    "job_submit_span",
]

#: The instrumentation scope name of every span this module starts.
INSTRUMENTATION_NAME = "taskrunner"

# W3C Trace Context + Baggage: fixed (not the global propagator) because the
# carrier is stored and read back, maybe by another process.
_PROPAGATOR = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])


def _tracer(provider: TracerProvider | None) -> trace.Tracer:
    from taskrunner.version import __version__

    return trace.get_tracer(INSTRUMENTATION_NAME, __version__, tracer_provider=provider)


class OtelTracer:
    """A :class:`~taskrunner.runtime.metrics.TaskTracer` that runs each task in an
    OpenTelemetry span (see the module docstring).

    ``tracer_provider``: where spans go (default: the global provider, looked
    up when each span starts, so configuring it after the pool was built works).
    """

    __slots__ = ("_tracer", "tracer_provider")

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        #: The provider given (None: the global one).  A JobManager on the
        #: pool passes it to :func:`job_attempt_span` so job spans go the same way.
        self.tracer_provider = tracer_provider
        self._tracer = _tracer(tracer_provider)

    def run_task(self, task: Task, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        """Run ``fn(*args)`` in a span whose parent is the poster's current span."""
        traits = task.traits
        name = task.name
        attributes: dict[str, str] = {
            "taskrunner.runtime.task.name": name,
            "taskrunner.runtime.runner": task.runner.name,
            "taskrunner.runtime.task.priority": traits.priority.name.lower(),
        }
        if traits.category is not None:
            attributes["taskrunner.runtime.task.category"] = traits.category
        with self._tracer.start_as_current_span(name, attributes=attributes):
            fn(*args)


def inject_context(context: Context | None = None) -> dict[str, str]:
    """The trace context of ``context`` (default: the current one) as a
    str-to-str dict to store with a job (``traceparent``, and ``tracestate``
    and ``baggage`` when present).  Empty when there is no valid span or baggage."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    return carrier


def extract_context(carrier: Mapping[str, str] | None) -> Context:
    """The context stored by :func:`inject_context`: its span is the (remote,
    non-recording) submitter's span.  ``None``, ``{}`` or a malformed carrier
    give a context with no valid span.  The current context is not mixed in."""
    return _PROPAGATOR.extract(dict(carrier) if carrier else {}, context=Context())


def _valid_span_context(context: Context | None) -> trace.SpanContext | None:
    sc = trace.get_current_span(context).get_span_context()
    return sc if sc.is_valid else None


@contextmanager
def job_submit_span(
    job_type: str,
    job_id: str | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
) -> Iterator[Span]:
    """A PRODUCER span ``submit <job_type>`` around a job's submit, child of the
    current span; call :func:`inject_context` inside it so the attempts hang
    off it.  Exceptions are recorded on it and re-raised."""
    attributes: dict[str, str] = {"taskrunner.job.type": job_type}
    if job_id is not None:
        attributes["taskrunner.job.id"] = job_id
    with _tracer(tracer_provider).start_as_current_span(
        f"submit {job_type}", kind=SpanKind.PRODUCER, attributes=attributes
    ) as span:
        yield span


@contextmanager
def job_attempt_span(
    job_type: str,
    job_id: str,
    attempt: int,
    carrier: Mapping[str, str] | None,
    *,
    parent: bool = True,
    tracer_provider: TracerProvider | None = None,
) -> Iterator[Span]:
    """The CONSUMER span ``attempt <job_type>`` of one job attempt, current
    while the block runs.

    With a valid stored context (``carrier``, from :func:`inject_context` at
    submit) the span is its child -- same trace, parent the submit span, on any
    thread and after any restart -- and links to the span current here (the
    runtime task running the attempt) if there is one.  With ``parent=False``
    it is instead a child of the current span, linked to the submit.  Without
    a valid stored context it is a child of the current span.  Attributes:
    ``taskrunner.job.type``, ``taskrunner.job.id``, ``taskrunner.job.attempt``.
    An exception leaving the block is recorded on the span (status ERROR) and
    re-raised.
    """
    stored = extract_context(carrier)
    submit = _valid_span_context(stored)
    here = _valid_span_context(None)
    links: list[Link] = []
    context: Context | None = None  # None: the current context
    if submit is not None:
        if parent:
            context = stored
            if here is not None and here.trace_id != submit.trace_id:
                links.append(Link(here, {"taskrunner.link": "runner"}))
        else:
            links.append(Link(submit, {"taskrunner.link": "submit"}))
    attributes: dict[str, str | int] = {
        "taskrunner.job.type": job_type,
        "taskrunner.job.id": job_id,
        "taskrunner.job.attempt": attempt,
    }
    with _tracer(tracer_provider).start_as_current_span(
        f"attempt {job_type}",
        context=context,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
        links=links,
    ) as span:
        yield span
