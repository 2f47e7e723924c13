"""The Lambda handler decorator: X-Ray parent, cold start, request id, correlation id, flush before return."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_trace_id

import otel_kit
from otel_kit import testing
from otel_kit.integrations import aws_lambda

XRAY_ENV = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a87bd80c:0"


def _context(request_id: str) -> SimpleNamespace:
    return SimpleNamespace(
        aws_request_id=request_id,
        function_name="receipts",
        invoked_function_arn="arn:aws:lambda:eu-west-1:123456789012:function:receipts",
    )


@pytest.fixture
def batched(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """otel_kit with a batch processor that would hold spans for 10 minutes unless flushed."""
    monkeypatch.setattr(aws_lambda, "_cold_start", True)
    exporter = InMemorySpanExporter()
    testing.reset()
    otel_kit.init(
        "receipts",
        span_processors=[BatchSpanProcessor(exporter, schedule_delay_millis=600_000)],
        traces_exporter="none",
        metrics_exporter="none",
        logs_exporter="none",
        log_stdout=False,
    )
    yield exporter
    testing.reset()


def test_invocations_continue_the_xray_trace_and_flush_before_returning(
    monkeypatch: pytest.MonkeyPatch, batched: InMemorySpanExporter
) -> None:
    monkeypatch.setenv("_X_AMZN_TRACE_ID", XRAY_ENV)

    @otel_kit.lambda_handler
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"ok": True, "correlation_id": otel_kit.get_correlation_id()}

    first = handler({"detail": {}}, _context("req-1"))
    assert len(batched.get_finished_spans()) == 1  # exported before the handler returned
    second = handler({"detail": {}}, _context("req-2"))
    spans = batched.get_finished_spans()
    assert [s.attributes["faas.coldstart"] for s in spans] == [True, False]
    assert [s.attributes["faas.invocation_id"] for s in spans] == ["req-1", "req-2"]
    for span in spans:
        assert format_trace_id(span.context.trace_id) == "5759e988bd862e3fe1be46a994272793"
        assert span.parent is not None and span.parent.span_id == 0x53995C3F42CD8AD8
        assert span.attributes["cloud.resource_id"].endswith(":function:receipts")
    assert first["correlation_id"] and second["correlation_id"]
    assert first["correlation_id"] != second["correlation_id"]


def test_api_gateway_event_headers_give_parent_and_correlation_id_echoed(batched: InMemorySpanExporter) -> None:
    @otel_kit.lambda_handler
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"statusCode": 200, "body": "{}"}

    event = {
        "headers": {
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "X-Correlation-ID": "gw-77",
        }
    }
    response = handler(event, _context("req-3"))
    assert response["headers"]["X-Correlation-ID"] == "gw-77"
    span = batched.get_finished_spans()[0]
    assert format_trace_id(span.context.trace_id) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span.attributes["faas.trigger"] == "http"
    assert span.attributes["correlation_id"] == "gw-77"


def test_handler_error_is_recorded_flushed_and_reraised(batched: InMemorySpanExporter) -> None:
    @otel_kit.lambda_handler
    def handler(event: dict[str, Any], context: Any) -> None:
        raise TimeoutError("downstream timed out")

    with pytest.raises(TimeoutError):
        handler({}, _context("req-4"))
    span = batched.get_finished_spans()[0]
    assert span.status.status_code.name == "ERROR"
    assert span.events[0].attributes["exception.type"] == "TimeoutError"


def test_sqs_record_gives_parent_and_correlation_id_over_the_runtime_trace(
    monkeypatch: pytest.MonkeyPatch, batched: InMemorySpanExporter
) -> None:
    """An SQS-triggered function continues the trace of the message it handles, not the runtime's own."""
    monkeypatch.setenv("_X_AMZN_TRACE_ID", XRAY_ENV)

    @otel_kit.lambda_handler
    def handler(event: dict[str, Any], context: Any) -> str | None:
        return otel_kit.get_correlation_id()

    event = {
        "Records": [
            {
                "eventSource": "aws:sqs",
                "body": "{}",
                "attributes": {
                    "AWSTraceHeader": "Root=1-6b035d65-65c02f8876a1b9639e5e181e;Parent=57c8782d37e9bd3d;Sampled=1"
                },
                "messageAttributes": {"X-Correlation-ID": {"stringValue": "order-42", "dataType": "String"}},
            }
        ]
    }
    assert handler(event, _context("req-4")) == "order-42"
    span = batched.get_finished_spans()[0]
    assert format_trace_id(span.context.trace_id) == "6b035d6565c02f8876a1b9639e5e181e"
    assert span.parent is not None and span.parent.span_id == 0x57C8782D37E9BD3D
    assert span.attributes["faas.trigger"] == "pubsub"


def _record(message_id: str, carrier: dict[str, Any], body: str = "{}") -> dict[str, Any]:
    return {
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:receipts",
        "messageId": message_id,
        "body": body,
        **carrier,
    }


def test_each_record_of_an_sqs_batch_is_its_own_request(monkeypatch: pytest.MonkeyPatch, tel: testing.Capture) -> None:
    """Three records from three traces (message attributes, AWSTraceHeader, an SNS notification in the body), each
    with its own correlation id; the handler reports the second as failed and logs for each."""
    monkeypatch.setenv("_X_AMZN_TRACE_ID", XRAY_ENV)
    traces = [
        "6b035d6565c02f8876a1b9639e5e1811",
        "6b035d6565c02f8876a1b9639e5e1822",
        "6b035d6565c02f8876a1b9639e5e1833",
    ]
    parents = ["1111111111111111", "2222222222222222", "3333333333333333"]
    attrs = lambda name, value: {name: {"stringValue": value, "dataType": "String"}}  # noqa: E731
    sns_body = json.dumps(
        {
            "Type": "Notification",
            "Message": "{}",
            "MessageAttributes": {
                "traceparent": {"Type": "String", "Value": f"00-{traces[2]}-{parents[2]}-01"},
                "X-Correlation-ID": {"Type": "String", "Value": "c-3"},
            },
        }
    )
    event = {
        "Records": [
            _record(
                "m1",
                {
                    "messageAttributes": {
                        **attrs("traceparent", f"00-{traces[0]}-{parents[0]}-01"),
                        **attrs("X-Correlation-ID", "c-1"),
                    }
                },
            ),
            _record(
                "m2",
                {
                    "attributes": {
                        "AWSTraceHeader": f"Root=1-{traces[1][:8]}-{traces[1][8:]};Parent={parents[1]};Sampled=1"
                    },
                    "messageAttributes": attrs("X-Correlation-ID", "c-2"),
                },
            ),
            _record("m3", {}, body=sns_body),
        ]
    }
    handler_log = logging.getLogger("receipts")
    seen: list[tuple[str | None, str]] = []

    @otel_kit.lambda_handler
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        failures = []
        for record in event["Records"]:
            seen.append(
                (otel_kit.get_correlation_id(), format_trace_id(trace.get_current_span().get_span_context().trace_id))
            )
            handler_log.warning("processing %s", record["messageId"])
            if record["messageId"] == "m2":
                failures.append({"itemIdentifier": "m2"})
        return {"batchItemFailures": failures}

    assert handler(event, _context("req-9")) == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    assert seen == [("c-1", traces[0]), ("c-2", traces[1]), ("c-3", traces[2])]
    spans = tel.spans()
    invocation = next(s for s in spans if s.kind is trace.SpanKind.SERVER)
    assert format_trace_id(invocation.context.trace_id) == "5759e988bd862e3fe1be46a994272793"  # the runtime's
    records = sorted(
        (s for s in spans if s.kind is trace.SpanKind.CONSUMER), key=lambda s: s.attributes["messaging.message.id"]
    )
    assert [s.name for s in records] == ["process receipts"] * 3
    for span, trace_hex, parent, cid in zip(records, traces, parents, ["c-1", "c-2", "c-3"], strict=True):
        assert format_trace_id(span.context.trace_id) == trace_hex
        assert span.parent is not None and f"{span.parent.span_id:016x}" == parent
        assert [link.context.span_id for link in span.links] == [invocation.context.span_id]
        assert span.attributes["correlation_id"] == cid
        assert span.end_time is not None and span.end_time <= invocation.end_time
    assert [s.status.status_code.name for s in records] == ["UNSET", "ERROR", "UNSET"]
    assert records[1].status.description == "reported in batchItemFailures"
    lines = [line for line in tel.log_lines() if line["logger"] == "receipts"]
    assert [(line["correlation_id"], line["trace_id"]) for line in lines] == list(
        zip(["c-1", "c-2", "c-3"], traces, strict=True)
    )
    assert {line["request_id"] for line in lines} == {"req-9"}


def test_a_handler_that_raises_on_a_record_fails_that_records_span(tel: testing.Capture) -> None:
    @otel_kit.lambda_handler
    def handler(event: dict[str, Any], context: Any) -> None:
        for record in event["Records"]:
            if record["messageId"] == "m2":
                raise ValueError("bad order")

    event = {"Records": [_record("m1", {}), _record("m2", {}), _record("m3", {})]}
    with pytest.raises(ValueError, match="bad order"):
        handler(event, _context("req-10"))
    consumer = [s for s in tel.spans() if s.kind is trace.SpanKind.CONSUMER]
    records = {s.attributes["messaging.message.id"]: s for s in consumer}
    assert sorted(records) == ["m1", "m2"]  # m3 was never reached
    assert records["m1"].status.status_code.name == "UNSET"
    assert records["m2"].status.description == "ValueError: bad order"
    assert records["m2"].events[0].attributes["exception.type"] == "ValueError"
