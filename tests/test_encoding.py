"""The gRPC exporters' encoders give the SDK's OTLP messages exactly, for spans and log records of every shape."""

from __future__ import annotations

import logging
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs as sdk_encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from otel_kit._internal.encoding import encode_logs, encode_spans

VALUES = {"str": "v", "empty": "", "int": -7, "big": 2**62, "float": 0.25, "bool": True, "bytes": b"\x00\xff",
          "strs": ("a", "b"), "ints": (1, 2), "floats": (1.5,), "bools": (False,), "no_items": ()}  # fmt: skip


def _same(ours: Any, theirs: Any) -> None:
    assert ours == theirs
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)


def _provider(resource: Resource, limits: SpanLimits | None = None) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=resource, span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_spans_of_every_shape_encode_as_the_sdk_encodes_them() -> None:
    shop = Resource.create({"service.name": "shop", "deployment.environment": "test"})
    first, first_spans = _provider(shop, SpanLimits(max_span_attributes=4, max_events=1, max_links=1))
    second, second_spans = _provider(Resource({"service.name": "other"}, schema_url="https://opentelemetry.io/s/1"))
    plain = first.get_tracer("plain")
    versioned = first.get_tracer("versioned", "1.2.3", schema_url="https://x/1", attributes={"scope.attr": 1})
    remote = SpanContext(0x5759E988BD862E3FE1BE46A994272793, 0x53995C3F42CD8AD8, is_remote=True,
                         trace_flags=TraceFlags(1), trace_state=TraceState([("vendor", "v1"), ("x", "y")]))  # fmt: skip
    with plain.start_as_current_span("root", kind=SpanKind.SERVER, attributes=VALUES) as root:
        root.add_event("first", {"e": 1})
        root.add_event("dropped over the limit")
        with versioned.start_as_current_span("child", kind=SpanKind.CLIENT) as child:
            child.set_status(Status(StatusCode.ERROR, "payment declined"))
    with plain.start_span(
        "consumer",
        context=trace.set_span_in_context(NonRecordingSpan(remote)),
        kind=SpanKind.CONSUMER,
        links=[Link(remote, {"link.attr": "l"}), Link(root.get_span_context())],
    ) as consumer:
        consumer.set_status(StatusCode.OK)
    for kind in (SpanKind.PRODUCER, SpanKind.INTERNAL):
        second.get_tracer("second").start_span(f"kind {kind.name}", kind=kind).end()
    spans = list(first_spans.get_finished_spans()) + list(second_spans.get_finished_spans())
    spans = spans[:2] + spans[3:] + spans[2:3]  # resources and scopes interleaved: groups keep first-use order
    request = encode_spans(spans)
    _same(request, sdk_encode_spans(spans))
    assert len(request.resource_spans) == 2 and len(request.resource_spans[0].scope_spans) == 2
    assert sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans) == 5
    encoded = {span.name: span for r in request.resource_spans for s in r.scope_spans for span in s.spans}
    assert encoded["root"].dropped_attributes_count == len(VALUES) - 4
    assert encoded["root"].dropped_events_count == 1
    assert encoded["consumer"].trace_state == "vendor=v1,x=y"


def test_log_records_of_every_shape_encode_as_the_sdk_encodes_them() -> None:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("app", "1.0")
    other = provider.get_logger("other")
    with trace.get_tracer("t", tracer_provider=_provider(Resource({}))[0]).start_as_current_span("s"):
        logger.emit(body="in a span", severity_number=SeverityNumber.INFO, severity_text="INFO", attributes=VALUES)
    logger.emit(body={"event": "dict body", "n": 1, "nested": {"list": [1, "a"]}}, event_name="shop.order")
    other.emit(body=["list", "body"], severity_number=SeverityNumber.ERROR)
    logger.emit(body=None)
    logger.emit(body=b"bytes")
    batch = list(exporter.get_finished_logs())
    _same(encode_logs(batch), sdk_encode_logs(batch))


def test_an_attribute_that_cannot_be_encoded_is_left_out_and_logged_like_the_sdk_does(caplog: Any) -> None:
    context = SpanContext(1, 2, is_remote=False)
    span = ReadableSpan("odd", context, attributes={"good": 1, "bad": ("ok", object()), "also_good": "x"})
    with caplog.at_level(logging.ERROR):
        ours = encode_spans([span])
    _same(ours, sdk_encode_spans([span]))
    assert [kv.key for kv in ours.resource_spans[0].scope_spans[0].spans[0].attributes] == ["good", "also_good"]
    assert "Failed to encode key bad" in caplog.text


_scalars = st.one_of(st.text(max_size=20), st.integers(-(2**63), 2**63 - 1), st.booleans(), st.floats(allow_nan=False))
_attributes = st.dictionaries(
    st.text(min_size=1, max_size=10),
    st.one_of(
        _scalars,
        st.lists(st.text(max_size=5), max_size=3).map(tuple),
        st.lists(st.integers(-100, 100), max_size=3).map(tuple),
    ),
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(attributes=_attributes, event_attributes=_attributes, name=st.text(max_size=30))
def test_any_attributes_encode_as_the_sdk_encodes_them(
    attributes: dict[str, Any], event_attributes: dict[str, Any], name: str
) -> None:
    provider, exporter = _provider(Resource({"service.name": "h"}))
    with provider.get_tracer("h").start_as_current_span(name, attributes=attributes) as span:
        span.add_event(name, event_attributes)
    spans = exporter.get_finished_spans()
    _same(encode_spans(spans), sdk_encode_spans(spans))
