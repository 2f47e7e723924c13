"""X-Ray SDK mode: aws-xray-sdk's real UDP emitter sends its segments to the project's collector (the awsxray
receiver, the X-Ray daemon's protocol), which sends them with the OpenTelemetry services' spans to X-Ray in moto;
read back with BatchGetTraces, the trace crosses OpenTelemetry, the X-Ray SDK and OpenTelemetry again, whole."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.trace import format_trace_id

import otel_kit
from demo_services.stack.servers import (
    Collector,
    ManagedProcess,
    MotoServer,
    free_port,
    port_open,
    serve_asgi,
    wait_until,
)
from otel_kit import testing

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]
AWS = {"region_name": "eu-west-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
AWS_ENV = {"AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """moto, the project's collector with the aws overlay (its awsxray receiver takes the SDK's segments, the OTLP
    receiver the OpenTelemetry services' spans, one X-Ray exporter sends both), an OpenTelemetry service, and the
    X-Ray SDK service in its own process."""
    rules = tmp_path / "sampling.json"
    rules.write_text(json.dumps({"version": 2, "default": {"fixed_target": 1, "rate": 1.0}, "rules": []}))
    with MotoServer() as moto:
        env = {**AWS_ENV, "AWS_XRAY_ENDPOINT": moto.endpoint_url, "AWS_LOGS_ENDPOINT": moto.endpoint_url}
        with Collector(["aws.yaml"], env) as collector, pytest.MonkeyPatch.context() as mp:
            udp = collector.xray_udp_port
            mp.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.http_port}")
            mp.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
            with testing.capture("stock", traces_exporter="otlp") as tel:
                downstream = FastAPI()

                @downstream.get("/ping")
                def ping() -> dict[str, Any]:
                    return {"correlation_id": otel_kit.get_correlation_id()}

                with serve_asgi(otel_kit.instrument_fastapi(downstream)) as downstream_url:
                    port = free_port()
                    env = {"PYTHONPATH": str(ROOT), "DOWNSTREAM_URL": downstream_url}
                    env |= {"AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{udp}", "OTEL_KIT_XRAY_SAMPLING_RULES": str(rules)}
                    process = ManagedProcess("pricing", [sys.executable, "-m", "tests.apps.xray_app", str(port)], env)
                    try:
                        wait_until(lambda: process.check_alive() is None and port_open(port), 30, "the SDK service")
                        yield {"url": f"http://127.0.0.1:{port}", "moto": moto, "tel": tel, "log": process,
                               "collector": collector}  # fmt: skip
                    finally:
                        process.stop()


def test_segments_reach_xray_with_annotation_http_blocks_subsegments_and_one_trace_across_both_paths(
    stack: dict[str, Any],
) -> None:
    # an OpenTelemetry service calls the X-Ray SDK service, which calls another OpenTelemetry service
    with otel_kit.correlation_scope("corr-xray"), trace.get_tracer("checkout").start_as_current_span("checkout"):
        response = requests.get(f"{stack['url']}/price/book-1", timeout=10)
    assert response.status_code == 200 and response.headers["X-Correlation-ID"] == "corr-xray"
    tel: testing.Capture = stack["tel"]
    client = next(s for s in tel.spans() if s.kind is trace.SpanKind.CLIENT and s.name == "GET")
    trace_hex = format_trace_id(client.context.trace_id)
    root, parent = f"1-{trace_hex[:8]}-{trace_hex[8:]}", format(client.context.span_id, "016x")

    # the OpenTelemetry service downstream continued the same trace, with the same correlation id
    server = next(s for s in tel.spans() if s.kind is trace.SpanKind.SERVER)
    assert format_trace_id(server.context.trace_id) == trace_hex
    assert server.attributes["correlation_id"] == "corr-xray"
    assert response.json()["downstream"] == 200

    # the SDK's segment, read back from X-Ray
    xray = boto3.client("xray", endpoint_url=stack["moto"].endpoint_url, **AWS)

    def segments() -> list[dict[str, Any]]:
        traces = xray.batch_get_traces(TraceIds=[root])["Traces"]
        return [json.loads(s["Document"]) for t in traces for s in t["Segments"]]

    assert tel.handle.force_flush(10_000)
    # the whole trace, through one collector: the OpenTelemetry root and its call, the X-Ray SDK's segment and its
    # call, the OpenTelemetry server downstream
    wait_until(lambda: len(segments()) >= 5, 30, "five documents of the trace in X-Ray")
    docs = {doc["id"]: doc for doc in segments()}
    assert len(docs) == 5 and {doc["trace_id"] for doc in docs.values()} == {root}
    (checkout,) = [d for d in docs.values() if d["name"] == "checkout"]
    assert "parent_id" not in checkout and checkout["annotations"]["correlation_id"] == "corr-xray"
    outgoing = docs[parent]
    assert outgoing["parent_id"] == checkout["id"] and outgoing["namespace"] == "remote"
    (segment,) = [
        d for d in docs.values() if d["aws"]["xray"]["sdk"].startswith("X-Ray for Python") and "type" not in d
    ]
    assert segment["name"] == "pricing" and segment["parent_id"] == parent
    assert segment["http"]["request"]["method"] == "GET"
    assert segment["http"]["request"]["url"].endswith("/price/book-1")
    assert segment["http"]["response"]["status"] == 200
    assert segment["annotations"]["correlation_id"] == "corr-xray"
    (call,) = [d for d in docs.values() if d.get("parent_id") == segment["id"]]
    assert call["type"] == "subsegment" and call["namespace"] == "remote"
    assert call["http"]["request"]["url"].endswith("/ping") and call["http"]["response"]["status"] == 200
    assert server.parent is not None and format(server.parent.span_id, "016x") == call["id"]  # the call's child
    downstream = docs[format(server.context.span_id, "016x")]
    assert downstream["parent_id"] == call["id"] and downstream["annotations"]["correlation_id"] == "corr-xray"
    assert "panic" not in stack["collector"].output()

    # the service's JSON log line carries the same trace
    def line() -> dict[str, Any] | None:
        for text in stack["log"].output_tail(50).splitlines():
            if '"price looked up"' in text:
                return dict(json.loads(text))
        return None

    wait_until(lambda: line() is not None, 10, "the log line")
    logged = line()
    assert logged is not None
    assert logged["xray_trace_id"] == root and logged["trace_id"] == trace_hex
    assert logged["correlation_id"] == "corr-xray"
    assert os.environ.get("AWS_XRAY_DAEMON_ADDRESS") is None  # the test process itself was not switched to SDK mode


CONTEXT_MISSING = """
import requests
from otel_kit.xray_sdk import init_xray_sdk
init_xray_sdk("batch-job", metrics_exporter="none", logs_exporter="none")
# outside any segment: a patched client call must neither raise nor report a missing context
print(requests.get(URL, timeout=5).status_code)
"""


def test_calls_outside_a_segment_and_bad_sampling_rules_do_not_break_the_service(tmp_path: Path) -> None:
    import subprocess

    bad_rules = tmp_path / "rules.json"
    bad_rules.write_text("{not json")
    with serve_asgi(FastAPI()) as url:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:9",
               "OTEL_KIT_XRAY_SAMPLING_RULES": str(bad_rules)}  # fmt: skip
        result = subprocess.run([sys.executable, "-c", CONTEXT_MISSING.replace("URL", repr(url + "/docs"))],
                                env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "200" in result.stdout.splitlines()  # the script's print, among the log lines written at exit
    output = result.stdout + result.stderr
    assert "SegmentNotFoundException" not in output and "cannot find the current segment" not in output.lower()
    assert "OTEL_KIT_XRAY_SAMPLING_RULES=" in output and "X-Ray's default sampling is used" in output
