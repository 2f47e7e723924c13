"""Hot paths, measured by pytest-benchmark (run through ``bench/hot_paths.py``, which repeats the session).

Raw-SDK variants come first in this file: ``init()`` later installs the series guard on the SDK's aggregation,
so measuring the raw SDK after it would measure the guard too.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

ATTRS = {"http.request.method": "GET", "http.route": "/orders/{id}", "http.response.status_code": 200}
HTTP_ATTRS = {
    **ATTRS,
    "url.scheme": "http",
    "network.protocol.version": "1.1",
    "client.address": "127.0.0.1",
    "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
}


class NullExporter(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _span(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("op"):
        pass


_ids = itertools.count()


def _http_span(tracer: trace.Tracer) -> None:
    """A server span as the ASGI middleware records it; the path differs on every call (an order id)."""
    attributes = {**HTTP_ATTRS, "url.path": f"/orders/{next(_ids)}"}
    with tracer.start_as_current_span("GET /orders/{id}", kind=trace.SpanKind.SERVER, attributes=attributes):
        pass


def _raw_provider() -> TracerProvider:
    """The raw SDK as its users set it up: a batch processor, here in front of an exporter that does nothing."""
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(NullExporter()))
    return provider


def _histogram(meter_provider: Any) -> Any:
    return meter_provider.get_meter("bench").create_histogram("http.server.request.duration", unit="s")


def test_span_raw_sdk(benchmark: Any) -> None:
    provider = _raw_provider()
    benchmark(_span, provider.get_tracer("bench"))
    provider.shutdown()


def test_http_span_raw_sdk(benchmark: Any) -> None:
    provider = _raw_provider()
    benchmark(_http_span, provider.get_tracer("bench"))
    provider.shutdown()


def test_histogram_raw_sdk(benchmark: Any) -> None:
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    hist = _histogram(provider)
    benchmark(hist.record, 0.042, ATTRS)
    provider.shutdown()


def _prometheus_histogram() -> Any:
    from prometheus_client import CollectorRegistry, Histogram

    return Histogram(
        "http_server_request_duration_seconds",
        "duration",
        ["http_request_method", "http_route", "http_response_status_code"],
        registry=CollectorRegistry(),
    )


def _observe(hist: Any) -> None:
    hist.labels("GET", "/orders/{id}", "200").observe(0.042)


def test_histogram_prometheus_client(benchmark: Any) -> None:
    benchmark(_observe, _prometheus_histogram())


def _null_logger(name: str, with_context: bool, scrub: bool = True) -> logging.Logger:
    from otel_kit._internal.logs import TelemetryContextFilter, json_formatter
    from otel_kit._internal.redaction import default_scrubber

    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115  # closed with the process
    handler.setFormatter(json_formatter())
    if with_context:  # the filter otel_kit puts on its handlers: scrubbing, then the trace context
        handler.addFilter(TelemetryContextFilter("bench", default_scrubber(enabled=scrub)))
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def _log_line(logger: logging.Logger) -> None:
    logger.info("order %s placed", next(_ids))  # a new message every time, as order ids make it


def test_log_line_without_context(benchmark: Any) -> None:
    benchmark(_log_line, _null_logger("bench.plain", with_context=False))


@contextmanager
def _kit(**settings: Any) -> Iterator[Any]:
    """otel_kit with nothing exported, inside a correlation scope, as a request handler would run."""
    import otel_kit
    from otel_kit import testing

    testing.reset()
    handle = otel_kit.init(
        "bench",
        traces_exporter="none",
        metrics_exporter="none",
        logs_exporter="none",
        log_stdout=False,
        span_processors=[BatchSpanProcessor(NullExporter())],
        metric_readers=[InMemoryMetricReader()],
        **settings,
    )
    with otel_kit.correlation_scope("bench-1"):
        yield handle
    testing.reset()


@pytest.fixture(scope="module")
def kit() -> Iterator[Any]:
    with _kit() as handle:
        yield handle


def test_span_otel_kit(benchmark: Any, kit: Any) -> None:
    benchmark(_span, kit.tracer_provider.get_tracer("bench"))


def test_http_span_otel_kit(benchmark: Any, kit: Any) -> None:
    benchmark(_http_span, kit.tracer_provider.get_tracer("bench"))


def test_histogram_otel_kit(benchmark: Any, kit: Any) -> None:
    hist = _histogram(kit.meter_provider)
    benchmark(hist.record, 0.042, ATTRS)


def test_log_line_with_context(benchmark: Any, kit: Any) -> None:
    logger = _null_logger("bench.context", with_context=True)
    with kit.tracer_provider.get_tracer("bench").start_as_current_span("request"):
        benchmark(_log_line, logger)


def test_log_line_with_context_no_scrub(benchmark: Any, kit: Any) -> None:
    logger = _null_logger("bench.context_no_scrub", with_context=True, scrub=False)
    with kit.tracer_provider.get_tracer("bench").start_as_current_span("request"):
        benchmark(_log_line, logger)


def test_span_otel_kit_no_scrub(benchmark: Any) -> None:
    with _kit(scrub=False) as handle:
        benchmark(_span, handle.tracer_provider.get_tracer("bench"))


def alternating_ratios(blocks: int, calls: int) -> dict[tuple[str, str], float]:
    """The ratios of ``hot_paths.RATIOS`` that can be timed in one process, each from alternating blocks of the
    two variants (``harness.alternating``), keyed by their (numerator, denominator) test names. Run in a fresh
    process: it calls ``init()``. Not here: otel_kit's histogram against the raw SDK's, since ``init()`` installs
    its series guard on the SDK's aggregation class, which every provider then passes through; that ratio comes
    from the sessions, raw SDK first."""
    from bench.harness import alternating

    raw = _raw_provider()
    raw_tracer = raw.get_tracer("bench")
    plain = _null_logger("bench.plain", with_context=False)
    ratios: dict[tuple[str, str], float] = {}

    def pair(numerator: str, denominator: str, a: Any, b: Any) -> None:
        ratios[(numerator, denominator)] = alternating(a, b, blocks, calls)

    for scrub, suffix in ((True, ""), (False, "_no_scrub")):
        with _kit(scrub=scrub) as handle:
            tracer = handle.tracer_provider.get_tracer("bench")
            pair(f"span_otel_kit{suffix}", "span_raw_sdk", partial(_span, tracer), partial(_span, raw_tracer))
            if scrub:
                http_spans = partial(_http_span, tracer), partial(_http_span, raw_tracer)
                pair("http_span_otel_kit", "http_span_raw_sdk", *http_spans)
                hist = _histogram(handle.meter_provider)
                pair("histogram_otel_kit", "histogram_prometheus_client",
                     partial(hist.record, 0.042, ATTRS), partial(_observe, _prometheus_histogram()))  # fmt: skip
            logger = _null_logger(f"bench.context{suffix}", with_context=True, scrub=scrub)
            with tracer.start_as_current_span("request"):
                pair(f"log_line_with_context{suffix}", "log_line_without_context",
                     partial(_log_line, logger), partial(_log_line, plain))  # fmt: skip
    raw.shutdown()
    return ratios
