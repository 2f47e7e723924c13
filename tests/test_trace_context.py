"""W3C Trace Context on the way in, as the current Level 2 text and the W3C test suite read it.

Each case sends raw header lines through an instrumented ASGI app, exactly as a server hands them over (repeated
lines included), and reads what the app would send on: the ``traceparent`` and ``tracestate`` it injects into an
outgoing request. Sections cited are those of https://www.w3.org/TR/trace-context-2/; "SDK" is the parser of
opentelemetry-api 1.45, which follows Level 1 where the cases say so.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI
from opentelemetry import propagate, trace
from opentelemetry.trace import format_trace_id
from opentelemetry.trace.span import TraceState

import otel_kit
from otel_kit import testing
from otel_kit._internal.selfmetrics import PROPAGATION_REJECTED, counts
from tests.asgi import request

TRACE_ID = "12345678901234567890123456789012"
PARENT = f"00-{TRACE_ID}-1234567890123456-01"


def _app() -> Any:
    app = FastAPI()

    @app.get("/onward")
    async def onward() -> dict[str, str]:
        outgoing: dict[str, str] = {}
        propagate.inject(outgoing)
        return outgoing

    return otel_kit.instrument_fastapi(app)


def _onward(headers: list[tuple[str, str]]) -> dict[str, str]:
    """The headers the app injects into an outgoing call while serving a request with ``headers``."""
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    _, _, body = request(_app(), raw, "/onward")
    found: dict[str, str] = json.loads(body)
    return found


def _tracestate(onward: dict[str, str]) -> dict[str, str]:
    value = onward.get("tracestate", "")
    return dict(member.split("=", 1) for member in value.split(",") if member)


def test_repeated_tracestate_lines_are_combined_in_order(tel: testing.Capture) -> None:
    """Section "tracestate Header Field Values": multiple tracestate fields MUST be combined (RFC 9110 5.3). The
    middleware kept only the last line (a dict carrier): ``baz=3``."""
    onward = _onward(
        [("traceparent", PARENT), ("tracestate", "foo=1"), ("tracestate", "bar=2"), ("tracestate", "baz=3")]
    )
    assert onward["tracestate"] == "foo=1,bar=2,baz=3"
    assert onward["traceparent"].split("-")[1] == TRACE_ID


def test_two_traceparent_lines_start_a_fresh_trace(tel: testing.Capture) -> None:
    """Combined, two traceparent lines are no valid traceparent: neither parent is picked (W3C test suite,
    test_traceparent_duplicated), and the header is counted as rejected."""
    onward = _onward(
        [
            ("traceparent", "00-12345678901234567890123456789011-1234567890123456-01"),
            ("traceparent", "00-12345678901234567890123456789012-1234567890123456-01"),
        ]
    )
    fresh = onward["traceparent"].split("-")[1]
    assert fresh not in ("12345678901234567890123456789011", "12345678901234567890123456789012")
    server = next(s for s in tel.spans() if s.kind is trace.SpanKind.SERVER)
    assert server.parent is None and format_trace_id(server.context.trace_id) == fresh
    assert counts().get(PROPAGATION_REJECTED, "traceparent") == 1


@pytest.mark.parametrize(
    "key",
    [
        "foo@",  # a key may end in "@"
        "foo@@bar",  # several at signs
        "foo@bar@baz",
        "t" * 242 + "@v",  # Level 1 capped a tenant at 241 characters
        "t@" + "v" * 15,  # and a system at 14
        "1vendor",  # a key may start with a digit
    ],
)
def test_keys_of_the_level_2_grammar_are_kept(tel: testing.Capture, key: str) -> None:
    """Section "Key": key = ( lcalpha / DIGIT ) 0*255 ( keychar ), keychar including "@". The SDK's Level 1 rule
    rejects each of these keys and, with it, the whole tracestate (``bar`` too)."""
    assert TraceState.from_header([f"{key}=1,bar=2"]) == TraceState()  # the SDK's reading
    onward = _onward([("traceparent", PARENT), ("tracestate", f"{key}=1,bar=2")])
    assert _tracestate(onward) == {key: "1", "bar": "2"}
    assert counts().get(PROPAGATION_REJECTED, "tracestate") == 0


def test_a_key_of_256_characters_is_kept(tel: testing.Capture) -> None:
    key = "z" * 256
    assert _tracestate(_onward([("traceparent", PARENT), ("tracestate", "foo=1"), ("tracestate", f"{key}=1")])) == {
        "foo": "1",
        key: "1",
    }


@pytest.mark.parametrize(
    "value",
    [
        "@foo=1,bar=2",  # a key must start with a letter or a digit
        "z" * 257 + "=1,bar=2",  # longer than 256
        "FOO=1,bar=2",  # upper case
        "foo.bar=1,bar=2",
        "foo =1,bar=2",  # a space before "="
        "foo=bar=baz,bar=2",  # "=" in a value
        "foo=,bar=2",  # an empty value
    ],
)
def test_a_malformed_member_discards_the_whole_tracestate_and_is_counted(tel: testing.Capture, value: str) -> None:
    """Section "Processing Model" step 3: a tracestate that cannot be parsed MAY be discarded whole, as the W3C test
    suite expects at its strict level; the trace itself continues."""
    onward = _onward([("traceparent", PARENT), ("tracestate", value)])
    assert onward["traceparent"].split("-")[1] == TRACE_ID
    assert "tracestate" not in onward
    assert counts().get(PROPAGATION_REJECTED, "tracestate") == 1


def test_thirty_two_members_are_kept_and_thirty_three_discarded(tel: testing.Capture) -> None:
    """Section "tracestate Header Field Values": at most 32 list members, counted over every line."""
    lines = [",".join(f"bar{i:02d}={i:02d}" for i in range(start, start + 10)) for start in (1, 11, 21)]
    kept = _onward(
        [("traceparent", PARENT), *[("tracestate", line) for line in lines], ("tracestate", "bar31=31,bar32=32")]
    )
    assert len(_tracestate(kept)) == 32 and _tracestate(kept)["bar01"] == "01"
    too_many = [*[("tracestate", line) for line in lines], ("tracestate", "bar31=31,bar32=32,bar33=33")]
    assert "tracestate" not in _onward([("traceparent", PARENT), *too_many])
    assert counts().get(PROPAGATION_REJECTED, "tracestate") == 1


def test_a_repeated_key_keeps_its_first_value_and_the_rest_of_the_list(tel: testing.Capture) -> None:
    """Section "Combined Header Value": a key should not repeat; the W3C test suite accepts keeping one of the
    values. The SDK drops the whole list, every other vendor's entry with it."""
    assert TraceState.from_header(["foo=1,bar=2,foo=3"]) == TraceState()  # the SDK's reading
    onward = _onward([("traceparent", PARENT), ("tracestate", "foo=1,bar=2"), ("tracestate", "foo=3")])
    assert onward["tracestate"] == "foo=1,bar=2"
    assert counts().get(PROPAGATION_REJECTED, "tracestate") == 1


def test_empty_members_and_optional_whitespace_are_accepted(tel: testing.Capture) -> None:
    """Section "tracestate Header Field Values": empty and whitespace-only members are allowed, spaces and tabs
    around a member are ignored, leading spaces of a value are kept."""
    onward = _onward(
        [
            ("traceparent", PARENT),
            ("tracestate", ""),
            ("tracestate", "\t foo=1 \t , \t ,bar= two\t"),
            ("tracestate", " "),
        ]
    )
    assert onward["tracestate"] == "foo=1,bar= two"
    assert counts().get(PROPAGATION_REJECTED, "tracestate") == 0


def test_tracestate_without_a_valid_traceparent_is_discarded(tel: testing.Capture) -> None:
    """Section "Processing Model": a tracestate received without a (valid) traceparent MUST be discarded."""
    assert "tracestate" not in _onward([("tracestate", "foo=1")])
    assert "tracestate" not in _onward([("traceparent", "00-zz-1234567890123456-01"), ("tracestate", "foo=1")])


def test_every_character_the_grammar_allows_is_kept() -> None:
    from otel_kit._internal.propagation import parse_tracestate

    key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/@a-z0-9_-*/"
    value = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in ",=")
    assert parse_tracestate(f"{key}={value}") == ([(key, value)], False)


def test_a_rejected_member_never_reaches_a_log_line(tel: testing.Capture) -> None:
    """The SDK's TraceState warns with the raw member ("Member doesn't match the w3c identifiers format foo =1");
    header content in any guarded SDK logger's message is replaced, the message kept."""
    secret = "tenant-secret-9f8e7d"
    TraceState.from_header([f"foo ={secret}"])  # the SDK's own parser, as other code may still call it
    TraceState([("k", f"{secret}\n")])
    _onward([("traceparent", PARENT), ("tracestate", f"foo ={secret}"), ("baggage", f"k={secret}\x07")])
    output = tel.stream.getvalue()
    assert secret not in output
    assert "Member doesn't match the w3c identifiers format [value not logged]" in output
    for record in tel.log_records():
        assert secret not in str(record.body) and secret not in json.dumps(dict(record.attributes or {}))


def test_lambda_reads_every_line_of_a_repeated_header(tel: testing.Capture, monkeypatch: pytest.MonkeyPatch) -> None:
    """API Gateway REST APIs and ALB targets pass repeated lines in ``multiValueHeaders`` (``headers`` keeps the
    last one only)."""
    monkeypatch.delenv("_X_AMZN_TRACE_ID", raising=False)
    seen: list[dict[str, str]] = []

    @otel_kit.lambda_handler
    def handler(event: Any, context: Any) -> None:
        outgoing: dict[str, str] = {}
        propagate.inject(outgoing)
        seen.append(outgoing)

    lambda_context = type("Ctx", (), {"aws_request_id": "r-1", "function_name": "f", "invoked_function_arn": "arn"})()
    handler(
        {
            "headers": {"traceparent": PARENT, "tracestate": "bar=2"},
            "multiValueHeaders": {"traceparent": [PARENT], "tracestate": ["foo=1", "bar=2"]},
        },
        lambda_context,
    )
    handler({"multiValueHeaders": {"traceparent": [PARENT, PARENT.replace("01", "02", 1)]}}, lambda_context)
    assert seen[0]["tracestate"] == "foo=1,bar=2" and seen[0]["traceparent"].split("-")[1] == TRACE_ID
    assert seen[1]["traceparent"].split("-")[1] != TRACE_ID
    assert counts().get(PROPAGATION_REJECTED, "traceparent") == 1


def test_amqp_headers_spelled_twice_or_as_arrays_are_joined(tel: testing.Capture) -> None:
    from otel_kit.integrations.amqp import HeaderGetter

    ctx = propagate.extract({"traceparent": PARENT, "tracestate": ["foo=1", b"bar=2"]}, getter=HeaderGetter())
    assert trace.get_current_span(ctx).get_span_context().trace_state.to_header() == "foo=1,bar=2"
    two = {"traceparent": PARENT, "TraceParent": PARENT.replace("01", "02", 1)}
    assert not trace.get_current_span(propagate.extract(two, getter=HeaderGetter())).get_span_context().is_valid


def test_outgoing_baggage_over_its_limits_is_not_an_incoming_rejection(tel: testing.Capture) -> None:
    """The SDK warns when the baggage a service sends exceeds the W3C limits; nothing came in, nothing is counted."""
    from opentelemetry import baggage, context

    ctx = context.get_current()
    for i in range(200):
        ctx = baggage.set_baggage(f"k{i}", "v", ctx)
    propagate.inject({}, context=ctx)
    assert "Baggage exceeded the maximum number of list-members" in tel.stream.getvalue()
    assert counts().items(PROPAGATION_REJECTED) == []


@pytest.mark.parametrize("level", ["DEBUG", "ERROR"])
def test_a_rejected_header_is_counted_once_whatever_the_sdk_loggers_level(tel: testing.Capture, level: str) -> None:
    """Rejections are found by what extraction kept: a logger at ERROR (no warning written) still counts, a logger
    at DEBUG (every record written) counts once."""
    import logging

    names = ("opentelemetry.baggage.propagation", "opentelemetry.trace.span")
    before = {name: logging.getLogger(name).level for name in names}
    try:
        for name in names:
            logging.getLogger(name).setLevel(level)
        _onward([("traceparent", PARENT), ("tracestate", "foo =1,b@d=2"), ("baggage", "ok=1,bad entry,\x07=x")])
    finally:
        for name, was in before.items():
            logging.getLogger(name).setLevel(was)
    assert dict(counts().items(PROPAGATION_REJECTED)) == {"tracestate": 1, "baggage": 1}
