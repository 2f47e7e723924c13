"""The demo's Lambda function: its SAM template passes cfn-lint, and each trigger it is deployed with works."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from otel_kit import testing

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "demo_services" / "sam" / "template.yaml"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def test_the_sam_template_passes_cfn_lint() -> None:
    result = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), str(TEMPLATE)], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_template_deploys_the_handler_that_exists() -> None:
    text = TEMPLATE.read_text()
    assert "Handler: demo_services.shop.receipts.handler" in text
    from demo_services.shop.receipts import handler

    assert callable(handler)


@pytest.fixture
def tel() -> Iterator[testing.Capture]:
    with testing.capture("receipts") as captured:
        yield captured


def _context() -> SimpleNamespace:
    return SimpleNamespace(aws_request_id="req-7", function_name="receipts",
                           invoked_function_arn="arn:aws:lambda:eu-west-1:123456789012:function:receipts")  # fmt: skip


def test_an_sqs_batch_writes_receipts_and_reports_the_bad_record(tel: testing.Capture) -> None:
    from demo_services.shop.receipts import handler

    good = {"eventSource": "aws:sqs", "messageId": "m1", "body": json.dumps({"order_id": "o-1"}),
            "messageAttributes": {"traceparent": {"stringValue": PARENT, "dataType": "String"}}}  # fmt: skip
    bad = {"eventSource": "aws:sqs", "messageId": "m2", "body": "{not json"}
    result = handler({"Records": [good, bad]}, _context())
    assert result == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    written = [line for line in tel.log_lines() if line["message"] == "receipt written"]
    assert [(line["order_id"], line["request_id"], line["trace_id"]) for line in written] == [("o-1", "req-7", TRACE)]


def test_an_eventbridge_event_and_an_http_request(tel: testing.Capture) -> None:
    from demo_services.shop.receipts import handler

    event = {"detail-type": "order.confirmed", "source": "shop.orders",
             "detail": {"order_id": "o-2", "traceparent": PARENT, "correlation_id": "c-2"}}  # fmt: skip
    assert handler(event, _context()) == {"receipt": "receipt-o-2"}
    http = {"requestContext": {"http": {"method": "GET"}}, "pathParameters": {"order_id": "o-3"},
            "headers": {"traceparent": PARENT, "x-correlation-id": "c-3"}}  # fmt: skip
    response = handler(http, _context())
    assert response["statusCode"] == 200 and response["headers"]["X-Correlation-ID"] == "c-3"
    [line] = [line for line in tel.log_lines() if line["message"] == "receipt written"]
    assert line["correlation_id"] == "c-2" and line["trace_id"] == TRACE
