"""Metrics as CloudWatch Embedded Metric Format (EMF) JSON lines, for where no collector runs (AWS Lambda).

``OTEL_METRICS_EXPORTER=emf``: every export writes one JSON document per metric attribute set to standard output,
where the Lambda runtime hands it to CloudWatch Logs, which extracts the metrics. An export's documents go out in
one write under the lock of the toolkit's JSON log lines (``streams``), so the two never interleave.
``@otel_kit.lambda_handler`` flushes at the end of each invocation, so each invocation's measurements leave before
the sandbox freezes.

Counters and histograms are exported as deltas (what happened since the last export). A counter or gauge becomes
a number; a histogram becomes a statistic set ``{"Count", "Sum", "Min", "Max"}`` (the form the collector's EMF
exporter writes). The namespace is ``OTEL_KIT_EMF_NAMESPACE`` (default: the service name); the data point's
attributes are the dimensions.

Within the format's limits: at most 100 metrics per document (more are split over several), at most 30
dimensions per set, and metric and dimension names of 1 to 255 printable ASCII characters not starting with a
colon. A metric that breaks a rule is not written: one clear error names it and the rule, and its data points are
counted in ``otel_kit.export.failed`` {signal="metrics"}.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from typing import IO, Any

from opentelemetry.sdk.metrics import Counter, Histogram, ObservableCounter, UpDownCounter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    HistogramDataPoint,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData

from otel_kit._internal.selfmetrics import EXPORT_FAILED, counts
from otel_kit._internal.streams import write_lines

__all__ = ["MAX_DIMENSIONS", "MAX_METRICS_PER_DOCUMENT", "EmfMetricExporter", "EmfRuleError", "check_name"]

_log = logging.getLogger("otel_kit.emf")
MAX_METRICS_PER_DOCUMENT = 100
MAX_DIMENSIONS = 30
_NAME = re.compile(r"[\x20-\x7e]{1,255}")
# OpenTelemetry units (UCUM) to CloudWatch units
_UNITS = {"s": "Seconds", "ms": "Milliseconds", "us": "Microseconds", "By": "Bytes", "KiBy": "Kilobytes",
          "MiBy": "Megabytes", "1": "None", "%": "Percent", "By/s": "Bytes/Second"}  # fmt: skip


class EmfRuleError(ValueError):
    """A metric the Embedded Metric Format cannot carry; the message names it and the rule."""


def check_name(kind: str, name: str) -> None:
    """Raise EmfRuleError unless ``name`` is a valid CloudWatch metric or dimension name."""
    if not _NAME.fullmatch(name) or name.startswith(":"):
        raise EmfRuleError(
            f"{kind} name {name!r} is not valid in CloudWatch: 1 to 255 printable ASCII characters, not starting "
            "with ':'"
        )


def _unit(unit: str | None) -> str:
    if not unit:
        return "None"
    return _UNITS.get(unit, "Count" if unit.startswith("{") else "None")


class EmfMetricExporter(MetricExporter):
    """Writes EMF documents to ``stream`` (default: standard output), one JSON line each."""

    def __init__(self, namespace: str, stream: IO[str] | None = None) -> None:
        delta = AggregationTemporality.DELTA
        super().__init__(
            preferred_temporality={Counter: delta, ObservableCounter: delta, Histogram: delta, UpDownCounter: delta}
        )
        check_name("namespace", namespace)
        self.namespace = namespace
        self._stream = stream
        self._reported: set[str] = set()

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        # attribute set -> (timestamp ms, [(metric name, unit, value)])
        groups: dict[tuple[tuple[str, str], ...], list[tuple[str, str, Any]]] = defaultdict(list)
        timestamp = 0
        for resource_metrics in metrics_data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    points: list[Any] = list(metric.data.data_points)
                    try:
                        check_name("metric", metric.name)
                        for point in points:
                            if len(point.attributes or {}) > MAX_DIMENSIONS:
                                raise EmfRuleError(
                                    f"metric {metric.name!r} has a data point with {len(point.attributes or {})} "
                                    f"attributes; CloudWatch allows at most {MAX_DIMENSIONS} dimensions"
                                )
                            for key in point.attributes or {}:
                                check_name("dimension", key)
                    except EmfRuleError as err:
                        self._reject(metric.name, str(err), len(points))
                        continue
                    for point in points:
                        value = _value(metric.data, point)
                        if value is None:
                            continue
                        key = tuple(sorted((str(k), str(v)) for k, v in (point.attributes or {}).items()))
                        groups[key].append((metric.name, _unit(metric.unit), value))
                        timestamp = max(timestamp, point.time_unix_nano // 1_000_000)
        lines = [
            json.dumps(self._document(timestamp, dict(dimensions), values[start : start + MAX_METRICS_PER_DOCUMENT]))
            + "\n"
            for dimensions, values in groups.items()
            for start in range(0, len(values), MAX_METRICS_PER_DOCUMENT)
        ]
        if lines:  # one write under the lock of the JSON log lines that share the stream
            write_lines(self._stream or sys.stdout, "".join(lines))
        return MetricExportResult.SUCCESS

    def _document(self, timestamp: int, dimensions: dict[str, str], values: Sequence[tuple[str, str, Any]]) -> Any:
        directive = {
            "Namespace": self.namespace,
            "Dimensions": [sorted(dimensions)],
            "Metrics": [{"Name": name, "Unit": unit} for name, unit, _ in values],
        }
        return {"_aws": {"Timestamp": timestamp, "CloudWatchMetrics": [directive]}, **dimensions,
                **{name: value for name, _, value in values}}  # fmt: skip

    def _reject(self, name: str, reason: str, points: int) -> None:
        counts().add(EXPORT_FAILED, "metrics", points)
        if name not in self._reported:
            self._reported.add(name)
            _log.error("metric not written as EMF: %s", reason, extra={"metric": name})

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def _value(data: Any, point: Any) -> Any:
    if isinstance(data, HistogramData) and isinstance(point, HistogramDataPoint):
        if point.count == 0:
            return None  # nothing happened in this interval
        return {"Count": point.count, "Sum": point.sum, "Min": point.min, "Max": point.max}
    if isinstance(data, (Sum, Gauge)) and isinstance(point, NumberDataPoint):
        if isinstance(data, Sum) and data.is_monotonic and point.value == 0:
            return None
        return point.value
    return None
