"""CloudWatch metrics through EMF, from a Lambda handler invoked with API Gateway, SQS and EventBridge events."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry import metrics
from opentelemetry.trace import format_trace_id

import otel_kit
from otel_kit import testing
from otel_kit._internal.selfmetrics import EXPORT_FAILED, counts
from otel_kit.integrations import aws_lambda

log = logging.getLogger("receipts")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


class LambdaOutput:
    """What the function wrote: EMF documents on standard output, JSON log lines on the log stream."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys, self._stdout = capsys, ""
        self.log = io.StringIO()

    def documents(self) -> list[dict[str, Any]]:
        self._stdout += self._capsys.readouterr().out
        return [json.loads(line) for line in self._stdout.splitlines() if line.startswith('{"_aws"')]

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.getvalue().splitlines()]


@pytest.fixture
def output(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[LambdaOutput]:
    """otel_kit as a Lambda function runs it: EMF metrics on standard output, JSON log lines beside them."""
    monkeypatch.setattr(aws_lambda, "_cold_start", True)
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "600000")  # only the end of an invocation flushes
    captured = LambdaOutput(capsys)
    testing.reset()
    otel_kit.init("receipts", metrics_exporter="emf", traces_exporter="none", logs_exporter="none",
                  log_stream=captured.log)  # fmt: skip
    yield captured
    testing.reset()


@otel_kit.lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # instruments from the current provider (each test starts a fresh one)
    meter = metrics.get_meter("receipts")
    written = meter.create_counter("receipts.written", unit="{receipt}")
    render = meter.create_histogram("receipts.render.duration", unit="s")
    trigger = "http" if "headers" in event else "sqs" if "Records" in event else "eventbridge"
    written.add(2, {"trigger": trigger})
    render.record(0.25, {"trigger": trigger})
    render.record(0.75, {"trigger": trigger})
    log.info("receipt written")
    return {"statusCode": 200, "body": "{}"}


def _context(request_id: str) -> SimpleNamespace:
    return SimpleNamespace(aws_request_id=request_id, function_name="receipts",
                           invoked_function_arn="arn:aws:lambda:eu-west-1:123456789012:function:receipts")  # fmt: skip


EVENTS = {
    "http": {"headers": {"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01", "X-Correlation-ID": "corr-http"}},
    "sqs": {"Records": [{"eventSource": "aws:sqs", "body": "{}", "messageAttributes": {
        "traceparent": {"stringValue": f"00-{TRACE}-00f067aa0ba902b7-01", "dataType": "String"},
        "X-Correlation-ID": {"stringValue": "corr-sqs", "dataType": "String"}}}]},
    "eventbridge": {"version": "0", "detail-type": "order.confirmed", "source": "shop.orders",
                    "detail": {"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01", "correlation_id": "corr-eventbridge"}},
}  # fmt: skip


@pytest.mark.parametrize("trigger", list(EVENTS))
def test_each_invocation_flushes_emf_metrics_and_logs_with_its_ids(output: LambdaOutput, trigger: str) -> None:
    handler(EVENTS[trigger], _context("req-1"))
    docs = output.documents()
    assert len(docs) == 1  # both metrics share the attribute set: one document
    doc = docs[0]
    directive = doc["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "receipts"
    assert directive["Dimensions"] == [["trigger"]]
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {
        "receipts.written": "Count",
        "receipts.render.duration": "Seconds",
    }
    assert doc["trigger"] == trigger
    assert doc["receipts.written"] == 2
    assert doc["receipts.render.duration"] == {"Count": 2, "Sum": 1.0, "Min": 0.25, "Max": 0.75}
    [line] = [line for line in output.lines() if line["message"] == "receipt written"]
    assert line["request_id"] == "req-1"
    assert line["correlation_id"] == f"corr-{trigger}"
    assert line["trace_id"] == TRACE  # the parent came from the event


def test_a_second_invocation_reports_only_its_own_measurements(output: LambdaOutput) -> None:
    handler(EVENTS["sqs"], _context("req-1"))
    handler(EVENTS["sqs"], _context("req-2"))
    first, second = output.documents()
    assert first["receipts.written"] == second["receipts.written"] == 2  # deltas, not a running total
    assert second["receipts.render.duration"]["Count"] == 2


def test_more_than_100_metrics_are_split_over_documents(output: LambdaOutput) -> None:
    meter = metrics.get_meter("bulk")
    for n in range(150):
        meter.create_counter(f"bulk.metric.{n:03d}").add(1, {"batch": "b"})
    otel_kit.current_handle().force_flush()  # type: ignore[union-attr]
    docs = [d for d in output.documents() if d.get("batch") == "b"]
    assert [len(d["_aws"]["CloudWatchMetrics"][0]["Metrics"]) for d in docs] == [100, 50]


def test_too_many_dimensions_or_a_bad_name_is_a_clear_error_and_counted(
    output: LambdaOutput, caplog: pytest.LogCaptureFixture
) -> None:
    meter = metrics.get_meter("bad")
    meter.create_counter("wide.metric").add(1, {f"dim{n}": "x" for n in range(31)})
    meter.create_counter("unicode.dimension").add(1, {"größe": "xl"})  # OpenTelemetry allows it, CloudWatch not
    before = counts().get(EXPORT_FAILED, "metrics")
    otel_kit.current_handle().force_flush()  # type: ignore[union-attr]
    assert not any("wide.metric" in d or "unicode.dimension" in d for d in output.documents())
    errors = [r.getMessage() for r in caplog.records if r.name == "otel_kit.emf"]
    assert any("'wide.metric'" in e and "at most 30 dimensions" in e for e in errors)
    assert any("dimension name 'größe'" in e and "printable ASCII" in e for e in errors)
    assert counts().get(EXPORT_FAILED, "metrics") == before + 2


def test_the_trace_id_of_the_lambda_span_is_the_events(output: LambdaOutput) -> None:
    with testing.capture("receipts", metrics_exporter="emf") as tel:
        handler(EVENTS["eventbridge"], _context("req-9"))
    span = next(s for s in tel.spans() if s.attributes.get("faas.invocation_id") == "req-9")
    assert format_trace_id(span.context.trace_id) == TRACE
    assert span.attributes["faas.trigger"] == "pubsub"


_SHARED_STDOUT = """
import logging, sys, threading
import otel_kit
from opentelemetry import metrics

background = sys.argv[1] == "background"
handle = otel_kit.init("svc", metrics_exporter="emf", traces_exporter="none", logs_exporter="none",
                       log_background=background)
counter = metrics.get_meter("shop").create_counter("shop.orders")
log = logging.getLogger("shop")

def log_lines(n):
    for i in range(1500):
        log.info("line %d of writer %d", i, n, extra={"order": i})

def export_emf():
    for i in range(300):
        for channel in range(5):
            counter.add(1, {"channel": str(channel)})
        handle.force_flush()

threads = [threading.Thread(target=log_lines, args=(n,)) for n in range(2)] + [threading.Thread(target=export_emf)]
for t in threads: t.start()
for t in threads: t.join()
otel_kit.shutdown()
"""


@pytest.mark.parametrize("mode", ["background", "caller"])
def test_emf_documents_and_log_lines_share_stdout_one_json_object_a_line(mode: str) -> None:
    """Threads log while another exports EMF, all to one unbuffered stdout pipe, as in a Lambda function or a
    container. The EMF exporter used to write a document and its newline in two writes outside the log writer's
    lock, so a batch of log lines could land between them."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OTEL_METRIC_EXPORT_INTERVAL": "3600000"}
    done = subprocess.run(
        [sys.executable, "-c", _SHARED_STDOUT, mode], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    documents = logs = 0
    for line in done.stdout.splitlines():
        parsed = json.loads(line)  # exactly one JSON object a line, or this raises
        assert isinstance(parsed, dict)
        assert parsed.get("level") != "WARNING", parsed
        if "_aws" in parsed:
            documents += 1
        elif parsed.get("logger") == "shop":
            logs += 1
    assert logs == 3000
    assert documents == 1500  # 5 channels, 300 exports
