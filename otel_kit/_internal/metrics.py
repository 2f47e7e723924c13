"""Metrics: the MeterProvider, its readers (OTLP push, Prometheus pull) and the cardinality guard.

Two layers keep the number of series bounded:

1. views with allow-listed attributes for the HTTP duration histograms (a stray ``url.full`` or user id in the
   attributes is dropped before aggregation) and explicit buckets from the semantic conventions;
2. a per-metric series limit (``OTEL_KIT_METRIC_SERIES_LIMIT``). The Python SDK has no cardinality limit yet,
   so ``_guard_series`` adds the one the OpenTelemetry specification describes: once a metric holds
   ``limit - 1`` series, measurements for new attribute sets go to one series marked
   ``otel.metric.overflow=true``, and each such measurement is counted in ``otel_kit.metric.series_overflow``.
   Instruments with a view keep the marker too: it is added to the view's attribute allow-list.
   The limit holds for the toolkit's providers only: any other ``MeterProvider`` in the process (an
   application's own, a library's) aggregates as the SDK does.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics._internal import _view_instrument_match as _vim
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from otel_kit._internal import otlp
from otel_kit._internal.config import ConfigProblem, Settings
from otel_kit._internal.selfmetrics import SERIES_OVERFLOW, counts

__all__ = [
    "HTTP_CLIENT_DURATION",
    "HTTP_DURATION_ATTRIBUTES",
    "HTTP_DURATION_BUCKETS",
    "HTTP_SERVER_DURATION",
    "OVERFLOW_ATTRIBUTE",
    "PrometheusEndpoint",
    "build_meter_provider",
]

HTTP_SERVER_DURATION = "http.server.request.duration"
HTTP_CLIENT_DURATION = "http.client.request.duration"
# Boundaries advised by the HTTP semantic conventions, in seconds.
HTTP_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
HTTP_DURATION_ATTRIBUTES = frozenset(
    {
        "http.request.method",
        "http.route",
        "http.response.status_code",
        "error.type",
        "url.scheme",
        "network.protocol.version",
        "server.address",
        "server.port",
    }
)
OVERFLOW_ATTRIBUTE = "otel.metric.overflow"


def default_views() -> list[View]:
    """Explicit buckets and allow-listed attributes for the HTTP server and client durations."""
    return [
        View(
            instrument_type=Histogram,
            instrument_name=name,
            attribute_keys=set(HTTP_DURATION_ATTRIBUTES),
            aggregation=ExplicitBucketHistogramAggregation(boundaries=HTTP_DURATION_BUCKETS),
        )
        for name in (HTTP_SERVER_DURATION, HTTP_CLIENT_DURATION)
    ]


# --- per-metric series limit ---------------------------------------------------------------------------------

_guard_lock = threading.Lock()
_original_consume: Callable[..., None] | None = None
# set on a toolkit provider's measurement consumer, which every instrument and aggregation of it reaches
_LIMIT_ATTRIBUTE = "_otel_kit_series_limit"


def _series_limit_of(match: Any) -> int:
    """The series limit of the provider an SDK per-view aggregation belongs to, 0 for none; kept on the
    aggregation after the first look (SDK 1.45 internals, covered by tests)."""
    try:
        limit: int = match._otel_kit_limit
    except AttributeError:
        consumer = getattr(match._instrument, "_measurement_consumer", None)
        limit = match._otel_kit_limit = getattr(consumer, _LIMIT_ATTRIBUTE, 0)
    return limit


def _guard_series(provider: MeterProvider, limit: int) -> None:
    """Give ``provider`` the series limit, installing (once) the check on the SDK's per-view aggregation."""
    global _original_consume
    setattr(provider._measurement_consumer, _LIMIT_ATTRIBUTE, limit)
    with _guard_lock:
        if _original_consume is not None:
            return
        original = _vim._ViewInstrumentMatch.consume_measurement
        _original_consume = original

        @functools.wraps(original)
        def consume_measurement(self: Any, measurement: Any, should_sample_exemplar: bool = True) -> None:
            series = self._attributes_aggregation
            limit = _series_limit_of(self)
            if limit and len(series) >= limit - 1:
                attributes = dict(measurement.attributes or {})
                keys = self._view._attribute_keys
                if keys is not None:
                    attributes = {k: v for k, v in attributes.items() if k in keys}
                if _vim._hash_attributes(attributes) not in series:
                    counts().add(SERIES_OVERFLOW, self._name)
                    measurement = dataclasses.replace(measurement, attributes={OVERFLOW_ATTRIBUTE: True})
                    if keys is not None and OVERFLOW_ATTRIBUTE not in keys:
                        # a view's allow-list would filter the marker out and fold the overflow into the series
                        # without attributes; the marker is the specification's own, no measurement carries it
                        self._view._attribute_keys = {*keys, OVERFLOW_ATTRIBUTE}
            original(self, measurement, should_sample_exemplar)

        _vim._ViewInstrumentMatch.consume_measurement = consume_measurement  # type: ignore[method-assign]


# --- Prometheus pull endpoint ----------------------------------------------------------------------------------


class PrometheusEndpoint:
    """A ``/metrics`` endpoint served by prometheus-client from the toolkit's own registry."""

    def __init__(self, host: str, port: int) -> None:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry, start_http_server

        self.registry = CollectorRegistry(auto_describe=True)
        self.reader = PrometheusMetricReader(registry=self.registry)
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.port = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def close_inherited(self) -> None:
        """Close the listening socket a forked child inherited (its serving thread stayed in the parent)."""
        self._server.server_close()


def build_meter_provider(
    settings: Settings,
    resource: Resource,
    extra_readers: Sequence[MetricReader] = (),
    problems: list[ConfigProblem] | None = None,
) -> tuple[MeterProvider, PrometheusEndpoint | None]:
    """The provider with one reader per configured exporter.

    A Prometheus port that cannot be bound is appended to ``problems`` (and the endpoint left off), not raised.
    """
    readers: list[MetricReader] = []
    endpoint: PrometheusEndpoint | None = None
    for name in settings.metrics_exporter:
        if name == "otlp":
            readers.append(PeriodicExportingMetricReader(otlp.metric_exporter(settings)))
        elif name == "console":
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
        elif name == "emf":
            from otel_kit._internal.emf import EmfMetricExporter

            namespace = settings.emf_namespace or str(resource.attributes.get("service.name", "otel-kit"))
            readers.append(PeriodicExportingMetricReader(EmfMetricExporter(namespace)))
        elif name == "prometheus":
            try:
                endpoint = PrometheusEndpoint(settings.prometheus_host, settings.prometheus_port)
            except OSError as err:
                if problems is not None:
                    problems.append(
                        ConfigProblem(
                            "OTEL_EXPORTER_PROMETHEUS_PORT",
                            str(settings.prometheus_port),
                            f"a port free on {settings.prometheus_host} ({err.strerror or err})",
                            "no /metrics endpoint",
                        )
                    )
            else:
                readers.append(endpoint.reader)
    readers.extend(extra_readers)
    # the toolkit's own exit hook stops it, within OTEL_KIT_SHUTDOWN_TIMEOUT_MS
    provider = MeterProvider(resource=resource, metric_readers=readers, views=default_views(), shutdown_on_exit=False)
    _guard_series(provider, settings.series_limit)
    return provider, endpoint
