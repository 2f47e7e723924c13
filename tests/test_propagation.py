"""Incoming context headers: valid ones are continued, malformed or hostile ones start fresh and are counted.

The server tests drive the instrumented ASGI app directly with raw header bytes, exactly as a server hands them
over, so no HTTP client can tidy the hostile values first.
"""

from __future__ import annotations

import os
import re
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import propagate, trace
from opentelemetry.trace import format_trace_id

import otel_kit
from otel_kit import testing
from otel_kit._internal.correlation import valid_correlation_id
from otel_kit._internal.selfmetrics import PROPAGATION_REJECTED, counts
from tests.asgi import call as _call
from tests.asgi import ping_app as _app

VALID_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_valid_traceparent_and_correlation_id_are_continued(tel: testing.Capture) -> None:
    status, headers = _call(
        _app(),
        [(b"traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01".encode()), (b"x-correlation-id", b"abc-123")],
    )
    assert status == 200
    assert headers[b"x-correlation-id"] == b"abc-123"
    server = next(s for s in tel.spans() if s.kind is trace.SpanKind.SERVER)
    assert format_trace_id(server.context.trace_id) == TRACE_ID
    assert server.attributes["correlation_id"] == "abc-123"


def test_valid_xray_header_is_continued_when_no_traceparent(tel: testing.Capture) -> None:
    header = b"Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    _call(_app(), [(b"x-amzn-trace-id", header)])
    server = next(s for s in tel.spans() if s.kind is trace.SpanKind.SERVER)
    assert format_trace_id(server.context.trace_id) == "5759e988bd862e3fe1be46a994272793"
    assert server.parent is not None and server.parent.span_id == 0x53995C3F42CD8AD8


def test_traceparent_wins_over_xray_when_both_are_valid(tel: testing.Capture) -> None:
    _call(
        _app(),
        [
            (b"x-amzn-trace-id", b"Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"),
            (b"traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01".encode()),
        ],
    )
    server = next(s for s in tel.spans() if s.kind is trace.SpanKind.SERVER)
    assert format_trace_id(server.context.trace_id) == TRACE_ID


def test_both_trace_headers_with_the_same_parent_are_not_counted_as_rejected(tel: testing.Capture) -> None:
    """What otel_kit itself sends between services: X-Amzn-Trace-Id and traceparent naming the same parent."""
    status, _ = _call(
        _app(),
        [
            (b"x-amzn-trace-id", b"Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1"),
            (b"traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01".encode()),
        ],
    )
    assert status == 200
    server = next(s for s in tel.spans() if s.kind is trace.SpanKind.SERVER)
    assert format_trace_id(server.context.trace_id) == TRACE_ID
    assert counts().get(PROPAGATION_REJECTED, "traceparent") == 0


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (b"traceparent", b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        (b"traceparent", b"garbage"),
        (b"traceparent", b"00-" + b"a" * 5000),
        (b"x-amzn-trace-id", b"Root=1-zzzz;Parent=nothex;Sampled=7"),
    ],
)
def test_malformed_trace_header_starts_a_fresh_trace_and_is_counted(
    tel: testing.Capture, header: bytes, value: bytes
) -> None:
    status, _ = _call(_app(), [(header, value)])
    assert status == 200
    server = next(s for s in tel.spans() if s.kind is trace.SpanKind.SERVER)
    assert server.parent is None
    assert server.context.trace_id != 0
    assert counts().get(PROPAGATION_REJECTED, header.decode()) >= 1
    assert tel.metrics()["otel_kit.propagation.rejected"].data.data_points  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "value",
    [
        b'evil\r\n{"level":"INFO","message":"forged"}',
        b"x" * 129,
        b"<script>alert(1)</script>",
        b"id with spaces",
        "caf\u00e9".encode("latin-1"),
        b"",
    ],
)
def test_hostile_correlation_id_is_replaced_and_never_logged(tel: testing.Capture, value: bytes) -> None:
    status, headers = _call(_app(), [(b"x-correlation-id", value)])
    assert status == 200
    echoed = headers[b"x-correlation-id"].decode()
    assert VALID_ID.fullmatch(echoed) and echoed != value.decode("latin-1")
    lines = [line for line in tel.log_lines() if line["logger"] == "app"]
    assert [line["correlation_id"] for line in lines] == [echoed]
    if value:
        assert value.decode("latin-1") not in tel.stream.getvalue()


def test_hostile_baggage_is_dropped_without_echoing_it(tel: testing.Capture) -> None:
    secret_looking = "correlation_id=ok-1,evil=%0A%0Dforged\x07,k" + "v" * 9000
    carrier = {"baggage": secret_looking}
    ctx = propagate.extract(carrier)
    assert otel_kit.get_correlation_id(ctx) is not None
    assert "forged" not in tel.stream.getvalue()
    assert "v" * 100 not in tel.stream.getvalue()


def test_extract_never_raises_on_a_hostile_carrier(tel: testing.Capture) -> None:
    class Exploding(dict[str, str]):
        def get(self, key: str, default: Any = None) -> Any:
            raise RuntimeError("carrier blew up")

    ctx = propagate.extract(Exploding())
    assert valid_correlation_id(otel_kit.get_correlation_id(ctx))


def test_outgoing_headers_carry_all_four_kinds_of_context(tel: testing.Capture) -> None:
    carrier: dict[str, str] = {}
    with otel_kit.correlation_scope("c-out"), trace.get_tracer("t").start_as_current_span("op") as span:
        propagate.inject(carrier)
    trace_id = format_trace_id(span.get_span_context().trace_id)
    assert carrier["traceparent"].split("-")[1] == trace_id
    assert carrier["X-Amzn-Trace-Id"].startswith(f"Root=1-{trace_id[:8]}-{trace_id[8:]};")
    assert "correlation_id=c-out" in carrier["baggage"]
    assert carrier["X-Correlation-ID"] == "c-out"


_header_text = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=300),
    st.from_regex(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,40}", fullmatch=True),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    traceparent=_header_text,
    baggage=_header_text,
    xray=_header_text,
    correlation=_header_text,
)
def test_any_header_values_give_a_valid_trace_and_correlation_id(
    traceparent: str, baggage: str, xray: str, correlation: str
) -> None:
    with testing.capture("prop") as tel:
        headers = [
            (b"traceparent", traceparent.encode("latin-1")),
            (b"baggage", baggage.encode("latin-1")),
            (b"x-amzn-trace-id", xray.encode("latin-1")),
            (b"x-correlation-id", correlation.encode("latin-1")),
        ]
        status, response_headers = _call(_app(), headers)
        assert status == 200
        echoed = response_headers[b"x-correlation-id"].decode()
        assert VALID_ID.fullmatch(echoed)
        if valid_correlation_id(correlation):
            assert echoed == correlation
        line = next(line for line in tel.log_lines() if line["logger"] == "app")
        assert line["correlation_id"] == echoed
        server = next((s for s in tel.spans() if s.kind is trace.SpanKind.SERVER), None)
        if server is None:  # a valid parent that was not sampled: the trace continues unrecorded
            assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-00", traceparent)
            assert line["trace_id"] == traceparent.split("-")[1]
        else:
            assert server.context.trace_id != 0
            assert server.attributes["correlation_id"] == echoed
            assert line["trace_id"] == format_trace_id(server.context.trace_id)
        output = tel.stream.getvalue()
        for raw in (traceparent, baggage, xray, correlation):
            if len(raw) > 12 and not valid_correlation_id(raw) and raw not in (echoed,):
                assert raw not in output


def test_fresh_correlation_ids_are_uuid4s_and_forked_workers_do_not_repeat_them() -> None:
    ids = {otel_kit.new_correlation_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(uuid.UUID(cid).version == 4 and str(uuid.UUID(cid)) == cid for cid in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id, then out without running the parent's cleanup
        os.write(write, otel_kit.new_correlation_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    assert valid_correlation_id(child) and child != otel_kit.new_correlation_id()
