"""Integrations with other people's observability tools, each an optional extra.

* :mod:`~taskrunner.integrations.prometheus`: a collector for ``prometheus_client``
  over :class:`~taskrunner.runtime.metrics.InProcessMetrics`;
* :mod:`~taskrunner.integrations.otel`: an OpenTelemetry tracer hook
  (:class:`~taskrunner.runtime.metrics.TaskTracer`) and job spans.
"""
