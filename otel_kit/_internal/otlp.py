"""OTLP exporters for the three signals, over gRPC or HTTP per ``OTEL_EXPORTER_OTLP[_<SIGNAL>]_PROTOCOL``.

The endpoint is always passed explicitly (validated by ``config``), so a malformed URL in the environment falls
back to the default instead of breaking the exporter. Headers, TLS certificates, compression and timeouts are
still read by the SDK exporters from the standard ``OTEL_EXPORTER_OTLP_*`` variables.

The gRPC span and log exporters encode with ``encoding`` (the SDK's messages, built at a third of the cost).

Every exporter is wrapped to count the items of each failed export in ``otel_kit.export.failed`` {signal}: the
SDK's own ``otel.sdk.exporter.*`` metrics miss one case (SDK 1.45: a collector's HTTP 401 or 400 counts there as
a success), and a refused batch must never vanish uncounted. The items of a failed export that timed out waiting
for an answer are also counted in ``otel_kit.export.timed_out`` {signal}: the request may have gone out, and a
stalled collector may still take it when it resumes.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_kit._internal import encoding
from otel_kit._internal.config import Settings
from otel_kit._internal.selfmetrics import EXPORT_FAILED, EXPORT_TIMED_OUT, counts

__all__ = ["log_exporter", "metric_exporter", "span_exporter"]


def _insecure(endpoint: str) -> bool:
    return endpoint.startswith("http://")


class CountingSpanExporter(SpanExporter):
    """Delegates to ``inner``; counts the spans of every export that does not succeed."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self._counts = counts()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        if result is not SpanExportResult.SUCCESS:
            self._counts.add(EXPORT_FAILED, "traces", len(spans))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class CountingLogExporter(LogRecordExporter):
    """Delegates to ``inner``; counts the log records of every export that does not succeed."""

    def __init__(self, inner: LogRecordExporter) -> None:
        self.inner = inner
        self._counts = counts()

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        result = self.inner.export(batch)
        if result is not LogRecordExportResult.SUCCESS:
            self._counts.add(EXPORT_FAILED, "logs", len(batch))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()  # type: ignore[no-untyped-call]  # untyped upstream

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


class CountingMetricExporter(MetricExporter):
    """Delegates to ``inner`` (keeping its temporality and aggregation); counts the data points of failed exports."""

    def __init__(self, inner: MetricExporter) -> None:
        super().__init__(inner._preferred_temporality, inner._preferred_aggregation)
        self.inner = inner
        self._counts = counts()

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        if result is not MetricExportResult.SUCCESS:
            points = sum(
                len(metric.data.data_points)
                for rm in metrics_data.resource_metrics
                for sm in rm.scope_metrics
                for metric in sm.metrics
            )
            self._counts.add(EXPORT_FAILED, "metrics", points)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def span_exporter(settings: Settings, meter_provider: MeterProvider | None = None) -> SpanExporter:
    return CountingSpanExporter(_releasing_errors(_span_exporter(settings, meter_provider), "traces"))


def metric_exporter(settings: Settings) -> MetricExporter:
    return CountingMetricExporter(_releasing_errors(_metric_exporter(settings), "metrics"))


def log_exporter(settings: Settings, meter_provider: MeterProvider | None = None) -> LogRecordExporter:
    return CountingLogExporter(_releasing_errors(_log_exporter(settings, meter_provider), "logs"))


class _ErrorReleasingMetrics:
    """An SDK exporter's own metrics (``otel.sdk.exporter.*``) that let go of a failed export's error once counted.

    SDK 1.45's OTLP exporters put the error of a failed export on the result object their export frame holds, and
    the error's traceback holds that frame: a reference cycle that keeps the whole batch alive, with the frames
    of every caller, until Python's next full garbage collection. In the outage benchmark that was 11,000 to 23,000
    objects freed at each full collection, and the service's memory rising by 5 to 9 MiB between two of them.
    Over HTTP the error comes back from the transport in a result of its own, on another such frame. Detaching the
    error's tracebacks and letting go of the error, after the SDK has counted it, breaks the cycle either way: the
    batch is freed as the export returns.

    Before it lets go, it counts the items of an export that timed out waiting for an answer in
    ``otel_kit.export.timed_out`` {signal}: the error is the one place that tells a timeout from a refusal.
    """

    def __init__(self, inner: Any, signal: str) -> None:
        self._inner = inner
        self._signal = signal
        self._counts = counts()

    @contextlib.contextmanager
    def export_operation(self, num_items: int) -> Iterator[Any]:
        result = None
        try:
            with self._inner.export_operation(num_items) as result:
                yield result
        finally:
            if result is not None:  # the SDK's own context has recorded the error by now
                if _timed_out(result.error):
                    self._counts.add(EXPORT_TIMED_OUT, self._signal, num_items)
                _drop_tracebacks(result.error)
                result.error = None


def _timed_out(error: BaseException | None) -> bool:
    """Whether an export's error says it timed out waiting for an answer, so its request may have gone out: a gRPC
    ``DEADLINE_EXCEEDED`` (which does not say whether the request was sent), or a read timeout of the HTTP
    exporter's transport (``requests`` or ``urllib3``; a connect timeout sent nothing). Looked up without importing
    any of them: only the exporter in use has loaded its own."""
    if error is None:
        return False
    code = getattr(error, "code", None)
    if callable(code) and "grpc" in sys.modules:
        try:
            return getattr(code(), "name", None) == "DEADLINE_EXCEEDED"
        except Exception:  # an RpcError that is not a call has no code to give
            return False
    requests, urllib3 = sys.modules.get("requests"), sys.modules.get("urllib3")
    return (requests is not None and isinstance(error, requests.exceptions.ReadTimeout)) or (
        urllib3 is not None and isinstance(error, urllib3.exceptions.ReadTimeoutError)
    )


def _drop_tracebacks(error: BaseException | None) -> None:
    """Detach the traceback of ``error`` and of the errors it was raised from or during, once it is counted."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error.__traceback__ = None
        error = error.__cause__ or error.__context__


def _releasing_errors(exporter: Any, signal: str) -> Any:
    """``exporter`` with its metrics wrapped in ``_ErrorReleasingMetrics`` (SDK 1.45 internals, covered by tests)."""
    if hasattr(exporter, "_metrics"):
        exporter._metrics = _ErrorReleasingMetrics(exporter._metrics, signal)
    return exporter


def _http_session(signal: str) -> Any:
    """A requests session that keeps the CA of ``OTEL_EXPORTER_OTLP[_<SIGNAL>]_CERTIFICATE``, or None.

    requests lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` override a session's ``verify``, so where those are
    set (many base images set them) the SDK's HTTP exporter silently ignores the configured CA and a private
    collector fails verification. This session puts the configured CA back after requests merged the environment.
    """
    if not (
        os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_CERTIFICATE")
        or os.environ.get("OTEL_EXPORTER_OTLP_CERTIFICATE")
    ):
        return None
    import requests

    class _ConfiguredCASession(requests.Session):
        def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
            merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
            merged["verify"] = self.verify  # the exporter set it to the configured CA file
            return merged

    return _ConfiguredCASession()


def _span_exporter(settings: Settings, meter_provider: MeterProvider | None) -> Any:
    endpoint = settings.otlp_endpoint("traces")
    if settings.otlp_protocol("traces") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        class _GrpcSpanExporter(OTLPSpanExporter):
            def _translate_data(self, data: Sequence[ReadableSpan]) -> Any:
                return encoding.encode_spans(data)  # the SDK's messages, built in place

        return _GrpcSpanExporter(endpoint=endpoint, insecure=_insecure(endpoint), meter_provider=meter_provider)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPSpanExporter

    return HTTPSpanExporter(endpoint=endpoint, session=_http_session("traces"), meter_provider=meter_provider)


def _metric_exporter(settings: Settings) -> Any:
    endpoint = settings.otlp_endpoint("metrics")
    if settings.otlp_protocol("metrics") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(endpoint=endpoint, insecure=_insecure(endpoint))
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HTTPMetricExporter,
    )

    return HTTPMetricExporter(endpoint=endpoint, session=_http_session("metrics"))


def _log_exporter(settings: Settings, meter_provider: MeterProvider | None) -> Any:
    endpoint = settings.otlp_endpoint("logs")
    if settings.otlp_protocol("logs") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        class _GrpcLogExporter(OTLPLogExporter):
            def _translate_data(self, data: Sequence[ReadableLogRecord]) -> Any:
                return encoding.encode_logs(data)  # the SDK's messages, built in place

        return _GrpcLogExporter(endpoint=endpoint, insecure=_insecure(endpoint), meter_provider=meter_provider)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HTTPLogExporter

    return HTTPLogExporter(endpoint=endpoint, session=_http_session("logs"), meter_provider=meter_provider)
