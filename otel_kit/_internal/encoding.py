"""OTLP protobuf encoding of spans and log records, built in place: the same messages as the SDK's encoders at a
third of the cost.

SDK 1.45's ``encode_spans`` and ``encode_logs`` build every attribute, span and group as a separate message and
pass lists of them to their parent's constructor, and the protobuf runtime (upb) copies a message on each such
hand-over: every attribute is copied again at each level on its way into the request. Here each message is added
to its parent where it will stay and filled there. On an HTTP server span with 9 attributes that is about 12 µs
instead of 33 µs, and on a log record 4 µs instead of 8, spent on the export threads that share the GIL with the
service's requests (``bench/``).

The output is the SDK's, message for message and byte for byte: ``tests/test_encoding.py`` compares the two on
spans and log records of every shape (events, links, remote parents, trace state, every attribute type, several
resources and scopes), so an SDK upgrade that changes its encoding fails there. The gRPC exporters use these
encoders (``otlp.py``); the HTTP exporters call the SDK's encoders from inside their ``export`` and keep them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PBSpan
from opentelemetry.proto.trace.v1.trace_pb2 import SpanFlags
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope as SDKScope
from opentelemetry.trace import SpanContext, SpanKind

__all__ = ["encode_logs", "encode_spans"]

_log = logging.getLogger(__name__)

_KINDS = {
    SpanKind.INTERNAL: PBSpan.SpanKind.SPAN_KIND_INTERNAL,
    SpanKind.SERVER: PBSpan.SpanKind.SPAN_KIND_SERVER,
    SpanKind.CLIENT: PBSpan.SpanKind.SPAN_KIND_CLIENT,
    SpanKind.PRODUCER: PBSpan.SpanKind.SPAN_KIND_PRODUCER,
    SpanKind.CONSUMER: PBSpan.SpanKind.SPAN_KIND_CONSUMER,
}
_HAS_IS_REMOTE = SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_IS_REMOTE = SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK


def encode_spans(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    """The export request for ``spans``, grouped by resource, then instrumentation scope, in order of first use."""
    return _grouped(ExportTraceServiceRequest(), spans, ("resource_spans", "scope_spans", "spans"), _fill_span)


def encode_logs(batch: Sequence[ReadableLogRecord]) -> ExportLogsServiceRequest:
    """The export request for ``batch``, grouped by resource, then instrumentation scope, in order of first use."""
    return _grouped(ExportLogsServiceRequest(), batch, ("resource_logs", "scope_logs", "log_records"), _fill_log)


_Request = TypeVar("_Request", ExportTraceServiceRequest, ExportLogsServiceRequest)


def _grouped(request: _Request, items: Sequence[Any], fields: tuple[str, str, str], fill: Any) -> _Request:
    """Add each item to ``request`` under its resource and scope (the three repeated fields of that level, top
    down), each group made when first used, and fill it there."""
    by_resource_field, by_scope_field, items_field = fields
    groups: dict[Resource, tuple[Any, dict[SDKScope | None, Any]]] = {}
    for item in items:
        resource, scope = item.resource, item.instrumentation_scope or None
        group = groups.get(resource)
        if group is None:
            by_resource = getattr(request, by_resource_field).add()
            _fill_resource(by_resource, resource)
            group = groups[resource] = (by_resource, {})
        parent, containers = group
        container = containers.get(scope)
        if container is None:
            by_scope = getattr(parent, by_scope_field).add()
            _fill_scope(by_scope, scope)
            container = containers[scope] = getattr(by_scope, items_field)
        fill(container.add(), item)
    return request


def _fill_resource(message: Any, resource: Resource) -> None:
    message.resource.SetInParent()
    _fill_attributes(message.resource.attributes, resource.attributes)
    if resource.schema_url:
        message.schema_url = resource.schema_url


def _fill_scope(message: Any, scope: SDKScope | None) -> None:
    pb_scope: InstrumentationScope = message.scope
    pb_scope.SetInParent()
    if scope is None:
        return
    pb_scope.name = scope.name
    if scope.version:
        pb_scope.version = scope.version
    _fill_attributes(pb_scope.attributes, scope.attributes)
    if scope.schema_url:
        message.schema_url = scope.schema_url


def _flags(parent: SpanContext | None) -> int:
    return _HAS_IS_REMOTE | _IS_REMOTE if parent is not None and parent.is_remote else _HAS_IS_REMOTE


def _fill_span(pb: Any, span: ReadableSpan) -> None:
    context = span.get_span_context()
    assert context is not None  # an SDK span always has one
    pb.trace_id = context.trace_id.to_bytes(16, "big")
    pb.span_id = context.span_id.to_bytes(8, "big")
    if context.trace_state:
        pb.trace_state = ",".join(f"{key}={value}" for key, value in context.trace_state.items())
    parent = span.parent
    if parent:
        pb.parent_span_id = parent.span_id.to_bytes(8, "big")
    pb.name = span.name
    pb.kind = _KINDS[span.kind]
    if span.start_time is not None:
        pb.start_time_unix_nano = span.start_time
    if span.end_time is not None:
        pb.end_time_unix_nano = span.end_time
    _fill_attributes(pb.attributes, span.attributes)
    for event in span.events:
        pb_event = pb.events.add()
        pb_event.name = event.name
        pb_event.time_unix_nano = event.timestamp
        _fill_attributes(pb_event.attributes, event.attributes)
        pb_event.dropped_attributes_count = event.dropped_attributes
    for link in span.links:
        pb_link = pb.links.add()
        pb_link.trace_id = link.context.trace_id.to_bytes(16, "big")
        pb_link.span_id = link.context.span_id.to_bytes(8, "big")
        _fill_attributes(pb_link.attributes, link.attributes)
        pb_link.dropped_attributes_count = link.dropped_attributes
        pb_link.flags = _flags(link.context)
    status = pb.status
    status.SetInParent()
    status.code = span.status.status_code.value
    if span.status.description is not None:
        status.message = span.status.description
    pb.dropped_attributes_count = span.dropped_attributes
    pb.dropped_events_count = span.dropped_events
    pb.dropped_links_count = span.dropped_links
    pb.flags = _flags(parent)


def _fill_log(pb: Any, readable: ReadableLogRecord) -> None:
    record = readable.log_record
    if record.timestamp is not None:
        pb.time_unix_nano = record.timestamp
    if record.observed_timestamp is not None:
        pb.observed_time_unix_nano = record.observed_timestamp
    if record.span_id:
        pb.span_id = record.span_id.to_bytes(8, "big")
    if record.trace_id:
        pb.trace_id = record.trace_id.to_bytes(16, "big")
    pb.flags = int(record.trace_flags)  # as the SDK: a record without flags fails
    _fill_value(pb.body, record.body)
    if record.severity_text is not None:
        pb.severity_text = record.severity_text
    _fill_attributes(pb.attributes, record.attributes)
    pb.dropped_attributes_count = readable.dropped_attributes
    severity = getattr(record.severity_number, "value", None)
    if severity is not None:
        pb.severity_number = severity
    if record.event_name is not None:
        pb.event_name = record.event_name


def _fill_attributes(container: Any, attributes: Mapping[str, Any] | None) -> None:
    """Add each attribute to ``container``; one that cannot be encoded is left out and logged, as the SDK does."""
    if not attributes:
        return
    for key, value in attributes.items():
        pb = container.add()
        pb.key = key
        try:
            _fill_value(pb.value, value)
        except Exception as error:
            del container[-1]
            _log.exception("Failed to encode key %s: %s", key, error)


def _fill_value(pb: AnyValue, value: Any) -> None:
    kind = type(value)  # the exact types first: they are nearly all values, and a cheaper test than isinstance
    if kind is str:
        pb.string_value = value
    elif kind is int:
        pb.int_value = value
    elif kind is float:
        pb.double_value = value
    elif kind is bool:
        pb.bool_value = value
    elif value is None:
        pb.SetInParent()
    elif isinstance(value, bool):  # the SDK's order for subclasses: bool before int, str before Sequence
        pb.bool_value = value
    elif isinstance(value, str):
        pb.string_value = value
    elif isinstance(value, int):
        pb.int_value = value
    elif isinstance(value, float):
        pb.double_value = value
    elif isinstance(value, bytes):
        pb.bytes_value = value
    elif isinstance(value, Sequence):
        array = pb.array_value
        array.SetInParent()
        for item in value:
            _fill_value(array.values.add(), item)
    elif isinstance(value, Mapping):
        kvlist = pb.kvlist_value
        kvlist.SetInParent()
        for key, item in value.items():
            entry = kvlist.values.add()
            entry.key = str(key)
            _fill_value(entry.value, item)
    else:
        raise TypeError(f"Invalid type {type(value)} of value {value}")
