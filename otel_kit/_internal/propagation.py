"""Context propagation: W3C trace context and baggage, AWS X-Ray, and the correlation id, hardened.

``build_propagator()`` is installed as the global propagator by ``init()``, so every instrumentation (HTTP
servers and clients, RabbitMQ, botocore) reads and writes the same four kinds of header:

========================  ===========================================================
``traceparent``           W3C trace context (wins over X-Ray when both are valid)
``baggage``               W3C baggage, carries ``correlation_id``
``X-Amzn-Trace-Id``       AWS X-Ray, so a request crossing X-Ray-instrumented code stays one trace
``X-Correlation-ID``      the correlation id (``X-Request-ID`` is accepted on the way in)
========================  ===========================================================

A header that arrives several times is read as its field lines joined with ``","`` (RFC 9110, section 5.3), by
every carrier: two ``traceparent`` lines make one invalid value (a fresh trace starts), several ``tracestate`` or
``baggage`` lines one list. ``tracestate`` is parsed by the current W3C Trace Context Level 2 text
(``parse_tracestate``), where the SDK's parser follows Level 1.

Hostile input is contained: an exception inside any propagator is caught, a malformed header is ignored (a
fresh trace or id starts) and counted once per request in ``otel_kit.propagation.rejected``, found by what the
extraction kept, not by what the SDK logged; the SDK's warnings that would echo a header's value are rewritten
without it (``install_log_guards``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any
from urllib.parse import unquote_plus

from opentelemetry import baggage, trace
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
from opentelemetry.trace import TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel_kit._internal import correlation
from otel_kit._internal.selfmetrics import PROPAGATION_REJECTED, counts

__all__ = [
    "CorrelationPropagator",
    "HardenedPropagator",
    "TraceContextPropagator",
    "add_header",
    "build_propagator",
    "install_log_guards",
    "joined",
    "lower_case_getter",
    "parse_tracestate",
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


def joined(values: object) -> str | None:
    """One header's field lines as one value, joined with "," (RFC 9110, section 5.3): a string as it is, a list or
    tuple of strings (or UTF-8 bytes) joined, anything else None."""
    if isinstance(values, str):
        return values
    if isinstance(values, bytes):
        try:
            return values.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(values, (list, tuple)):
        parts = [joined(v) for v in values if not isinstance(v, (list, tuple))]
        kept = [p for p in parts if p is not None]
        return ",".join(kept) if kept and len(kept) == len(values) else None
    return None


def add_header(carrier: MutableMapping[str, str], name: str, value: str) -> None:
    """Add a field line to a carrier keyed by lower-case name: a repeated header's lines are joined with ","."""
    key = name.lower()
    known = carrier.get(key)
    carrier[key] = value if known is None else f"{known},{value}"


class _JoinedGetter(Getter[Any]):
    """Any getter, with a repeated header's values joined into one (RFC 9110, section 5.3) before a propagator
    reads it: the SDK's propagators read only the first value of a list, so a second ``traceparent`` would be
    ignored instead of making the header invalid."""

    def __init__(self, getter: Getter[Any]) -> None:
        self._getter = getter

    def get(self, carrier: Any, key: str) -> list[str] | None:
        value = joined(self._getter.get(carrier, key))
        return [value] if value is not None else None

    def keys(self, carrier: Any) -> list[str]:
        return self._getter.keys(carrier)


class _LowerCaseGetter(Getter[Mapping[str, str]]):
    """Header lookup in a dict whose keys were lower-cased once (HTTP header names are case-insensitive)."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key.lower())
        return [value] if value is not None else None

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


lower_case_getter = _LowerCaseGetter()


# --- tracestate, W3C Trace Context Level 2 -------------------------------------------------------------------
# Section "tracestate Header Field Values": list = list-member 0*31( OWS "," OWS list-member ),
# list-member = (key "=" value) / OWS; key = ( lcalpha / DIGIT ) 0*255 ( keychar ), keychar = lcalpha / DIGIT /
# "_" / "-" / "*" / "/" / "@"; value = 0*255(chr) nblk-chr. Level 1's separate multi-tenant form
# (tenant 0*240, "@", system 0*13) is folded into the one key rule, which the SDK 1.45 parser does not follow.
_TRACESTATE_KEY = r"[a-z0-9][a-z0-9_\-*/@]{0,255}"
_TRACESTATE_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_TRACESTATE_MEMBER = re.compile(f"({_TRACESTATE_KEY})=({_TRACESTATE_VALUE})")
TRACESTATE_MAX_MEMBERS = 32
TRACESTATE_MAX_LENGTH = 8192  # the SDK's bound on the combined header: no list of 32 valid members comes near it


def parse_tracestate(value: str) -> tuple[list[tuple[str, str]], bool]:
    """The list members of a combined ``tracestate`` value, and whether anything in it was rejected.

    Following the Level 2 text: empty and whitespace-only members are skipped; spaces and tabs around a member are
    optional whitespace (leading spaces of a value are kept, trailing ones are not part of it); a member that does
    not match the grammar, or a list of more than 32 members, discards the whole header (section "Processing
    Model": "If the tracestate header cannot be parsed the vendor MAY discard the entire header", as the W3C test
    suite expects at its strict level); a repeated key keeps its first, left-most, value (section "Combined Header
    Value"; keeping one of them is what the test suite accepts), the repeat counted as rejected.
    """
    if len(value) > TRACESTATE_MAX_LENGTH:
        return [], True
    pairs: dict[str, str] = {}
    rejected = False
    for member in value.split(","):
        member = member.strip(" \t")
        if not member:
            continue
        match = _TRACESTATE_MEMBER.fullmatch(member)
        if match is None:
            return [], True
        key, val = match.groups()
        if key in pairs:
            rejected = True
            continue
        pairs[key] = val
        if len(pairs) > TRACESTATE_MAX_MEMBERS:
            return [], True
    return list(pairs.items()), rejected


def _trace_state(pairs: list[tuple[str, str]]) -> TraceState:
    """A ``TraceState`` holding ``pairs`` as parsed. The SDK's constructor would check them again by Level 1's key
    rule and drop, with a warning naming them, the keys Level 2 allows (``foo@``, ``1vendor``), so its mapping is
    filled directly (SDK 1.45 internals, covered by tests)."""
    state = TraceState()
    state._dict = dict(pairs)
    return state


class _HideTraceState(Getter[Any]):
    """A getter that answers every header but ``tracestate``, which ``TraceContextPropagator`` parses itself."""

    def __init__(self, getter: Getter[Any]) -> None:
        self._getter = getter

    def get(self, carrier: Any, key: str) -> list[str] | None:
        if key.lower() == "tracestate":
            return None
        return self._getter.get(carrier, key)

    def keys(self, carrier: Any) -> list[str]:
        return self._getter.keys(carrier)


class TraceContextPropagator(TraceContextTextMapPropagator):
    """The SDK's W3C trace-context propagator, with ``tracestate`` parsed by ``parse_tracestate``.

    ``traceparent`` is parsed by the SDK. With a valid one, the received ``tracestate`` is kept as the Level 2 text
    says; with none or an invalid one, ``tracestate`` is discarded (section "Processing Model", "If a tracestate
    header is received without an accompanying traceparent header, it is invalid and MUST be discarded"). A
    ``tracestate`` rejected in whole or in part is counted once under ``tracestate``.
    """

    def extract(
        self, carrier: CarrierT, context: Context | None = None, getter: Getter[CarrierT] = default_getter
    ) -> Context:
        given = context if context is not None else get_current()
        ctx = super().extract(carrier, given, getter=_HideTraceState(getter))
        if ctx is given:
            return ctx
        span_context = trace.get_current_span(ctx).get_span_context()
        raw = _first(getter, carrier, "tracestate")
        pairs: list[tuple[str, str]] = []
        if raw is not None:
            pairs, rejected = parse_tracestate(raw)
            if rejected:
                counts().add(PROPAGATION_REJECTED, "tracestate")
        parsed = trace.SpanContext(
            trace_id=span_context.trace_id,
            span_id=span_context.span_id,
            is_remote=True,
            trace_flags=span_context.trace_flags,
            trace_state=_trace_state(pairs) if pairs else None,
        )
        return trace.set_span_in_context(trace.NonRecordingSpan(parsed), given)


def _baggage_rejected(carrier: Any, getter: Getter[Any], ctx: Context) -> bool:
    """Whether the W3C baggage propagator dropped any member of the received ``baggage`` header: the keys it names
    against the keys ``ctx`` holds (the SDK says what it dropped only in warnings, which the logger's level may
    hide)."""
    header = _first(getter, carrier, "baggage")
    if not header:
        return False
    if len(header.encode("utf-8", "replace")) > W3CBaggagePropagator._MAX_HEADER_LENGTH:
        return True
    kept = baggage.get_all(ctx)
    for member in header.split(","):
        if not member.strip(" \t"):
            continue
        try:
            key = unquote_plus(member.split("=", 1)[0].strip(" \t")).strip()
        except Exception:
            return True
        if "=" not in member or key not in kept:
            return True
    return False


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
        if not lower_case:  # the toolkit's carriers hold one joined value per header already
            getter = _JoinedGetter(getter)
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
            elif isinstance(propagator, W3CBaggagePropagator) and _baggage_rejected(carrier, getter, ctx):
                counts().add(PROPAGATION_REJECTED, "baggage")
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
            (TraceContextPropagator(), "traceparent"),
            (W3CBaggagePropagator(), None),
            (CorrelationPropagator(), None),
        ]
    )


# %-style conversions of a logging message, replaced when the record's arguments are dropped
_CONVERSION = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[diouxXeEfFgGcrsa]")


class _NoRawHeaderValues(logging.Filter):
    """Drops the arguments of the SDK's warnings on loggers that may echo what a header carried (a tracestate or
    baggage member, an X-Ray header): the message stays, each value reads ``[value not logged]``. Counting is the
    propagators' job: this only keeps raw values out of log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg: Any = record.msg
        if isinstance(msg, tuple) and msg and isinstance(msg[0], str):
            msg = msg[0]  # the X-Ray propagator logs its error's (format, *values) tuple as the message
        if not isinstance(msg, str):
            record.msg, record.args = f"{record.name}: a message that may quote a header was not logged", None
        elif record.args or msg is not record.msg:
            record.msg, record.args = _CONVERSION.sub("[value not logged]", msg).replace("%%", "%"), None
        return True


# Every SDK logger whose messages can carry a received header's content (read in opentelemetry-api 1.45 and
# opentelemetry-propagator-aws-xray 1.0): the baggage propagator names a rejected member or the whole header,
# TraceState names rejected keys and values, the X-Ray propagator's parse errors quote the header.
_GUARDED_LOGGERS = (
    "opentelemetry.baggage.propagation",
    "opentelemetry.trace.span",
    "opentelemetry.trace.propagation.tracecontext",
    "opentelemetry.propagators.aws.aws_xray_propagator",
)


def install_log_guards() -> None:
    """Attach the raw-value filter to the SDK loggers that would otherwise echo header contents."""
    for name in _GUARDED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoRawHeaderValues) for f in logger.filters):
            logger.addFilter(_NoRawHeaderValues())
