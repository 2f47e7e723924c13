"""OTLP exporters for the three signals, over gRPC or HTTP per ``OTEL_EXPORTER_OTLP[_<SIGNAL>]_PROTOCOL``.

The endpoint is always passed explicitly (validated by ``config``), so a malformed URL in the environment falls
back to the default instead of breaking the exporter. Headers, TLS certificates, compression and timeouts are
still read by the SDK exporters from the standard ``OTEL_EXPORTER_OTLP_*`` variables.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.metrics import MeterProvider

from otel_kit._internal.config import Settings

__all__ = ["log_exporter", "metric_exporter", "span_exporter"]


def _insecure(endpoint: str) -> bool:
    return endpoint.startswith("http://")


def span_exporter(settings: Settings, meter_provider: MeterProvider | None = None) -> Any:
    endpoint = settings.otlp_endpoint("traces")
    if settings.otlp_protocol("traces") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint, insecure=_insecure(endpoint), meter_provider=meter_provider)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPSpanExporter

    return HTTPSpanExporter(endpoint=endpoint, meter_provider=meter_provider)


def metric_exporter(settings: Settings) -> Any:
    endpoint = settings.otlp_endpoint("metrics")
    if settings.otlp_protocol("metrics") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(endpoint=endpoint, insecure=_insecure(endpoint))
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HTTPMetricExporter,
    )

    return HTTPMetricExporter(endpoint=endpoint)


def log_exporter(settings: Settings, meter_provider: MeterProvider | None = None) -> Any:
    endpoint = settings.otlp_endpoint("logs")
    if settings.otlp_protocol("logs") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return OTLPLogExporter(endpoint=endpoint, insecure=_insecure(endpoint), meter_provider=meter_provider)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HTTPLogExporter

    return HTTPLogExporter(endpoint=endpoint, meter_provider=meter_provider)
