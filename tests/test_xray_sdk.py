"""X-Ray SDK mode: aws-xray-sdk's real UDP emitter, captured by a local daemon stand-in that forwards each segment to
moto (PutTraceSegments), read back with BatchGetTraces; the trace crosses an OpenTelemetry service unbroken."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
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
from demo_services.stack.servers import ManagedProcess, MotoServer, free_port, port_open, serve_asgi, wait_until
from otel_kit import testing

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]
AWS = {"region_name": "eu-west-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


class DaemonStandIn:
    """Receives X-Ray segments on UDP as the X-Ray daemon does, and forwards each to the X-Ray API at ``endpoint``."""

    def __init__(self, endpoint: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.xray = boto3.client("xray", endpoint_url=endpoint, **AWS)
        self.forwarded = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                datagram = self.sock.recv(65535)
            except TimeoutError:
                continue
            header, _, document = datagram.decode().partition("\n")  # {"format": "json", "version": 1}\n{segment}
            assert json.loads(header)["format"] == "json"
            self.xray.put_trace_segments(TraceSegmentDocuments=[document])
            self.forwarded += 1

    def __enter__(self) -> DaemonStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    rules = tmp_path / "sampling.json"
    rules.write_text(json.dumps({"version": 2, "default": {"fixed_target": 1, "rate": 1.0}, "rules": []}))
    with MotoServer() as moto, DaemonStandIn(moto.endpoint_url) as daemon, testing.capture("stock") as tel:
        downstream = FastAPI()

        @downstream.get("/ping")
        def ping() -> dict[str, Any]:
            return {"correlation_id": otel_kit.get_correlation_id()}

        with serve_asgi(otel_kit.instrument_fastapi(downstream)) as downstream_url:
            port = free_port()
            env = {"PYTHONPATH": str(ROOT), "DOWNSTREAM_URL": downstream_url, "AWS_XRAY_DAEMON_ADDRESS": daemon.address,
                   "OTEL_KIT_XRAY_SAMPLING_RULES": str(rules)}  # fmt: skip
            process = ManagedProcess("pricing", [sys.executable, "-m", "tests.apps.xray_app", str(port)], env)
            try:
                wait_until(lambda: process.check_alive() is None and port_open(port), 30, "the X-Ray SDK service")
                yield {"url": f"http://127.0.0.1:{port}", "moto": moto, "daemon": daemon, "tel": tel, "log": process}
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

    wait_until(lambda: bool(segments()), 30, "the segment in X-Ray")
    [segment] = segments()
    assert segment["name"] == "pricing"
    assert segment["trace_id"] == root and segment["parent_id"] == parent
    assert segment["http"]["request"]["method"] == "GET"
    assert segment["http"]["request"]["url"].endswith("/price/book-1")
    assert segment["http"]["response"]["status"] == 200
    assert segment["annotations"]["correlation_id"] == "corr-xray"
    [call] = segment["subsegments"]
    assert call["namespace"] == "remote"
    assert call["http"]["request"]["url"].endswith("/ping") and call["http"]["response"]["status"] == 200
    assert server.parent is not None and format(server.parent.span_id, "016x") == call["id"]  # the call's child

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
