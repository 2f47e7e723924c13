"""Helpers for testing code instrumented with otel_kit: in-memory spans, metrics and logs, no network, no sleeps.

    from otel_kit.testing import capture

    def test_checkout_is_traced():
        with capture("shop") as tel:
            checkout()
        assert [s.name for s in tel.spans()] == ["checkout"]
        assert tel.log_lines()[0]["correlation_id"]

Spans and log records are handed to the in-memory exporters synchronously (the background log writer is off
unless ``log_background=True`` is passed), so they are there as soon as the code under test returns. ``reset()``
stops the running ``init()`` and clears OpenTelemetry's global providers, which the API otherwise lets a process
set only once.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_kit._internal import lifecycle, running
from otel_kit._internal.selfmetrics import fresh_counts

__all__ = ["Capture", "capture", "reset"]

_log = logging.getLogger("otel_kit")

# how long reset() waits for a shutdown that overran its bound to end its exports
_STOPPED_WAIT_S = 30


@dataclass
class Capture:
    """What the code under test emitted."""

    handle: running.Handle
    span_exporter: InMemorySpanExporter
    metric_reader: InMemoryMetricReader
    log_exporter: InMemoryLogRecordExporter
    stream: io.StringIO

    def spans(self) -> list[ReadableSpan]:
        """Finished spans, in the order they ended."""
        return list(self.span_exporter.get_finished_spans())

    def log_records(self) -> list[ReadableLogRecord]:
        """Log records as exported over OTLP."""
        return list(self.log_exporter.get_finished_logs())

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far, parsed."""
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line.strip()]

    def metrics(self) -> dict[str, Metric]:
        """Collect now and return every metric by name."""
        data = self.metric_reader.get_metrics_data()
        found: dict[str, Metric] = {}
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    found[metric.name] = metric
        return found


def reset() -> None:
    """Stop the running ``init()`` and forget OpenTelemetry's global providers and the toolkit's counts.

    A shutdown that overran its bound is waited for (up to 30 s), so nothing of one test runs on into the next.
    """
    from opentelemetry import trace
    from opentelemetry._logs import _internal as logs_internal
    from opentelemetry.metrics import _internal as metrics_internal
    from opentelemetry.util._once import Once

    with running.RUNNING.lock:
        handle = running.RUNNING.handle
    lifecycle.shutdown()
    # a shutdown that overran its bound is still exporting: wait for it (each export gives up after the exporter's
    # timeout), or its late exports and log lines would land in the next test
    if handle is not None and not handle.wait_stopped(_STOPPED_WAIT_S):
        _log.warning("an earlier shutdown still exports after %d s; its records may show later", _STOPPED_WAIT_S)
    with running.RUNNING.lock:
        running.RUNNING.handle = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None
    logs_internal._LOGGER_PROVIDER_SET_ONCE = Once()
    logs_internal._LOGGER_PROVIDER = None
    fresh_counts()


@contextmanager
def capture(service_name: str = "test-service", **overrides: Any) -> Iterator[Capture]:
    """Run a block with otel_kit initialised to in-memory exporters; ``overrides`` go to ``init()``."""
    reset()
    spans = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    logs = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]  # untyped upstream
    stream = io.StringIO()
    settings: dict[str, Any] = {"traces_exporter": "none", "metrics_exporter": "none", "logs_exporter": "none"}
    settings["log_background"] = False  # every line written and exported before the logging call returns
    settings.update(overrides)
    handle = lifecycle.init(
        service_name,
        span_processors=[SimpleSpanProcessor(spans)],
        metric_readers=[reader],
        log_processors=[SimpleLogRecordProcessor(logs)],
        log_stream=stream,
        **settings,
    )
    try:
        yield Capture(handle, spans, reader, logs, stream)
    finally:
        reset()
