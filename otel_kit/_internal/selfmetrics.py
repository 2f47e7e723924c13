"""Counters about the toolkit itself: what it rejected or folded away, so nothing is lost silently.

Counts are kept in plain memory (cheap, safe to bump from anywhere, even inside the metrics SDK) and read by
observable counters when a metric reader collects:

- ``otel_kit.propagation.rejected`` {header}: incoming context headers that were malformed and ignored;
- ``otel_kit.metric.series_overflow`` {metric}: measurements folded into the overflow series of a metric
  that reached its series limit;
- ``otel_kit.export.failed`` {signal}: spans, log records and metric data points whose export failed
  (refused, unreachable, timed out) and were dropped after the exporter's own retries.

Items dropped because a batch queue was full are counted by the OpenTelemetry SDK's own ``otel.sdk.*`` metrics,
which ``init()`` switches on.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

__all__ = ["SelfCounts", "counts", "fresh_counts", "register"]

PROPAGATION_REJECTED = "otel_kit.propagation.rejected"
SERIES_OVERFLOW = "otel_kit.metric.series_overflow"
EXPORT_FAILED = "otel_kit.export.failed"


class SelfCounts:
    """Thread-safe counts keyed by (counter name, attribute value)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()

    def add(self, name: str, label: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[(name, label)] += amount

    def get(self, name: str, label: str) -> int:
        with self._lock:
            return self._counts[(name, label)]

    def items(self, name: str) -> list[tuple[str, int]]:
        with self._lock:
            return [(label, n) for (counter, label), n in self._counts.items() if counter == name]


_counts = SelfCounts()


def counts() -> SelfCounts:
    """The counts of the running ``init()``."""
    return _counts


def fresh_counts() -> SelfCounts:
    """Start new counts (a new ``init()`` after a reset); exporters left over from before keep their old ones."""
    global _counts
    _counts = SelfCounts()
    return _counts


def register(meter: Meter) -> None:
    """Expose the current counts as observable counters on ``meter``."""
    current = _counts

    def observer(name: str, key: str) -> object:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(n, {key: label}) for label, n in current.items(name)]

        return observe

    meter.create_observable_counter(
        PROPAGATION_REJECTED,
        callbacks=[observer(PROPAGATION_REJECTED, "header")],  # type: ignore[list-item]
        unit="{header}",
        description="Incoming context headers that were malformed and ignored.",
    )
    meter.create_observable_counter(
        EXPORT_FAILED,
        callbacks=[observer(EXPORT_FAILED, "signal")],  # type: ignore[list-item]
        unit="{item}",
        description="Spans, log records and metric data points dropped because their export failed.",
    )
    meter.create_observable_counter(
        SERIES_OVERFLOW,
        callbacks=[observer(SERIES_OVERFLOW, "metric")],  # type: ignore[list-item]
        unit="{measurement}",
        description="Measurements folded into the overflow series because the metric hit its series limit.",
    )
