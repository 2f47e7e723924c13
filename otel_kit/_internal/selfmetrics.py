"""Counters about the toolkit itself: what it rejected or folded away, so nothing is lost silently.

Counts are kept in plain memory (cheap, safe to bump from anywhere, even inside the metrics SDK) and read by
observable counters when a metric reader collects:

- ``otel_kit.propagation.rejected`` {header}: incoming context headers that were malformed and ignored;
- ``otel_kit.metric.series_overflow`` {metric}: measurements folded into the overflow series of a metric
  that reached its series limit;
- ``otel_kit.export.failed`` {signal}: spans, log records and metric data points whose export failed
  (refused, unreachable, timed out) and were dropped after the exporter's own retries;
- ``otel_kit.export.timed_out`` {signal}: of those, the ones whose export timed out waiting for an answer (a gRPC
  deadline, an HTTP read timeout). Their fate is unknown: the request may have gone out, and a collector that was
  stalled, not gone, may still take it once it resumes, so they can reach the backend and be counted as failed too;
- ``otel_kit.queue.dropped`` {signal}: spans and log records dropped because the batch queue was full (the
  collector is slower than the application, or gone).

The SDK's own ``otel.sdk.*`` metrics count some of this too, but cost about 20 us per span (more than the span
itself), so ``init()`` leaves them off; ``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED=true`` turns them on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

__all__ = ["SelfCounts", "count_queue_drops", "counts", "fresh_counts", "register"]

PROPAGATION_REJECTED = "otel_kit.propagation.rejected"
SERIES_OVERFLOW = "otel_kit.metric.series_overflow"
EXPORT_FAILED = "otel_kit.export.failed"
EXPORT_TIMED_OUT = "otel_kit.export.timed_out"
QUEUE_DROPPED = "otel_kit.queue.dropped"


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


class _QueueFullCounter(logging.Filter):
    """Counts the SDK batch processors' "Queue full, dropping Span/Log." warnings, one per dropped item.

    The SDK writes that warning for every item it drops; counting it costs nothing while the queue has room. In a
    drop storm only one warning per ``quiet_seconds`` is let through: the count is in the metric.
    """

    def __init__(self, quiet_seconds: float = 10.0) -> None:
        super().__init__()
        self._quiet = quiet_seconds
        self._last_shown = float("-inf")

    def filter(self, record: logging.LogRecord) -> bool:
        if not (isinstance(record.msg, str) and record.msg.startswith("Queue full, dropping")):
            return True
        kind = str(record.args[0]) if isinstance(record.args, tuple) and record.args else ""
        _counts.add(QUEUE_DROPPED, "traces" if kind == "Span" else "logs")
        now = time.monotonic()
        if now - self._last_shown < self._quiet:
            return False
        self._last_shown = now
        return True


_BATCH_LOGGER = "opentelemetry.sdk._shared_internal"


def count_queue_drops() -> None:
    """Count items dropped by full batch queues (installed once, by ``init()``)."""
    logger = logging.getLogger(_BATCH_LOGGER)
    if not any(isinstance(f, _QueueFullCounter) for f in logger.filters):
        # first: the SDK's own DuplicateFilter on this logger would hide repeats from any filter after it
        logger.filters.insert(0, _QueueFullCounter())


def register(meter: Meter) -> None:
    """Expose the current counts as observable counters on ``meter``."""
    current = _counts

    def observer(name: str, key: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(n, {key: label}) for label, n in current.items(name)]

        return observe

    meter.create_observable_counter(
        PROPAGATION_REJECTED,
        callbacks=[observer(PROPAGATION_REJECTED, "header")],
        unit="{header}",
        description="Incoming context headers that were malformed and ignored.",
    )
    meter.create_observable_counter(
        EXPORT_FAILED,
        callbacks=[observer(EXPORT_FAILED, "signal")],
        unit="{item}",
        description="Spans, log records and metric data points dropped because their export failed.",
    )
    meter.create_observable_counter(
        EXPORT_TIMED_OUT,
        callbacks=[observer(EXPORT_TIMED_OUT, "signal")],
        unit="{item}",
        description="Of the items counted in otel_kit.export.failed, those whose export timed out waiting for an "
        "answer: a stalled collector may still have received them.",
    )
    meter.create_observable_counter(
        QUEUE_DROPPED,
        callbacks=[observer(QUEUE_DROPPED, "signal")],
        unit="{item}",
        description="Spans and log records dropped because the batch queue was full.",
    )
    meter.create_observable_counter(
        SERIES_OVERFLOW,
        callbacks=[observer(SERIES_OVERFLOW, "metric")],
        unit="{measurement}",
        description="Measurements folded into the overflow series because the metric hit its series limit.",
    )
