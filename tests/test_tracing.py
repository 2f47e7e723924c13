"""Spans carry the correlation id of the context they start in, within the configured attribute limits."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Span, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.trace import SpanKind

import otel_kit
from otel_kit import testing
from otel_kit._internal.tracing import set_plain_attributes
from tests.asgi import call, ping_app


def test_each_span_carries_the_correlation_id_of_the_context_it_starts_in() -> None:
    """The span processor remembers the last parent context's id: every change of context must still show."""
    tracer = trace.get_tracer("t")
    with testing.capture("svc") as tel:
        with otel_kit.correlation_scope("a"):
            ctx_a = context.get_current()
            tracer.start_span("a1").end()
            with otel_kit.correlation_scope("b"):
                ctx_b = context.get_current()
                tracer.start_span("b1").end()
                tracer.start_span("a-explicit", context=ctx_a).end()
            tracer.start_span("a2").end()
            tracer.start_span("b-explicit", context=ctx_b).end()
            with tracer.start_as_current_span("a-parent"):
                tracer.start_span("a-child").end()
        tracer.start_span("none").end()
    ids = {s.name: (s.attributes or {}).get("correlation_id") for s in tel.spans()}
    assert ids == {"a1": "a", "b1": "b", "a-explicit": "a", "a2": "a", "b-explicit": "b", "a-parent": "a",
                   "a-child": "a", "none": None}  # fmt: skip


def test_correlation_id_set_by_a_spans_creator_is_kept_and_limits_still_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "8")
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "2")
    tracer = trace.get_tracer("t")
    with testing.capture("svc") as tel, otel_kit.correlation_scope("from-the-context"):
        with tracer.start_as_current_span("own", attributes={"correlation_id": "mine"}):
            pass
        with tracer.start_as_current_span("stamped"):
            pass
        with tracer.start_as_current_span("full", attributes={"a": 1, "b": 2}):
            pass
    spans = {s.name: s for s in tel.spans()}
    assert spans["own"].attributes["correlation_id"] == "mine"
    assert spans["stamped"].attributes["correlation_id"] == "from-the"  # cut like any attribute value
    assert dict(spans["full"].attributes) == {"b": 2, "correlation_id": "from-the"}
    assert spans["full"].dropped_attributes == 1


def test_an_init_after_shutdown_says_that_the_global_providers_stay_with_the_first() -> None:
    """OpenTelemetry lets a process set its global providers once: a second init() after shutdown() cannot take
    them over, and says so in one clear line instead of losing spans and metrics without a word."""
    quiet = {"traces_exporter": "none", "metrics_exporter": "none", "logs_exporter": "none"}
    otel_kit.init("first", **quiet, log_stream=io.StringIO())
    assert otel_kit.shutdown() is True
    stream = io.StringIO()
    otel_kit.init("second", **quiet, log_stream=stream)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    ours = [line["message"] for line in lines if line["logger"] == "otel_kit" and line["level"] == "WARNING"]
    assert len(ours) == 1, lines
    assert ours[0].startswith("OpenTelemetry's global tracer and meter providers were set before this init()")
    assert "restart the process" in ours[0]
    # and an init() that took the providers says nothing of the kind
    testing.reset()
    stream = io.StringIO()
    otel_kit.init("third", **quiet, log_stream=stream)
    assert "set before this init()" not in stream.getvalue()


def test_an_init_after_other_code_set_the_tracer_provider_names_that_one() -> None:
    """As under ``opentelemetry-instrument``, which sets its own tracer provider before the app calls init()."""
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())
    stream = io.StringIO()
    otel_kit.init("svc", traces_exporter="none", metrics_exporter="none", logs_exporter="none", log_stream=stream)
    ours = [json.loads(line)["message"] for line in stream.getvalue().splitlines()]
    assert [m for m in ours if "set before this init()" in m] == [
        "OpenTelemetry's global tracer provider was set before this init() (by an init() since shut down, or by "
        "other code such as opentelemetry-instrument) and a process can set each only once: what the OpenTelemetry "
        "API records goes there, not to this init()'s exporters; restart the process to change it (in tests: "
        "otel_kit.testing.reset())"
    ]


class _StartReader(SpanProcessor):
    """A processor that reads spans as they start, as a user's may (to route or tag by attribute)."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, Any]] = {}

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.seen[span.name] = dict(span.attributes or {})


_SERVER_ATTRIBUTES = {
    "http.request.method": "GET",
    "url.path": "/ping",
    "url.scheme": "http",
    "network.protocol.version": "1.1",
    "client.address": "127.0.0.1",
    "user_agent.original": "probe/1.0",
}


def test_server_spans_carry_every_attribute_and_processors_reading_starts_still_see_them() -> None:
    """The server middleware puts its attributes straight into the span when only the SDK's batch and simple
    processors follow the toolkit's (they read spans at their end); a processor reading starts gets them there."""
    headers = [(b"user-agent", b"probe/1.0"), (b"x-correlation-id", b"cid-1")]
    with testing.capture("svc") as tel:
        call(ping_app(), headers)
    (server,) = [s for s in tel.spans() if s.kind is SpanKind.SERVER]
    assert dict(server.attributes or {}) == {
        **_SERVER_ATTRIBUTES,
        "correlation_id": "cid-1",
        "http.route": "/ping",
        "http.response.status_code": 200,
    }
    assert server.dropped_attributes == 0

    reader = _StartReader()
    testing.reset()
    otel_kit.init(
        "svc", traces_exporter="none", metrics_exporter="none", logs_exporter="none", span_processors=[reader]
    )
    try:
        call(ping_app(), headers)
    finally:
        testing.reset()
    assert reader.seen["GET"] == {**_SERVER_ATTRIBUTES, "correlation_id": "cid-1"}


def _limited_span(count: int | None, length: int | None) -> Span:
    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=count, max_attribute_length=length))
    span = provider.get_tracer("t").start_span("s", attributes={"first": 1})
    assert isinstance(span, Span)
    return span


@pytest.mark.parametrize(("count", "length"), [(None, None), (3, None), (None, 4), (2, 4)])
def test_plain_attributes_set_directly_end_as_the_sdk_would_set_them(count: int | None, length: int | None) -> None:
    given = {"method": "GET", "path": "/orders/42", "status": 200, "ok": True, "share": 0.5}
    direct, through_sdk = _limited_span(count, length), _limited_span(count, length)
    set_plain_attributes(direct, given)
    through_sdk.set_attributes(given)
    assert dict(direct.attributes or {}) == dict(through_sdk.attributes or {})
    assert direct.dropped_attributes == through_sdk.dropped_attributes
    direct.end()
    set_plain_attributes(direct, {"late": "x"})  # an ended span takes no more, as with the SDK's set_attributes
    assert "late" not in (direct.attributes or {})
