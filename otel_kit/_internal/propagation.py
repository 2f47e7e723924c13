"""Context propagation: W3C trace context and baggage, AWS X-Ray, and the correlation id, hardened.

``build_propagator()`` is installed as the global propagator by ``init()``, so every instrumentation (HTTP
servers and clients, RabbitMQ, botocore) reads and writes the same four kinds of header:

========================  ===========================================================
``traceparent``           W3C trace context (wins over X-Ray when both are valid)
``baggage``               W3C baggage, carries ``correlation_id``
``X-Amzn-Trace-Id``       AWS X-Ray, so a request crossing X-Ray-instrumented code stays one trace
``X-Correlation-ID``      the correlation id (``X-Request-ID`` is accepted on the way in)
========================  ===========================================================

Hostile input is contained: an exception inside any propagator is caught, a malformed header is ignored (a
fresh trace or id starts) and counted in ``otel_kit.propagation.rejected``, and raw header values are kept out of
the SDK's own warning messages.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from opentelemetry import baggage
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context, get_current
from opentelemetry.propagators.aws import AwsXRayPropagator
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel_kit._internal import correlation
from otel_kit._internal.selfmetrics import PROPAGATION_REJECTED, counts

__all__ = [
    "CorrelationPropagator",
    "HardenedPropagator",
    "build_propagator",
    "install_log_guards",
    "lower_case_getter",
]

_log = logging.getLogger("otel_kit.propagation")


def _first(getter: Getter[CarrierT], carrier: CarrierT, *names: str) -> str | None:
    """The first value of the first header present, trying each spelling (dict carriers are case-sensitive)."""
    for name in names:
        # the toolkit's servers' getter lower-cases the name itself: one lookup per name
        for spelling in (name,) if getter is lower_case_getter else (name, name.lower()):
            try:
                values = getter.get(carrier, spelling)
            except Exception:  # a hostile carrier object must not break extraction
                return None
            if values:
                value = values[0] if isinstance(values, (list, tuple)) else values
                return value if isinstance(value, str) else str(value)
    return None


class _LowerCaseGetter(Getter[Mapping[str, str]]):
    """Header lookup in a dict whose keys were lower-cased once (HTTP header names are case-insensitive)."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key.lower())
        return [value] if value is not None else None

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


lower_case_getter = _LowerCaseGetter()


class CorrelationPropagator(TextMapPropagator):
    """Carries the correlation id in ``X-Correlation-ID``; on extract, guarantees the context has one.

    Order of preference on the way in: ``X-Correlation-ID``, ``X-Request-ID``, the ``correlation_id`` baggage
    entry, then a fresh id. A header that is present but malformed is counted and replaced.
    """

    def extract(
        self, carrier: CarrierT, context: Context | None = None, getter: Getter[CarrierT] = default_getter
    ) -> Context:
        for header in (correlation.HEADER, correlation.REQUEST_ID_HEADER):
            raw = _first(getter, carrier, header)
            if raw is None:
                continue
            cid = correlation.valid_correlation_id(raw)
            if cid is not None:
                return correlation.with_correlation_id(cid, context)
            counts().add(PROPAGATION_REJECTED, header.lower())
        in_baggage = baggage.get_baggage(correlation.BAGGAGE_KEY, context)
        if in_baggage is not None:
            if correlation.valid_correlation_id(in_baggage) is not None:
                return context if context is not None else get_current()
            counts().add(PROPAGATION_REJECTED, "baggage")
        return correlation.with_fresh_correlation_id(context)

    def inject(
        self, carrier: CarrierT, context: Context | None = None, setter: Setter[CarrierT] = default_setter
    ) -> None:
        cid = correlation.get_correlation_id(context)
        if cid is not None:
            setter.set(carrier, correlation.HEADER, cid)

    @property
    def fields(self) -> set[str]:
        return {correlation.HEADER, correlation.REQUEST_ID_HEADER}


class HardenedPropagator(TextMapPropagator):
    """Runs propagators in order like ``CompositePropagator``, but no exception escapes and rejects are counted.

    For a trace-context propagator whose header is present but which returned the context it was given (what the
    W3C and X-Ray propagators do with a header they reject), the header was malformed: it is counted under its
    header name.
    """

    def __init__(self, propagators: Iterable[tuple[TextMapPropagator, str | None]]) -> None:
        self._propagators = list(propagators)
        # for carriers read with lower_case_getter (the toolkit's servers): a propagator none of whose headers is
        # in the carrier is skipped, as it would hand back the context unchanged. The correlation propagator
        # always runs: it gives a request without an id a fresh one.
        self._headers = [
            None if isinstance(p, CorrelationPropagator) else frozenset(f.lower() for f in p.fields)
            for p, _ in self._propagators
        ]

    def extract(
        self, carrier: CarrierT, context: Context | None = None, getter: Getter[CarrierT] = default_getter
    ) -> Context:
        ctx = context if context is not None else Context()
        lower_case = getter is lower_case_getter and isinstance(carrier, Mapping)
        for (propagator, trace_header), headers in zip(self._propagators, self._headers, strict=True):
            if lower_case and headers is not None and headers.isdisjoint(carrier):  # type: ignore[arg-type]
                continue
            given = ctx
            try:
                ctx = propagator.extract(carrier, ctx, getter=getter)
            except Exception:
                counts().add(PROPAGATION_REJECTED, trace_header or type(propagator).__name__)
                continue
            # the trace-context propagators hand back the very context they were given when they reject their
            # header, and a new one when they accept it (even for the parent an earlier header already gave)
            if trace_header and ctx is given and _first(getter, carrier, trace_header):
                counts().add(PROPAGATION_REJECTED, trace_header.lower())
        return ctx

    def inject(
        self, carrier: CarrierT, context: Context | None = None, setter: Setter[CarrierT] = default_setter
    ) -> None:
        for propagator, _ in self._propagators:
            try:
                propagator.inject(carrier, context, setter=setter)
            except Exception:
                _log.debug("propagator %s failed to inject", type(propagator).__name__)

    @property
    def fields(self) -> set[str]:
        names: set[str] = set()
        for propagator, _ in self._propagators:
            names |= propagator.fields
        return names


def build_propagator() -> HardenedPropagator:
    """X-Ray first so that a valid ``traceparent`` wins, then baggage, then the correlation id."""
    return HardenedPropagator(
        [
            (AwsXRayPropagator(), "X-Amzn-Trace-Id"),
            (TraceContextTextMapPropagator(), "traceparent"),
            (W3CBaggagePropagator(), None),
            (CorrelationPropagator(), None),
        ]
    )


class _NoRawHeaderValues(logging.Filter):
    """Rewrites the SDK's propagation warnings so a header's raw value never reaches a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "baggage" in record.name:  # malformed X-Ray headers are counted by HardenedPropagator
            counts().add(PROPAGATION_REJECTED, "baggage")
        record.msg = "ignored a malformed or oversized %s header entry"
        record.args = ("baggage" if "baggage" in record.name else "X-Amzn-Trace-Id",)
        return record.levelno >= logging.WARNING


_GUARDED_LOGGERS = ("opentelemetry.baggage.propagation", "opentelemetry.propagators.aws.aws_xray_propagator")


def install_log_guards() -> None:
    """Attach the raw-value filter to the SDK loggers that would otherwise echo header contents."""
    for name in _GUARDED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoRawHeaderValues) for f in logger.filters):
            logger.addFilter(_NoRawHeaderValues())
