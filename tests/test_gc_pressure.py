"""What telemetry keeps alive for Python's garbage collector, and that nothing is lost for it.

Each object the collector tracks that outlives a few hundred allocations moves towards the oldest generation,
and enough of them trigger a full collection, which stops the whole process while it walks the heap (tens of
milliseconds on a real service). Under load that was most of a trivial route's p99 latency. So spans and log
records waiting in the batch queues hold as few tracked objects as they can, a request's span is let go as soon
as its response is sent, and a batch whose export failed is freed at once rather than by the next full collection.
"""

from __future__ import annotations

import gc
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_kit
from demo_services.stack.servers import OtlpReceiver, attributes, serve_asgi, wait_until
from otel_kit._internal.selfmetrics import EXPORT_FAILED, counts

pytestmark = pytest.mark.e2e

QUEUED = 1000
ROOT = Path(__file__).resolve().parents[1]

# A service in its own process (pytest keeps every log record it sees): it leaves spans and log records in the
# batch queues, counts what the garbage collector tracks per queued item, prints it and shuts down, flushing.
SERVICE = textwrap.dedent(
    """
    import gc, json, logging, sys
    import otel_kit
    from opentelemetry import trace

    QUEUED = int(sys.argv[1])

    def tracked_per_item(make):
        make(-1)  # warm-up
        gc.collect()
        before = len(gc.get_objects())
        for i in range(QUEUED):
            make(i)
        for handler in logging.getLogger().handlers:
            handler.flush()  # the background log writer hands its records to the SDK's queue, which keeps them
        gc.collect()
        return (len(gc.get_objects()) - before) / QUEUED

    otel_kit.init("gc-service", metrics_exporter="none", log_stdout=False)
    tracer = trace.get_tracer("gc")
    log = logging.getLogger("gc")

    def span(i):
        with tracer.start_as_current_span("work", attributes={"i": i, "route": "/work"}) as current:
            if i % 100 == 0:
                current.add_event("checkpoint", {"i": i})

    def line(i):
        log.info("line %d", i, extra={"i": i})

    with otel_kit.correlation_scope("gc-1"):
        per_span = tracked_per_item(span)
        with tracer.start_as_current_span("logging"):
            per_record = tracked_per_item(line)
        # what the limits dropped is still counted, scrubbed or not
        with tracer.start_as_current_span("crowded", attributes={f"a{n}": n for n in range(10)}) as crowded:
            for n in range(3):
                crowded.add_event(f"e{n}", {"note": "password=hunter2" if n == 2 else "plain"})
        with tracer.start_as_current_span("scrubbed", attributes={f"b{n}": n for n in range(8)}) as scrubbed:
            scrubbed.set_attribute("b7", "password=hunter2")
    print(json.dumps({"per_span": per_span, "per_record": per_record}))
    assert otel_kit.shutdown(), "flush did not complete"
    """
)


def test_queued_spans_and_log_records_hold_three_tracked_objects_each_and_all_arrive(
    otlp_receiver: OtlpReceiver,
) -> None:
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_receiver.grpc_port}",
        "OTEL_SPAN_EVENT_COUNT_LIMIT": "2",
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "8",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "requests,httpx,botocore,pika,aio-pika",
    }
    for signal in ("BSP", "BLRP"):  # everything stays queued until the shutdown's flush
        env |= {f"OTEL_{signal}_SCHEDULE_DELAY": "600000", f"OTEL_{signal}_MAX_QUEUE_SIZE": "4096"}
        env[f"OTEL_{signal}_MAX_EXPORT_BATCH_SIZE"] = "4096"
    result = subprocess.run(
        [sys.executable, "-c", SERVICE, str(QUEUED)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    counted = json.loads(result.stdout.splitlines()[-1])
    assert counted["per_span"] <= 3.2, f"{counted['per_span']} tracked objects a queued span (the SDK's hold 11)"
    assert counted["per_record"] <= 3.2, f"{counted['per_record']} tracked objects a queued log record (SDK: 6)"

    wait_until(lambda: len(otlp_receiver.spans()) >= QUEUED + 4, 30, "every span at the receiver")
    spans = [s for _, s in otlp_receiver.spans()]
    work = [s for s in spans if s["name"] == "work"]
    assert sorted(int(attributes(s["attributes"])["i"]) for s in work) == list(range(-1, QUEUED))
    assert all(attributes(s["attributes"])["correlation_id"] == "gc-1" for s in work)
    checkpoints = [e for s in work for e in s.get("events", [])]
    assert sorted(int(attributes(e["attributes"])["i"]) for e in checkpoints) == list(range(0, QUEUED, 100))
    by_name = {s["name"]: s for s in spans}
    assert by_name["crowded"]["droppedAttributesCount"] == 3  # 10 given + correlation_id, limit 8
    assert by_name["crowded"]["droppedEventsCount"] == 1
    assert [e["name"] for e in by_name["crowded"]["events"]] == ["e1", "e2"]  # the oldest dropped
    assert attributes(by_name["crowded"]["events"][0]["attributes"])["note"] == "plain"
    assert "hunter2" not in json.dumps(by_name["crowded"]["events"])
    assert attributes(by_name["scrubbed"]["attributes"])["b7"] != "password=hunter2"
    assert by_name["scrubbed"]["droppedAttributesCount"] == 1  # correlation_id, the ninth

    wait_until(lambda: len(otlp_receiver.log_records()) >= QUEUED + 1, 30, "every log record at the receiver")
    records = [r for _, r in otlp_receiver.log_records()]
    assert sorted(r["body"]["stringValue"] for r in records) == sorted(f"line {i}" for i in range(-1, QUEUED))
    logging_span = by_name["logging"]
    for record in records:
        assert record["traceId"] == logging_span["traceId"] and record["spanId"] == logging_span["spanId"]
        assert attributes(record["attributes"])["correlation_id"] == "gc-1"


def test_a_request_span_is_let_go_when_the_response_is_sent_on_kept_alive_connections() -> None:
    """uvicorn starts a connection's keep-alive timer as the response ends, and asyncio keeps the context a timer
    was started in until the timer leaves the loop's queue. A timer cancelled by the connection's next request
    leaves at once only from the head of that queue; behind another connection's live timer it stays until that
    one's time comes (5 s), and so did the request's span and all it refers to, moving up the garbage collector's
    generations. (Log records are not captured here: the SDK's simple processor, which ``otel_kit.testing`` uses,
    keeps the context of each; the batch processors do not.)"""
    seen: list[weakref.ref[Any]] = []
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        seen.append(weakref.ref(trace.get_current_span()))
        return {"ok": True}

    def get(conn: http.client.HTTPConnection) -> None:
        conn.request("GET", "/ping")
        response = conn.getresponse()
        assert response.status == 200 and response.read() == b'{"ok":true}'

    exporter = InMemorySpanExporter()
    quiet = {"traces_exporter": "none", "metrics_exporter": "none", "logs_exporter": "none"}
    otel_kit.init("keep-alive", **quiet, span_processors=[SimpleSpanProcessor(exporter)], log_stream=io.StringIO())
    with serve_asgi(otel_kit.instrument_fastapi(app)) as url:
        host, port = url.removeprefix("http://").split(":")
        idle, busy = (http.client.HTTPConnection(host, int(port), timeout=10) for _ in range(2))
        try:
            get(idle)  # its live timer heads the queue
            get(busy)
            get(busy)  # cancels the timer of busy's first request, which waits behind idle's
            wait_until(lambda: len(exporter.get_finished_spans()) == 3, 10, "the three server spans")

            def closed_by_server(conn: http.client.HTTPConnection) -> bool:
                assert conn.sock is not None
                conn.sock.setblocking(False)
                try:
                    return conn.sock.recv(1) == b""
                except BlockingIOError:
                    return False

            first: list[str] = []

            def one_happened() -> bool:
                gc.collect()
                if seen[1]() is None:
                    first.append("span freed")
                elif closed_by_server(idle):  # idle's keep-alive timer fired: it no longer holds the span up
                    first.append("idle connection's keep-alive timer fired")
                return bool(first)

            wait_until(one_happened, 30, "the span to be freed or idle's keep-alive timer to fire")
            assert first == ["span freed"]  # not only once idle's timer, ahead in the queue, was gone
        finally:
            idle.close()
            busy.close()
    assert [s.name for s in exporter.get_finished_spans()] == ["GET /ping"] * 3


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_batch_whose_export_failed_is_freed_without_waiting_for_the_garbage_collector(
    monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    """SDK 1.45's OTLP exporters kept a failed export's error where the error's own traceback could reach it, a
    cycle holding the whole batch until Python's next full collection, which under an outage came every 40 s
    or so with 11,000 to 23,000 objects to free."""
    freed: list[weakref.ref[Any]] = []

    class Watch(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            freed.append(weakref.ref(span))

    silent = socket.socket()  # takes connections into its backlog and never answers: every export times out
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    quiet = {"metrics_exporter": "none", "logs_exporter": "none"}
    endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
    otel_kit.init("outage", endpoint=endpoint, **quiet, span_processors=[Watch()], log_stream=io.StringIO())
    gc.disable()  # only reference counting may free the batch
    try:
        tracer = trace.get_tracer("outage")
        for i in range(50):
            tracer.start_span("lost", attributes={"i": i}).end()
        trace.get_tracer_provider().force_flush(10_000)  # type: ignore[attr-defined]  # exports here, and fails
        assert counts().get(EXPORT_FAILED, "traces") == 50
        alive = sum(ref() is not None for ref in freed)
    finally:
        gc.enable()
        silent.close()
    assert alive == 0, f"{alive} of 50 spans still held after their export failed"
