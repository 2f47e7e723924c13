"""Logs: stdlib ``logging`` writing one JSON object per line, and the same records exported over OTLP.

A log line's journey, top to bottom:

1. ``TelemetryContextFilter``, once per record whichever handlers it reaches, first replaces secrets in the
   message, the ``extra`` fields and the exception text (``redaction.scrub_record``), then adds ``service``,
   ``trace_id``, ``span_id``, ``xray_trace_id`` and ``correlation_id`` from the current context (fields a caller
   passed in ``extra`` are kept);
2. the JSON formatter (python-json-logger) renders ``timestamp``, ``level``, ``logger``, ``message``, those
   fields, any other ``extra`` and ``stack`` for exceptions. JSON escapes newlines and control characters, so a
   message can never forge a second line;
3. the stdout handler writes the line; the OpenTelemetry ``LoggingHandler`` hands the record to the
   LoggerProvider, whose batch processor exports it over OTLP. Records of the OpenTelemetry SDK's own loggers
   (``opentelemetry.*``) go to stdout only: exporting them fed a loop while the collector was down (each failed
   export logged an error that was queued for the next export, which failed in turn, for as long as the outage
   lasted) and, at shutdown, answered every late record with another one. The failures are counted in
   ``otel_kit.export.failed`` either way.

With ``OTEL_KIT_LOG_BACKGROUND`` on (the default) the filter runs on the caller's thread and steps 2 and 3 on the
background writer's (``logwriter``).
"""

from __future__ import annotations

import contextvars
import copy
import logging
import re
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

from opentelemetry import baggage, context, trace
from opentelemetry._logs import LogRecord
from opentelemetry.context import Context
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk._logs import Logger as SDKLogger
from opentelemetry.sdk._logs import (
    LoggerProvider,
    LogRecordLimits,
    LogRecordProcessor,
    ReadableLogRecord,
    ReadWriteLogRecord,
)
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, ConsoleLogRecordExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import format_span_id, format_trace_id
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonEncoder, JsonFormatter

from otel_kit._internal import correlation, otlp, serverlogs
from otel_kit._internal.config import Settings
from otel_kit._internal.logwriter import BackgroundLogHandler
from otel_kit._internal.redaction import Scrubber, scrub_record
from otel_kit._internal.streams import OUTPUT_LOCK
from otel_kit._internal.tracing import plain_attributes

__all__ = [
    "JSON_FIELDS",
    "BackgroundLogHandler",
    "TelemetryContextFilter",
    "build_logger_provider",
    "install_handlers",
    "json_formatter",
    "remove_handlers",
]

# The fields every line carries, in this order; values are null when there is no span or id.
JSON_FIELDS = (
    "timestamp",
    "level",
    "logger",
    "message",
    "service",
    "trace_id",
    "span_id",
    "xray_trace_id",
    "correlation_id",
)


# set by otel_kit.xray_sdk: the X-Ray SDK's current (trace id, entity id), read when no OpenTelemetry span runs
XRAY_SDK_IDS: Callable[[], tuple[str, str] | None] | None = None

# the AWS request id of the Lambda invocation running in this context (set by ``@otel_kit.lambda_handler``)
LAMBDA_REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("otel_kit_request_id", default=None)


_DONE = "_otel_kit"  # marks a record the filter has seen; names starting with "_" are neither formatted nor exported


class TelemetryContextFilter(logging.Filter):
    """Scrubs each record, then adds the service and the current trace and correlation ids. Never rejects one.

    One filter on each of the toolkit's handlers, doing its work once per record (the first handler's call):
    nothing is formatted or exported before the record is scrubbed. Cost: the scrubbing, and a context lookup
    per line; the fields are worked out once per context and copied onto its other lines in one update.
    """

    def __init__(self, service: str, scrubber: Scrubber | None = None) -> None:
        super().__init__()
        self.service = service
        self.scrubber = scrubber if scrubber is not None and scrubber.enabled else None
        self._last: tuple[Context | None, dict[str, Any]] = (None, {})

    def _from_context(self, ctx: Context) -> dict[str, Any]:
        """The marker, the service, and trace_id, span_id, xray_trace_id and correlation_id of ``ctx``, worked out
        once per context and reused for its other lines (a Context never changes: a new span or correlation id
        comes in a new one)."""
        last_ctx, fields = self._last
        if last_ctx is ctx:
            return fields
        span_ctx = trace.get_current_span(ctx).get_span_context()
        trace_id = span_id = xray_trace_id = None
        if span_ctx.is_valid:
            trace_id, span_id = format_trace_id(span_ctx.trace_id), format_span_id(span_ctx.span_id)
            xray_trace_id = f"1-{trace_id[:8]}-{trace_id[8:]}"
        # validated when it entered the context; JSON escaping keeps any value on its one line regardless
        cid = baggage.get_baggage(correlation.BAGGAGE_KEY, ctx)
        fields = {
            _DONE: True,
            "service": self.service,
            "trace_id": trace_id,
            "span_id": span_id,
            "xray_trace_id": xray_trace_id,
            "correlation_id": cid if isinstance(cid, str) else None,
        }
        self._last = (ctx, fields)  # one tuple assignment: safe to share between threads
        return fields

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        if _DONE in fields:  # the record's second handler: the first one did everything
            return True
        if self.scrubber is not None:
            scrub_record(self.scrubber, record)
        found = self._from_context(context.get_current())
        if (
            fields.get("trace_id") is None
            and fields.get("correlation_id") is None
            and (found["trace_id"] is not None or XRAY_SDK_IDS is None)
        ):
            fields.update(found)  # the common case: the caller gave no ids and the context has what there is
        else:
            _merge_ids(fields, found)
        request_id = LAMBDA_REQUEST_ID.get()
        if request_id is not None:
            fields["request_id"] = request_id
        return True


def _merge_ids(fields: dict[str, Any], found: dict[str, Any]) -> None:
    """Add ``found`` to a record's fields, keeping the ids its caller gave in ``extra``; with no OpenTelemetry
    span, the X-Ray SDK's ids when it has a segment open."""
    fields[_DONE], fields["service"] = True, found["service"]
    given = fields.get("trace_id")
    if given is None:
        if found["trace_id"] is None and XRAY_SDK_IDS is not None and (xray := XRAY_SDK_IDS()) is not None:
            fields["xray_trace_id"], fields["span_id"] = xray
            fields["trace_id"] = xray[0][2:].replace("-", "")  # 1-5759e988-bd86... -> 5759e988bd86...
        else:
            fields["trace_id"], fields["span_id"] = found["trace_id"], found["span_id"]
            fields["xray_trace_id"] = found["xray_trace_id"]
    elif fields.get("xray_trace_id") is None and isinstance(given, str):
        fields["xray_trace_id"] = f"1-{given[:8]}-{given[8:]}"
    if fields.get("correlation_id") is None:
        fields["correlation_id"] = found["correlation_id"]


# Line breaks that JSON leaves raw but ``str.splitlines()`` (and some log tools) split on; escaped so that no
# message can break its line in two (JSON already escapes ``\n``, ``\r`` and every other control character).
_UNICODE_BREAKS = re.compile("[\x85\u2028\u2029]")


# python-json-logger's encoder, made once: ``json.dumps`` with a ``cls`` builds a new one for every line, a third of
# the cost of encoding it. ``encode`` keeps no state between calls, so the writer and any caller can share it.
_ENCODER = JsonEncoder(ensure_ascii=False)


class _JsonFormatter(JsonFormatter):
    """python-json-logger's formatter with the field names above, ``stack`` for exception text, one line always."""

    def jsonify_log_record(self, log_data: dict[str, Any]) -> str:
        return _ENCODER.encode(log_data)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if _UNICODE_BREAKS.search(line):
            line = _UNICODE_BREAKS.sub(lambda m: f"\\u{ord(m.group()):04x}", line)
        return line

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)  # the context fields are reserved: added here, in order
        fields = record.__dict__
        # the fixed fields first, in JSON_FIELDS order, then whatever the caller added
        ordered = {name: log_data.pop(name) for name in JSON_FIELDS[:4] if name in log_data}
        for name in JSON_FIELDS[4:]:
            given = log_data.pop(name, None)  # from a dict logged as the message
            ordered[name] = fields.get(name, given)
        ordered.update(log_data)
        log_data.clear()
        log_data.update(ordered)


# what servers add to their records for their own console formatters (uvicorn: the message with ANSI colours)
_SERVER_EXTRAS = ("color_message",)


def json_formatter() -> logging.Formatter:
    return _JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger", "exc_info": "stack"},
        reserved_attrs=[*RESERVED_ATTRS, *JSON_FIELDS[4:], *_SERVER_EXTRAS],
        timestamp=True,
        json_ensure_ascii=False,
    )


def build_logger_provider(
    settings: Settings,
    resource: Resource,
    meter_provider: MeterProvider | None,
    extra_processors: Sequence[LogRecordProcessor] = (),
) -> LoggerProvider:
    # the toolkit's own exit hook stops it, within OTEL_KIT_SHUTDOWN_TIMEOUT_MS
    provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    for name in settings.logs_exporter:
        exporter = otlp.log_exporter(settings, meter_provider) if name == "otlp" else ConsoleLogRecordExporter()
        provider.add_log_record_processor(_LeanBatchLogRecordProcessor(exporter))
    for processor in extra_processors:
        provider.add_log_record_processor(processor)
    return provider


_NO_CONTEXT = Context()  # immutable: one serves every queued record


def _queueable(
    record: LogRecord,
    resource: Resource | None,
    scope: InstrumentationScope | None,
    limits: LogRecordLimits | None,
) -> ReadableLogRecord:
    """``record`` (the caller's to change) as it waits in a batch queue, with fewer objects for Python's garbage
    collector: without its context, which would keep the request's span alive (the SDK's ``on_emit`` drops it
    too), the one empty context serving every record, and plain attributes instead of ``BoundedAttributes`` and
    its lock, unless the attribute limit dropped some (the count lives there). Three tracked objects a queued
    record instead of six: see ``tracing._slim`` for why that counts (SDK 1.45 internals, covered by tests)."""
    record.context = _NO_CONTEXT
    record.attributes = plain_attributes(record.attributes)
    return ReadableLogRecord(record, resource if resource is not None else Resource.create({}), scope, limits)


class _LeanBatchLogRecordProcessor(BatchLogRecordProcessor):
    """The SDK's batch processor, queueing each record as ``_queueable`` makes it; ``_OtelKitOtlpHandler`` hands it
    records made for it, the SDK's loggers a copy of theirs."""

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        record = copy.copy(log_record.log_record)  # the SDK's record may still be read by the processors after us
        self.enqueue(_queueable(record, log_record.resource, log_record.instrumentation_scope, log_record.limits))

    def enqueue(self, readable: ReadableLogRecord) -> None:
        self._batch_processor.emit(readable)


class _OtelKitStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The toolkit's stdout handler (a second ``init()`` replaces it instead of adding another); it writes under
    ``streams.OUTPUT_LOCK``, the lock of every other line the toolkit writes (EMF documents)."""

    def createLock(self) -> None:  # logging's name
        self.lock = OUTPUT_LOCK


# Fields of the JSON line that an OTLP log record carries in its own fields (trace and span id), in its resource
# (service.name) or not at all (the X-Ray form of the trace id, for CloudWatch Logs, which reads the JSON lines).
_NOT_OTLP_ATTRIBUTES = ("service", "trace_id", "span_id", "xray_trace_id", _DONE, *_SERVER_EXTRAS)


class _OtelKitOtlpHandler(LoggingHandler):
    """The toolkit's OTLP handler: the contrib handler, without the attributes that repeat the record's own fields
    (each attribute is cleaned, queued, encoded and stored once more for every line), without the records of the
    OpenTelemetry SDK's own loggers (see the module docstring), and with a shorter way to the exporters.

    The contrib handler turns a record into an OpenTelemetry one (``_translate``) and emits it through the SDK's
    logger, which wraps it in a ``ReadWriteLogRecord`` with ``BoundedAttributes`` for the processors; the toolkit's
    batch processor then copies it again for its queue. When the toolkit's batch processors are the provider's
    only ones (the default), this handler queues the translated record with them itself: the same record, at half
    the cost on the writer's thread, which shares the GIL with the requests (``bench/``). Attributes are cleaned
    and limited as the SDK's ``ReadWriteLogRecord`` would, by it, unless they are plain values within the limits.
    Any other processor on the provider (``init(log_processors=...)``, or added later), or a logger its
    configurator turned off, gets the SDK's way (SDK 1.45 internals, covered by tests)."""

    def __init__(self, logger_provider: LoggerProvider) -> None:
        super().__init__(logger_provider=logger_provider)
        self._multi = logger_provider._multi_log_record_processor
        # the provider's processors last looked at, and the same again when they are all the toolkit's, else ()
        self._direct: tuple[tuple[LogRecordProcessor, ...] | None, tuple[_LeanBatchLogRecordProcessor, ...]]
        self._direct = (None, ())
        # the SDK's loggers by name: the provider's own cache takes a lock and a weak reference on every call
        self._loggers: dict[str, Any] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "opentelemetry" or record.name.startswith("opentelemetry."):
            return False
        return super().filter(record)

    def _get_attributes(self, record: logging.LogRecord) -> tuple[dict[str, Any], str | None]:
        attributes, event_name = super()._get_attributes(record)
        for name in _NOT_OTLP_ATTRIBUTES:
            attributes.pop(name, None)
        return attributes, event_name

    def emit(self, record: logging.LogRecord) -> None:
        processors = self._multi._log_record_processors  # a new tuple whenever a processor is added
        checked, direct = self._direct
        if processors is not checked:
            lean = [p for p in processors if isinstance(p, _LeanBatchLogRecordProcessor)]
            direct = tuple(lean) if len(lean) == len(processors) else ()
            self._direct = (processors, direct)
        if not direct:
            super().emit(record)
            return
        logger = self._loggers.get(record.name)
        if logger is None:
            logger = self._loggers[record.name] = self._logger_provider.get_logger(record.name)
        if not isinstance(logger, SDKLogger) or not logger._is_enabled():
            super().emit(record)
            return
        translated = self._translate(record)
        limits = logger._log_record_limits
        if not _plain_within(translated.attributes, limits):  # the SDK cleans, limits and warns, in place
            ReadWriteLogRecord(translated, logger._resource, logger._instrumentation_scope, limits)
        readable = _queueable(translated, logger._resource, logger._instrumentation_scope, limits)
        logger._logger_metrics.emit_log()
        for processor in direct:
            processor.enqueue(readable)


_PLAIN_VALUES = (str, int, float, bool)


def _plain_within(attributes: Any, limits: LogRecordLimits) -> bool:
    """Whether ``BoundedAttributes`` would keep ``attributes`` as they are: plain values under non-empty string
    keys, within the count and length limits."""
    if not attributes:
        return True
    count, length = limits.max_log_record_attributes, limits.max_log_record_attribute_length
    if count is not None and len(attributes) > count:
        return False
    for key, value in attributes.items():
        kind = type(value)
        if type(key) is not str or not key or kind not in _PLAIN_VALUES:
            return False
        if kind is str and length is not None and len(value) > length:
            return False
    return True


def install_handlers(
    settings: Settings,
    service: str,
    provider: LoggerProvider | None,
    stream: IO[str] | None = None,
    scrubber: Scrubber | None = None,
) -> list[logging.Handler]:
    """Configure the root logger: JSON lines on stdout and, when logs are exported, the OTLP handler, both behind
    the background writer (``logwriter``) unless ``OTEL_KIT_LOG_BACKGROUND`` is off. Returns what is on the root.

    Plain stream handlers already on the root logger (as ``logging.basicConfig`` adds) are removed so lines are
    not written twice; other handlers (files, test capture) are left alone. The servers' loggers (uvicorn,
    gunicorn) are taken over (``serverlogs``).
    """
    root = logging.getLogger()
    remove_handlers()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and getattr(handler, "stream", None) in (sys.stdout, sys.stderr):
            root.removeHandler(handler)
    record_filter = TelemetryContextFilter(service, scrubber)
    handlers: list[logging.Handler] = []
    if settings.log_stdout:
        stdout = _OtelKitStreamHandler(stream or sys.stdout)
        stdout.setFormatter(json_formatter())
        handlers.append(stdout)
    if provider is not None:
        handlers.append(_OtelKitOtlpHandler(logger_provider=provider))
    for handler in handlers:
        handler.addFilter(record_filter)
    if settings.log_background and handlers:
        handlers = [BackgroundLogHandler(handlers, record_filter)]
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(settings.log_level)
    if handlers:
        serverlogs.take_over()
    return handlers


def remove_handlers(handlers: Sequence[logging.Handler] | None = None) -> None:
    """Take ``handlers`` (default: every toolkit handler) off the root logger: ``shutdown()`` removes its own,
    a new ``init()`` all that an earlier one left."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        mine = isinstance(handler, (_OtelKitStreamHandler, _OtelKitOtlpHandler, BackgroundLogHandler))
        if mine and (handlers is None or handler in handlers):
            root.removeHandler(handler)
            if isinstance(handler, BackgroundLogHandler):
                handler.close()  # hands over what it still holds
