"""A dead or stuck collector never blocks the application, drops are counted, shutdown is bounded."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from opentelemetry import trace

from otel_kit import testing

pytestmark = pytest.mark.e2e


@pytest.fixture
def stuck_collector() -> Iterator[int]:
    """A port that accepts TCP connections and then never answers: the worst kind of dead collector."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield server.getsockname()[1]


def _dropped(tel: testing.Capture) -> int:
    metric = tel.metrics().get("otel_kit.queue.dropped")
    if metric is None:
        return 0
    return sum(p.value for p in metric.data.data_points if p.attributes["signal"] == "traces")  # type: ignore[attr-defined]


def test_stuck_collector_never_blocks_spans_and_drops_are_counted(
    monkeypatch: pytest.MonkeyPatch, stuck_collector: int
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{stuck_collector}")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "20")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")  # the abandoned export gives up soon after the test
    sent = 500
    with testing.capture("svc", traces_exporter="otlp", shutdown_timeout_ms=300) as tel:
        tracer = trace.get_tracer("load")
        for n in range(sent):
            with tracer.start_as_current_span(f"request {n}"):
                pass
        dropped = _dropped(tel)
        # at most one batch in flight to the stuck collector and one full queue are still held
        assert sent - 10 - 20 <= dropped <= sent
        started = time.monotonic()
        assert tel.handle.shutdown() is False  # could not flush to a stuck collector...
        assert time.monotonic() - started < 5  # ...and gave up within its bound instead of hanging
    assert any("did not finish within 300 ms" in line["message"] for line in tel.log_lines())


def test_export_failures_are_counted_per_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound but not listening: connection refused
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
        with testing.capture("svc", traces_exporter="otlp", shutdown_timeout_ms=3000) as tel:
            with trace.get_tracer("t").start_as_current_span("lost"):
                pass
            tel.handle.force_flush(3000)
            ours = tel.metrics()["otel_kit.export.failed"].data.data_points
            assert {p.attributes["signal"]: p.value for p in ours} == {"traces": 1}  # type: ignore[attr-defined]
