"""The collector's aws overlay, through the real collector into AWS APIs served by ``moto`` in server mode.

A service instrumented with otel_kit answers HTTP requests, logs and traces; the collector sends its traces to X-Ray,
its log records to CloudWatch Logs (as the JSON lines the service writes to stdout) and its metrics as EMF documents
to CloudWatch Logs. moto stores the EMF documents as log events but does not extract metrics from them, so the test
reads the raw documents, as CloudWatch would, and checks what CloudWatch would make of them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from opentelemetry import trace

import otel_kit
from demo_services.stack.servers import Collector, MotoServer, wait_until
from otel_kit import testing
from otel_kit.cloudwatch import SPAN_CALLS, load_queries, query_fields, service_alarms
from tests.asgi import request
from tests.test_cloudwatch import DEMO_FIELDS, ROOT

pytestmark = pytest.mark.e2e

AWS = {"AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
NAMESPACE = "shop-test"
log = logging.getLogger("app")


def _client(service: str, moto: MotoServer) -> Any:
    return boto3.client(
        service,
        endpoint_url=moto.endpoint_url,
        region_name=AWS["AWS_REGION"],
        aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"],
    )


def _app() -> Any:
    app = FastAPI()

    @app.get("/orders/{order_id}")
    async def get_order(order_id: int) -> Any:
        log.info("order looked up", extra={"order_id": order_id})
        if order_id == 13:
            log.warning("order is unlucky", extra={"order_id": order_id})
            return JSONResponse({"error": "unlucky"}, status_code=503)
        return {"order_id": order_id}

    @app.get("/crash")
    async def crash() -> None:
        raise RuntimeError("ledger down")

    return otel_kit.instrument_fastapi(app)


@pytest.fixture(scope="module")
def shipped() -> Iterator[dict[str, Any]]:
    """Ten requests (two routes, 200 and 503 answers, one crash) through the aws overlay into moto."""
    with MotoServer() as moto:
        env = {**AWS, "AWS_XRAY_ENDPOINT": moto.endpoint_url, "AWS_LOGS_ENDPOINT": moto.endpoint_url}
        env["CW_NAMESPACE"] = NAMESPACE
        with Collector(["aws.yaml"], env) as collector:
            mp = pytest.MonkeyPatch()
            mp.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
            try:
                with testing.capture(
                    "orders", traces_exporter="otlp", metrics_exporter="otlp", logs_exporter="otlp"
                ) as tel:
                    app = _app()
                    for n in range(8):
                        with otel_kit.correlation_scope(f"corr-{n}"):
                            assert request(app, [(b"x-correlation-id", f"corr-{n}".encode())], f"/orders/{10 + n}")[0]
                    with pytest.raises(RuntimeError):
                        request(app, [(b"x-correlation-id", b"corr-crash")], "/crash")
                    assert tel.handle.force_flush(10_000)
                    stdout = [line for line in tel.log_lines() if line["logger"] in ("app", "otel_kit.errors")]
                    spans = tel.spans()
                    recorded = {
                        (p.attributes["http.route"], p.attributes["http.response.status_code"]): p.count  # type: ignore[attr-defined]
                        for p in tel.metrics()["http.server.request.duration"].data.data_points
                    }
            finally:
                mp.undo()
            yield {"moto": moto, "stdout": stdout, "spans": spans, "recorded": recorded, "collector": collector}


def _events(moto: MotoServer, group: str) -> list[dict[str, Any]]:
    logs = _client("logs", moto)
    found: list[dict[str, Any]] = []
    for stream in logs.describe_log_streams(logGroupName=group)["logStreams"]:
        events = logs.get_log_events(logGroupName=group, logStreamName=stream["logStreamName"], startFromHead=True)
        found += [json.loads(e["message"]) for e in events["events"]]
    return found


def _groups(moto: MotoServer) -> set[str]:
    return {g["logGroupName"] for g in _client("logs", moto).describe_log_groups()["logGroups"]}


def test_cloudwatch_logs_hold_each_record_as_the_json_line_the_service_wrote(shipped: dict[str, Any]) -> None:
    moto: MotoServer = shipped["moto"]
    stdout: list[dict[str, Any]] = shipped["stdout"]
    wait_until(lambda: "/otel-kit/orders" in _groups(moto), 60, "the service's log group")

    def arrived() -> list[dict[str, Any]]:
        return [e for e in _events(moto, "/otel-kit/orders") if e.get("logger") in ("app", "otel_kit.errors")]

    wait_until(lambda: len(arrived()) >= len(stdout), 60, "every log record in CloudWatch Logs")
    by_message = {(e["message"], e.get("correlation_id")): e for e in arrived()}
    for line in stdout:
        event = by_message[(line["message"], line["correlation_id"])]
        for field in ("level", "logger", "service", "trace_id", "span_id", "xray_trace_id", "correlation_id"):
            assert event.get(field) == line[field], (field, event, line)
        if "order_id" in line:
            assert event["order_id"] == line["order_id"]
    crash = by_message[("GET /crash failed: RuntimeError: ledger down", "corr-crash")]
    assert 'raise RuntimeError("ledger down")' in crash["stack"]
    assert any(e["level"] == "WARNING" for e in arrived())  # as on stdout, not OTLP's WARN
    retention = _client("logs", moto).describe_log_groups(logGroupNamePrefix="/otel-kit/orders")["logGroups"]
    assert retention[0]["retentionInDays"] == 30


def test_every_field_the_logs_insights_queries_use_is_in_the_shipped_records(shipped: dict[str, Any]) -> None:
    moto: MotoServer = shipped["moto"]
    wait_until(lambda: len(_events(moto, "/otel-kit/orders")) > 0, 60, "log records in CloudWatch Logs")
    present = {key for event in _events(moto, "/otel-kit/orders") for key in event}
    for name, (_, text) in load_queries(ROOT).items():
        # @-fields are CloudWatch's own; request_id and the demo's fields are not logged by this service
        needed = {f for f in query_fields(text) if not f.startswith("@")} - {"request_id", *DEMO_FIELDS}
        assert needed <= present, f"{name} needs {sorted(needed - present)}"


def test_emf_documents_carry_the_http_durations_with_bounded_dimensions(shipped: dict[str, Any]) -> None:
    moto: MotoServer = shipped["moto"]
    recorded: dict[tuple[str, int], int] = shipped["recorded"]

    def documents() -> list[dict[str, Any]]:
        if "/otel-kit/metrics" not in _groups(moto):
            return []
        return [d for d in _events(moto, "/otel-kit/metrics") if "http.server.request.duration" in d]

    def counted() -> int:
        return sum(d["http.server.request.duration"]["Count"] for d in documents())

    wait_until(lambda: counted() >= sum(recorded.values()), 60, "the duration histogram as EMF")
    by_series: dict[tuple[str, str], int] = {}
    for doc in documents():
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == NAMESPACE
        assert [sorted(d) for d in directive["Dimensions"]] == [
            sorted(["service.name", "http.request.method", "http.route", "http.response.status_class"])
        ]
        (metric,) = [m for m in directive["Metrics"] if m["Name"] == "http.server.request.duration"]
        assert metric["Unit"] == "Seconds" and metric.get("StorageResolution", 60) == 60
        assert doc["service.name"] == "orders" and doc["http.request.method"] == "GET"
        value = doc["http.server.request.duration"]
        assert set(value) >= {"Count", "Sum", "Min", "Max"} and value["Min"] <= value["Max"]
        key = (doc["http.route"], doc["http.response.status_class"])
        by_series[key] = by_series.get(key, 0) + value["Count"]
    expected: dict[tuple[str, str], int] = {}
    for (route, status), count in recorded.items():
        key = (route, f"{str(status)[0]}xx")
        expected[key] = expected.get(key, 0) + count
    assert (
        by_series
        == expected
        == {("/orders/{order_id}", "2xx"): 7, ("/orders/{order_id}", "5xx"): 1, ("/crash", "5xx"): 1}
    )


def test_span_metrics_reach_cloudwatch_per_service_and_span_name(shipped: dict[str, Any]) -> None:
    moto: MotoServer = shipped["moto"]
    servers = [s for s in shipped["spans"] if s.kind is trace.SpanKind.SERVER]

    def calls() -> dict[tuple[str, str], float]:
        found: dict[tuple[str, str], float] = {}
        if "/otel-kit/metrics" not in _groups(moto):
            return found
        for doc in _events(moto, "/otel-kit/metrics"):
            if "traces.span.metrics.calls" in doc and doc.get("span.kind") == "SPAN_KIND_SERVER":
                (directive,) = doc["_aws"]["CloudWatchMetrics"]
                assert [sorted(d) for d in directive["Dimensions"]] == [
                    sorted(["service.name", "span.name", "span.kind", "status.code"]),
                    sorted(["service.name", "span.kind", "status.code"]),
                ]
                # the alarm otel-kit cloudwatch push --service puts watches a series these documents make
                (alarm,) = service_alarms(["orders"], NAMESPACE, "arn:aws:sns:eu-west-1:123456789012:t")
                assert sorted(d["Name"] for d in alarm["Dimensions"]) in [sorted(d) for d in directive["Dimensions"]]
                assert (alarm["Namespace"], alarm["MetricName"]) == (directive["Namespace"], SPAN_CALLS)
                key = (doc["span.name"], doc["status.code"])
                found[key] = found.get(key, 0.0) + float(doc["traces.span.metrics.calls"])
        return found

    wait_until(lambda: sum(calls().values()) >= len(servers), 60, "the span metrics as EMF")
    # each document holds what happened since the one before (the collector turns the cumulative series into deltas)
    assert calls() == {
        ("GET /orders/{order_id}", "STATUS_CODE_UNSET"): 7,
        ("GET /orders/{order_id}", "STATUS_CODE_ERROR"): 1,
        ("GET /crash", "STATUS_CODE_ERROR"): 1,
    }


def test_xray_holds_each_request_trace_with_its_correlation_id(shipped: dict[str, Any]) -> None:
    moto: MotoServer = shipped["moto"]
    servers = [s for s in shipped["spans"] if s.kind is trace.SpanKind.SERVER]
    hexes = {f"{s.context.trace_id:032x}" for s in servers}
    ids = sorted(f"1-{h[:8]}-{h[8:]}" for h in hexes)
    xray = _client("xray", moto)

    def segments() -> list[dict[str, Any]]:
        traces = xray.batch_get_traces(TraceIds=ids)["Traces"]
        return [json.loads(seg["Document"]) for t in traces for seg in t["Segments"]]

    wait_until(lambda: len(segments()) >= len(servers), 60, "the segments in X-Ray")
    found = {doc["trace_id"]: doc for doc in segments()}
    assert sorted(found) == ids
    assert {doc["annotations"]["correlation_id"] for doc in found.values()} == {
        *(f"corr-{n}" for n in range(8)),
        "corr-crash",
    }
    assert all(doc["annotations"]["service"] == "orders" for doc in found.values())
