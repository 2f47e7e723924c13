"""Tracing: the TracerProvider, its sampler and X-Ray-compatible ids, and the processors ``init()`` installs.

The provider's own span processor is ``KitSpanProcessor``: when a span starts it stamps ``correlation_id`` on it;
when a span ends it scrubs it and, for an error, gives it a description when it has none (its exception, HTTP
status or ``error.type``) and writes one ERROR log line with the stack. Then it hands the span
to the processors added to the provider, in order: a ``BatchSpanProcessor`` per exporter (bounded queue,
background export: a dead collector never blocks), then any given to ``init()``. Doing the toolkit's work in the
provider's processor, not in one more processor beside the exporters', guarantees that no processor sees a span
before it is scrubbed, and saves a processor's three calls per span.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from opentelemetry import baggage, context, trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.extension.aws.trace import AwsXRayIdGenerator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import (
    ReadableSpan,
    Span,
    SpanProcessor,
    SynchronousMultiSpanProcessor,
    TracerProvider,
    sampling,
)
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, format_span_id, format_trace_id

from otel_kit._internal import correlation, otlp
from otel_kit._internal.config import Settings
from otel_kit._internal.redaction import Scrubber, scrub_span

__all__ = ["KitSpanProcessor", "build_sampler", "build_tracer_provider", "set_plain_attributes", "start_span"]

CORRELATION_ATTRIBUTE = "correlation_id"
_END_READERS = (BatchSpanProcessor, SimpleSpanProcessor)  # the SDK's processors that ignore a span's start


def build_sampler(settings: Settings) -> sampling.Sampler:
    """The head sampler named by ``OTEL_TRACES_SAMPLER`` with the ratio from ``OTEL_TRACES_SAMPLER_ARG``.

    A ratio of 1 (the default) or 0 takes the constant sampler that decides the same for every trace id, without
    the ratio sampler's arithmetic on each root span.
    """
    ratio: sampling.Sampler = (
        sampling.ALWAYS_ON
        if settings.sampler_arg >= 1.0
        else sampling.ALWAYS_OFF
        if settings.sampler_arg <= 0.0
        else sampling.TraceIdRatioBased(settings.sampler_arg)
    )
    root: sampling.Sampler = {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "traceidratio": ratio,
        "parentbased_always_on": sampling.ParentBased(sampling.ALWAYS_ON),
        "parentbased_always_off": sampling.ParentBased(sampling.ALWAYS_OFF),
        "parentbased_traceidratio": sampling.ParentBased(ratio),
    }[settings.sampler]
    return root


class KitSpanProcessor(SynchronousMultiSpanProcessor):
    """The provider's span processor: stamps the correlation id on each span, scrubs it and logs its error once,
    around the processors added to the provider.

    On start: the ``correlation_id`` attribute from the baggage of the parent context (validated when it entered
    the context), before the added processors' ``on_start``. On end, before the added processors' ``on_end``: the
    span is scrubbed, and an error is logged at the innermost span that recorded it, with the recorded stack. An
    exception that propagates through nested spans is recorded on each of them; the (trace, type, message) key
    of the last 1024 errors is remembered so only the first span to end logs it. Cost: a baggage lookup per span
    start, a status check per span end, and the scrubbing of the span's attributes.
    """

    def __init__(
        self, scrubber: Scrubber | None = None, logger_name: str = "otel_kit.errors", remember: int = 1024
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # untyped upstream
        self._scrubber = scrubber if scrubber is not None and scrubber.enabled else None
        self._log = logging.getLogger(logger_name)
        self._seen: OrderedDict[tuple[int, str, str], None] = OrderedDict()
        self._remember = remember
        self._lock = threading.Lock()
        # the last parent context seen and its correlation id: a request's spans mostly start in a few contexts
        self._last: tuple[Context | None, str | None] = (None, None)
        # the added processors last looked at, and whether any of them may read a span as it starts
        self._start_readers: tuple[tuple[SpanProcessor, ...] | None, bool] = (None, True)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        ctx = parent_context if parent_context is not None else context.get_current()
        last_ctx, cid = self._last
        if last_ctx is not ctx:  # a Context never changes: a new correlation id comes in a new one
            found = baggage.get_baggage(correlation.BAGGAGE_KEY, ctx)
            cid = found if isinstance(found, str) else None
            self._last = (ctx, cid)  # one tuple assignment: safe to share between threads
        if cid is not None:
            _stamp(span, cid)
        for processor in self._span_processors:  # the loop of the base class, without one more call
            processor.on_start(span, parent_context=parent_context)

    def reads_at_start(self) -> bool:
        """Whether a processor added after this one may read a span when it starts: any but the SDK's batch and
        simple processors, which read spans when they end."""
        processors = self._span_processors  # a new tuple whenever a processor is added
        checked, reads = self._start_readers
        if processors is not checked:
            reads = not all(type(p) in _END_READERS for p in processors)
            self._start_readers = (processors, reads)  # one tuple assignment: safe to share between threads
        return reads

    def on_end(self, span: ReadableSpan) -> None:
        _slim(span)
        if self._scrubber is not None:
            scrub_span(span, self._scrubber)
        if span._status.status_code is StatusCode.ERROR:  # the property's value, without the call
            if not span._status.description:
                _describe_error(span)
            self._log_error(span)
        for processor in self._span_processors:
            processor.on_end(span)

    def _log_error(self, span: ReadableSpan) -> None:
        if span.context is None:
            return
        event = next((e for e in reversed(span.events) if e.name == "exception"), None)
        if event is None or event.attributes is None:
            return
        exc_type = str(event.attributes.get("exception.type", ""))
        exc_message = str(event.attributes.get("exception.message", ""))
        key = (span.context.trace_id, exc_type, exc_message)
        with self._lock:
            if key in self._seen:
                return
            self._seen[key] = None
            if len(self._seen) > self._remember:
                self._seen.popitem(last=False)
        attributes = span.attributes or {}
        cid = attributes.get(CORRELATION_ATTRIBUTE)
        # logged in the ended span's context: a span usually ends after its context was left, and the OTLP record
        # takes its trace and span id from the context (the JSON line takes them from the extra fields)
        token = context.attach(trace.set_span_in_context(trace.NonRecordingSpan(span.context)))
        try:
            self._log.error(
                "%s failed: %s: %s",
                span.name,
                exc_type,
                exc_message,
                extra={
                    "trace_id": format_trace_id(span.context.trace_id),
                    "span_id": format_span_id(span.context.span_id),
                    "correlation_id": cid if isinstance(cid, str) else None,
                    "error.type": exc_type,
                    "stack": str(event.attributes.get("exception.stacktrace", "")),
                },
            )
        finally:
            context.detach(token)


def _error_description(span: ReadableSpan) -> str | None:
    """Why a span ended in error, from what it recorded: its last exception (``Type: message``), else its HTTP
    status (``503 Service Unavailable``), else its ``error.type``; None when it recorded none of them."""
    event = next((e for e in reversed(span.events) if e.name == "exception"), None)
    if event is not None and event.attributes:
        exc_type = str(event.attributes.get("exception.type", ""))
        message = str(event.attributes.get("exception.message", ""))
        return f"{exc_type}: {message}" if message else exc_type or None
    attributes = span.attributes or {}
    code = attributes.get("http.response.status_code", attributes.get("http.status_code"))
    if isinstance(code, int):
        return _http_status_text(code)
    error_type = attributes.get("error.type")
    return str(error_type) if error_type else None


def _http_status_text(code: int) -> str:
    """``503 Service Unavailable``; ``HTTP status 599`` for a code without a standard phrase."""
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return f"HTTP status {code}"


def _describe_error(span: ReadableSpan) -> None:
    """Give an ended error span without a description one (``_error_description``), so every error a trace view
    or report shows says why: the toolkit's ASGI middleware and Lambda batches, and the contrib HTTP
    instrumentations, set ERROR without one (SDK 1.45 internals, covered by tests)."""
    description = _error_description(span)
    if description:
        span._status = Status(StatusCode.ERROR, description)


def _stamp(span: Span, cid: str) -> None:
    """Add the correlation id to a starting span, unless its creator already set one (the server middlewares do).

    The span is not yet shared with any other thread, so the id (validated, at most 128 characters) goes straight
    into the attribute dict when it fits the limits, skipping the locks and checks of ``set_attribute``, which cost
    more than the rest of this processor (SDK 1.45 internals, covered by tests). Written out rather than through
    ``set_plain_attributes``: this runs on every span.
    """
    attributes = span._attributes
    if not isinstance(attributes, BoundedAttributes):
        span.set_attribute(CORRELATION_ATTRIBUTE, cid)
    elif CORRELATION_ATTRIBUTE in attributes._dict:
        return
    elif (attributes.maxlen is None or len(attributes._dict) < attributes.maxlen) and (
        attributes.max_value_len is None or len(cid) <= attributes.max_value_len
    ):
        attributes._dict[CORRELATION_ATTRIBUTE] = cid
    else:
        span.set_attribute(CORRELATION_ATTRIBUTE, cid)


def set_plain_attributes(span: Any, attributes: Mapping[str, str | int | float | bool]) -> None:
    """``span.set_attributes(attributes)`` for attributes the caller made itself (str, int, float or bool values
    under non-empty string keys), on a span no other thread holds: one starting, or ending in its own request.

    They go straight into the span's attribute dict when they fit its limits, skipping the lock and the cleaning
    of ``BoundedAttributes``, which cost 4 to 7 µs for an HTTP server span's seven: more than the rest of the
    toolkit's work on the span. Otherwise (a limit to apply, an ended or non-recording span) the SDK's way
    (SDK 1.45 internals, covered by tests).
    """
    bounded = getattr(span, "_attributes", None)
    if type(bounded) is BoundedAttributes and span._end_time is None:  # recording: not ended
        store = bounded._dict
        count, length = bounded.maxlen, bounded.max_value_len
        if count is None or len(store) + len(attributes) <= count:
            if length is not None:
                for value in attributes.values():
                    if type(value) is str and len(value) > length:
                        span.set_attributes(attributes)
                        return
            store.update(attributes)
            return
    span.set_attributes(attributes)


def start_span(
    tracer: Tracer, name: str, ctx: Context, kind: SpanKind, attributes: Mapping[str, str | int | float | bool]
) -> Span:
    """``tracer.start_span`` with ``attributes`` made by the caller (as for ``set_plain_attributes``).

    When nothing reads a span's attributes as it starts (the toolkit's provider, whose samplers ignore them, with
    only the SDK's batch and simple processors after its own, which read spans when they end), the span starts
    without them and they go straight into it. Otherwise the sampler and the processors see them at the start.
    """
    processor = getattr(tracer, "span_processor", None)
    if isinstance(processor, KitSpanProcessor) and not processor.reads_at_start():
        span = tracer.start_span(name, context=ctx, kind=kind)
        set_plain_attributes(span, attributes)
        return span  # type: ignore[return-value]  # an SDK span: the provider is the toolkit's
    return tracer.start_span(name, context=ctx, kind=kind, attributes=attributes)  # type: ignore[return-value]


def _slim(span: ReadableSpan) -> None:
    """Swap the ended span's attribute, event and link containers for plain ones, unless a limit dropped items.

    A queued span waits up to the batch processor's schedule (5 s) for its export, long enough for Python's
    garbage collector to move it to the oldest generation, and every object so moved brings the next full
    collection nearer, which stops the whole process for as long as it takes to walk the heap (tens of ms on
    a service). The SDK's ``BoundedAttributes`` and two ``BoundedList`` hold a lock and a deque each: eight of the
    eleven objects the collector tracks per queued span. A dict of plain values and an empty tuple are not
    tracked at all. The public properties read the same either way; the dropped counts live only in the bounded
    containers, which are kept when they count something (SDK 1.45 internals, covered by tests).
    """
    # written out, and reading the deques without the lists' locks (nothing is added to an ended span): this runs
    # on every span, and a loop over the names with getattr and setattr cost a tenth of the span itself
    span._attributes = plain_attributes(span._attributes)
    events = span._events
    if type(events) is BoundedList and not events.dropped:
        span._events = tuple(events._dq)  # type: ignore[attr-defined]  # untyped in the SDK
    links = span._links
    if type(links) is BoundedList and not links.dropped:
        span._links = tuple(links._dq)  # type: ignore[attr-defined]


def plain_attributes(attributes: Any) -> Any:
    """The plain dict inside ``BoundedAttributes`` when its limit dropped nothing (the dropped count lives only in
    the bounded container), else ``attributes`` itself: for what waits in a batch queue (spans, log records)."""
    if type(attributes) is BoundedAttributes and not attributes.dropped:
        return attributes._dict
    return attributes


def build_tracer_provider(
    settings: Settings,
    resource: Resource,
    meter_provider: MeterProvider | None,
    extra_processors: Sequence[SpanProcessor] = (),
    scrubber: Scrubber | None = None,
) -> TracerProvider:
    """A provider with X-Ray-compatible ids, the configured sampler, and one batch processor per exporter."""
    provider = TracerProvider(
        resource=resource,
        sampler=build_sampler(settings),
        id_generator=AwsXRayIdGenerator(),
        active_span_processor=KitSpanProcessor(scrubber),
        shutdown_on_exit=False,  # the toolkit's own exit hook stops it, within OTEL_KIT_SHUTDOWN_TIMEOUT_MS
    )
    for name in settings.traces_exporter:
        exporter: SpanExporter = (
            otlp.span_exporter(settings, meter_provider) if name == "otlp" else ConsoleSpanExporter()
        )
        provider.add_span_processor(BatchSpanProcessor(exporter))
    for processor in extra_processors:
        provider.add_span_processor(processor)
    return provider
