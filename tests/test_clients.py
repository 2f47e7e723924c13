"""Outgoing calls: requests and boto3 carry the trace and the correlation id, and are traced and measured."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import requests
from flask import Flask, request
from opentelemetry.trace import SpanKind, format_trace_id

import otel_kit
from demo_services.stack.servers import MotoServer, serve_wsgi
from otel_kit import testing
from otel_kit._internal.metrics import HTTP_DURATION_BUCKETS

pytestmark = pytest.mark.e2e


@pytest.fixture
def echo_headers() -> Iterator[tuple[str, dict[str, Any]]]:
    """A plain (uninstrumented) WSGI server that records the headers of the last request."""
    seen: dict[str, Any] = {}
    app = Flask("echo")

    @app.get("/")
    def index() -> str:
        seen.update({k.lower(): v for k, v in request.headers.items()})
        return "ok"

    with serve_wsgi(app) as url:
        yield url, seen


def test_requests_client_sends_all_context_headers_and_records_duration(
    tel: testing.Capture, echo_headers: tuple[str, dict[str, Any]]
) -> None:
    url, seen = echo_headers
    with otel_kit.correlation_scope("cli-5"):
        assert requests.get(url, timeout=5).status_code == 200
    client = next(s for s in tel.spans() if s.kind is SpanKind.CLIENT)
    trace_id = format_trace_id(client.context.trace_id)
    assert seen["traceparent"].split("-")[1] == trace_id
    assert seen["x-amzn-trace-id"].startswith(f"Root=1-{trace_id[:8]}-{trace_id[8:]};")
    assert seen["x-correlation-id"] == "cli-5"
    assert "correlation_id=cli-5" in seen["baggage"]
    assert client.attributes["correlation_id"] == "cli-5"
    duration = tel.metrics()["http.client.request.duration"]
    point = next(iter(duration.data.data_points))
    assert tuple(point.explicit_bounds) == HTTP_DURATION_BUCKETS  # type: ignore[attr-defined]
    assert point.attributes["http.request.method"] == "GET"


def test_boto3_calls_are_client_spans_in_the_current_trace(tel: testing.Capture) -> None:
    with MotoServer() as aws:
        sqs = boto3.client(
            "sqs",
            endpoint_url=aws.endpoint_url,
            region_name="eu-west-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        with otel_kit.correlation_scope("aws-1"):

            @otel_kit.traced
            def enqueue() -> None:
                queue_url = sqs.create_queue(QueueName="receipts")["QueueUrl"]
                sqs.send_message(QueueUrl=queue_url, MessageBody="{}")

            enqueue()
    aws_spans = [s for s in tel.spans() if s.attributes.get("rpc.system") == "aws-api"]
    assert [s.attributes["rpc.method"] for s in aws_spans] == ["CreateQueue", "SendMessage"]
    parent = next(s for s in tel.spans() if s.name == "enqueue")
    for span in aws_spans:
        assert span.kind is SpanKind.CLIENT
        assert span.context.trace_id == parent.context.trace_id
        assert span.attributes["correlation_id"] == "aws-1"
        assert "testing" not in str(dict(span.attributes))  # no credentials in span attributes


_LAZY = """
import json, sys, threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import otel_kit
from otel_kit import testing

CLIENTS = ("requests", "httpx", "botocore", "pika", "aio_pika", "psycopg")

class Ok(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.server.traceparent = self.headers.get("traceparent")

    def log_message(self, *args):
        pass

server = HTTPServer(("127.0.0.1", 0), Ok)
threading.Thread(target=server.serve_forever, daemon=True).start()
with testing.capture("lazy") as tel:
    theirs = [*CLIENTS, *(f"opentelemetry.instrumentation.{c}" for c in CLIENTS)]
    before = sorted(m for m in sys.modules if m in theirs or m.startswith(tuple(f"{t}." for t in theirs)))
    import requests  # after init(): armed on import

    requests.get(f"http://127.0.0.1:{server.server_port}/", timeout=10)
    spans = [s.name for s in tel.spans() if s.kind.name == "CLIENT"]
print(json.dumps({"before": before, "client_spans": spans, "traceparent": server.traceparent}))
"""


def test_a_client_library_is_instrumented_when_imported_after_init_and_not_imported_by_it() -> None:
    """init() arms the client instrumentations without importing a library the application has not imported (each
    one costs a cold start its import); the library imported later is instrumented the moment it is."""
    import json
    import subprocess
    import sys

    ran = subprocess.run([sys.executable, "-c", _LAZY], capture_output=True, text=True, timeout=60, check=True)
    found = json.loads(ran.stdout.strip().splitlines()[-1])
    assert found["before"] == []
    assert found["client_spans"] == ["GET"]
    assert found["traceparent"]
