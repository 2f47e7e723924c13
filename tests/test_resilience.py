"""A dead or stuck collector never blocks the application, drops are counted, shutdown is bounded."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from opentelemetry import trace

import otel_kit
from otel_kit import testing

pytestmark = pytest.mark.e2e


@pytest.fixture
def stuck_collector() -> Iterator[int]:
    """A port that takes TCP connections into its backlog and never answers: the worst kind of dead collector."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield server.getsockname()[1]


def _by_signal(tel: testing.Capture, name: str) -> dict[str, int]:
    """One of the toolkit's counters, by its ``signal`` attribute (empty when nothing was counted)."""
    metric = tel.metrics().get(name)
    points = metric.data.data_points if metric is not None else ()
    return {p.attributes["signal"]: p.value for p in points}  # type: ignore[attr-defined]


def _dropped(tel: testing.Capture) -> int:
    return _by_signal(tel, "otel_kit.queue.dropped").get("traces", 0)


def test_stuck_collector_never_blocks_spans_and_drops_are_counted(
    monkeypatch: pytest.MonkeyPatch, stuck_collector: int
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{stuck_collector}")
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "20")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "3")  # each export waits on the stuck collector that long
    sent = 500
    with testing.capture("svc", traces_exporter="otlp", shutdown_timeout_ms=300) as tel:
        tracer = trace.get_tracer("load")
        for n in range(sent):
            with tracer.start_as_current_span(f"request {n}"):
                pass
        dropped = _dropped(tel)
        # at most one batch in flight to the stuck collector and one full queue are still held
        assert sent - 10 - 20 <= dropped <= sent
        assert tel.handle.shutdown() is False  # could not flush to a stuck collector...
        # ...and returned after 300 ms while its flush still waits on the collector (3 s an export): it did not hang.
        # Leaving capture() waits for the flush to give up.
        assert "otel-kit-shutdown" in [thread.name for thread in threading.enumerate()]
    assert any("did not finish within 300 ms" in line["message"] for line in tel.log_lines())
    # leaving capture() waited for the abandoned export to give up: nothing of it runs on into the next test
    assert "otel-kit-shutdown" not in [thread.name for thread in threading.enumerate()]


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
            assert _by_signal(tel, "otel_kit.export.failed") == {"traces": 1}


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_an_export_that_timed_out_is_counted_as_timed_out_as_well_as_failed(
    stuck_collector: int, protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collector that takes the connection and never answers may still take the request once it resumes: the
    spans are counted as failed, and as timed out, the failures whose fate is unknown."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{stuck_collector}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    with testing.capture("svc", traces_exporter="otlp", shutdown_timeout_ms=3000) as tel:
        for name in ("a", "b", "c"):
            with trace.get_tracer("t").start_as_current_span(name):
                pass
        tel.handle.force_flush(3000)
        assert _by_signal(tel, "otel_kit.export.failed") == {"traces": 3}
        assert _by_signal(tel, "otel_kit.export.timed_out") == {"traces": 3}


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_refused_export_is_counted_as_failed_and_not_as_timed_out(
    protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound but not listening: connection refused, nothing sent
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
        with testing.capture("svc", traces_exporter="otlp", shutdown_timeout_ms=3000) as tel:
            with trace.get_tracer("t").start_as_current_span("lost"):
                pass
            tel.handle.force_flush(3000)
            assert _by_signal(tel, "otel_kit.export.failed") == {"traces": 1}
            assert _by_signal(tel, "otel_kit.export.timed_out") == {}


def test_a_failed_log_export_is_reported_on_stdout_and_not_exported_again(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """While the collector is down, one application line makes one failed export: the exporter's error goes to
    stdout and is not queued for the next export (which would fail and log again, for as long as the outage
    lasts), and nothing is said about recursive logging."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound but not listening: connection refused
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
        # the SDK drops an exporter message equal to the one before it within 20 s: an earlier test's failed export
        # must not hide this one
        for duplicate_filter in logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter").filters:
            monkeypatch.setattr(duplicate_filter, "last_log", None, raising=False)
        with testing.capture("svc", logs_exporter="otlp", shutdown_timeout_ms=10_000) as tel:
            logging.getLogger("app").warning("the last line before the collector went away")
            for _ in range(2):  # the first flush fails to deliver the line; the second finds nothing new to send
                assert tel.handle.force_flush(5_000) is True
            # (only the log signal is this test's subject)
            by_signal = _by_signal(tel, "otel_kit.export.failed")
            assert by_signal.get("logs") == 1, by_signal
            assert tel.handle.shutdown() is True
    lines = tel.log_lines()
    log_export_errors = [line for line in lines if line["level"] == "ERROR" and "export logs" in line["message"]]
    assert [line["logger"] for line in log_export_errors] == ["opentelemetry.exporter.otlp.proto.grpc.exporter"]
    exported = [r.log_record.body for r in tel.log_records()]
    assert exported == ["the last line before the collector went away"]
    assert "recursive logging" not in capfd.readouterr().err


_EXITING_SCRIPT = """
import logging, sys
import otel_kit
from opentelemetry import trace
otel_kit.init("exiting")
with trace.get_tracer("job").start_as_current_span("last job"):
    logging.getLogger("job").warning("done")
print("exiting", flush=True)
"""


def test_a_process_ending_normally_exits_within_the_shutdown_bound(stuck_collector: int) -> None:
    """``atexit`` flushes for at most ``OTEL_KIT_SHUTDOWN_TIMEOUT_MS``; nothing else waits on the stuck collector
    afterwards (the SDK's own exit hooks did, for the exporters' timeout and more). With a 1 s bound and exports
    that would wait 120 s, the process ends while its export still waits."""
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{stuck_collector}",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "120",
        "OTEL_KIT_SHUTDOWN_TIMEOUT_MS": "1000",
        "OTEL_KIT_LOG_STDOUT": "false",
    }
    with subprocess.Popen([sys.executable, "-c", _EXITING_SCRIPT], env=env, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "exiting"
        assert proc.wait(timeout=60) == 0  # raises if the exit waited for the 120 s export


def test_a_shutdown_finishing_late_leaves_the_next_inits_log_handlers_alone(
    monkeypatch: pytest.MonkeyPatch, stuck_collector: int
) -> None:
    """A shutdown that overran its bound goes on exporting in the background; when it ends, it takes off only the
    log handlers of the ``init()`` it stopped. A second ``init()`` made meanwhile keeps writing its lines."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{stuck_collector}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    first = otel_kit.init("first", traces_exporter="otlp", metrics_exporter="none", log_stream=io.StringIO())
    with trace.get_tracer("job").start_as_current_span("unsent"):
        pass
    assert otel_kit.shutdown(100) is False  # the span is still on its way to the stuck collector
    later = io.StringIO()
    second = otel_kit.init("second", traces_exporter="none", metrics_exporter="none", log_stream=later)
    assert first.wait_stopped(30) is True  # the first init's shutdown gave up on the collector and ended
    logging.getLogger("app").warning("written after the first shutdown ended")
    second.flush_log_lines()
    lines = [json.loads(line) for line in later.getvalue().splitlines()]
    # (the first shutdown's own report of its failed export may come first: it ended after the second init)
    assert [line["message"] for line in lines if line["logger"] == "app"] == ["written after the first shutdown ended"]
