"""Real OTLP export, over gRPC and over HTTP, to a separate receiving process.

The service under test runs in its own Python process too (``python -c``), as a deployed service would: it
initialises otel_kit from environment variables only, emits a span, a metric and a log line, and shuts down. The
test then reads back what the receiver got.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from demo_services.stack.servers import OtlpReceiver, attributes, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]

SERVICE = textwrap.dedent(
    """
    import logging
    import otel_kit
    from opentelemetry import metrics

    otel_kit.init()
    with otel_kit.correlation_scope("corr-otlp-1"):
        @otel_kit.traced(attributes={"order.id": "o-1"})
        def place_order():
            metrics.get_meter("shop").create_counter("shop.orders.placed").add(1, {"channel": "web"})
            logging.getLogger("shop").info("order placed")
        place_order()
    assert otel_kit.shutdown(), "flush did not complete"
    """
)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_spans_metrics_and_logs_arrive_with_resource_attributes(otlp_receiver: OtlpReceiver, protocol: str) -> None:
    port = otlp_receiver.grpc_port if protocol == "grpc" else otlp_receiver.http_port
    env = {
        **os.environ,
        "OTEL_SERVICE_NAME": "checkout",
        "OTEL_KIT_SERVICE_VERSION": "1.2.3",
        "OTEL_KIT_ENVIRONMENT": "test",
        "OTEL_RESOURCE_ATTRIBUTES": "team=payments",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "requests,httpx,botocore,pika,aio-pika",
    }
    result = subprocess.run(
        [sys.executable, "-c", SERVICE], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    # the service's own stdout is JSON lines
    assert '"message": "order placed"' in result.stdout

    transport = "grpc" if protocol == "grpc" else "http"
    wait_until(
        lambda: {"traces", "metrics", "logs"} <= {r["signal"] for r in otlp_receiver.records()}, 15, "all signals"
    )
    assert {r["transport"] for r in otlp_receiver.records()} == {transport}

    received = otlp_receiver.spans()
    resource = received[0][0]
    assert resource["service.name"] == "checkout"
    assert resource["service.version"] == "1.2.3"
    assert resource["deployment.environment.name"] == "test"
    assert resource["team"] == "payments"
    assert resource["telemetry.distro.name"] == "otel-kit"
    spans = [span for _, span in received]
    assert [s["name"] for s in spans] == ["place_order"]
    span_attrs = attributes(spans[0]["attributes"])
    assert span_attrs["correlation_id"] == "corr-otlp-1"
    assert span_attrs["order.id"] == "o-1"

    assert "shop.orders.placed" in {metric["name"] for _, metric in otlp_receiver.metrics()}

    records = [record for _, record in otlp_receiver.log_records()]
    order_log = next(r for r in records if r["body"].get("stringValue") == "order placed")
    assert order_log["traceId"] == spans[0]["traceId"]
    assert attributes(order_log["attributes"])["correlation_id"] == "corr-otlp-1"


SIGTERMED = textwrap.dedent(
    """
    import sys, threading
    import otel_kit
    otel_kit.init()
    with otel_kit.correlation_scope("term-1"):
        otel_kit.traced(lambda: None, name="before sigterm")()
    print("ready", flush=True)
    threading.Event().wait(60)  # a worker waiting for work when the orchestrator stops it
    """
)


def test_sigterm_flushes_before_the_process_ends(otlp_receiver: OtlpReceiver) -> None:
    import signal

    env = {
        **os.environ,
        "OTEL_SERVICE_NAME": "worker",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_receiver.grpc_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "600000",  # nothing would be exported before exit without the flush
        "OTEL_KIT_LOG_STDOUT": "false",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "requests,httpx,botocore,pika,aio-pika",
    }
    with subprocess.Popen(
        [sys.executable, "-c", SIGTERMED], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == -signal.SIGTERM  # still reported as ended by SIGTERM
    assert [span["name"] for _, span in otlp_receiver.spans()] == ["before sigterm"]
