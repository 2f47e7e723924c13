"""JSON log lines: the fields a user greps for, joined to the trace, and errors logged once with their stack."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import warnings
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk._logs import Logger as SDKLogger
from opentelemetry.sdk._logs import LoggerProvider, LogRecordLimits, LogRecordProcessor
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import format_span_id, format_trace_id

import otel_kit
from otel_kit import testing
from otel_kit._internal import encoding, logs
from otel_kit._internal.logs import JSON_FIELDS, json_formatter

log = logging.getLogger("app")


def test_every_line_has_the_documented_fields_in_order(tel: testing.Capture) -> None:
    log.info("outside any span")
    with otel_kit.correlation_scope("c-1"):
        otel_kit.traced(lambda: log.warning("inside", extra={"order_id": 7}))()
    outside, inside = [line for line in tel.log_lines() if line["logger"] == "app"]
    assert list(outside)[: len(JSON_FIELDS)] == list(JSON_FIELDS)
    assert outside["trace_id"] is None and outside["correlation_id"] is None
    assert outside["timestamp"].endswith("+00:00")
    span = tel.spans()[0]
    assert inside["level"] == "WARNING"
    assert inside["service"] == "test-service"
    assert inside["trace_id"] == format_trace_id(span.context.trace_id)
    assert inside["span_id"] == format_span_id(span.context.span_id)
    assert inside["correlation_id"] == "c-1"
    assert inside["order_id"] == 7


def test_trace_ids_are_valid_xray_ids(tel: testing.Capture) -> None:
    otel_kit.traced(lambda: log.info("x"))()
    line = next(line for line in tel.log_lines() if line["logger"] == "app")
    version, epoch, unique = line["xray_trace_id"].split("-")
    assert version == "1" and len(epoch) == 8 and len(unique) == 24
    start = tel.spans()[0].start_time // 1_000_000_000
    assert abs(int(epoch, 16) - start) <= 1  # X-Ray rejects ids whose time part is off by more than 30 days


def test_newlines_and_control_characters_cannot_forge_a_line(tel: testing.Capture) -> None:
    forged = 'paid\n{"level": "INFO", "message": "refund approved"}\r\x1b[2J'
    log.info("user said %s", forged)
    text = tel.stream.getvalue()
    assert text.count("\n") == len(tel.log_lines())
    lines = tel.log_lines()
    assert [line["message"] for line in lines if line["logger"] == "app"] == [f"user said {forged}"]
    assert not any(line.get("message") == "refund approved" for line in lines)


def test_error_raised_through_nested_spans_is_logged_once_with_stack(tel: testing.Capture) -> None:
    @otel_kit.traced
    def charge() -> None:
        raise RuntimeError("card declined")

    @otel_kit.traced
    def pay() -> None:
        charge()

    @otel_kit.traced
    def place_order() -> None:
        pay()

    with pytest.raises(RuntimeError):
        place_order()
    errors = [line for line in tel.log_lines() if line["level"] == "ERROR"]
    assert len(errors) == 1
    error = errors[0]
    assert error["message"] == "charge failed: RuntimeError: card declined"
    assert "raise RuntimeError" in error["stack"]
    assert "Traceback" in error["stack"]
    charge_span = next(s for s in tel.spans() if s.name.endswith("charge"))
    assert error["span_id"] == format_span_id(charge_span.context.span_id)
    assert all(s.status.status_code.name == "ERROR" for s in tel.spans())


def test_two_separate_failures_are_each_logged(tel: testing.Capture) -> None:
    @otel_kit.traced
    def job(n: int) -> None:
        raise ValueError(f"bad input {n}")

    for n in range(2):
        with pytest.raises(ValueError):
            job(n)
    assert [line["message"] for line in tel.log_lines() if line["level"] == "ERROR"] == [
        "job failed: ValueError: bad input 0",
        "job failed: ValueError: bad input 1",
    ]


def test_logger_exception_keeps_the_stack_in_the_stack_field(tel: testing.Capture) -> None:
    try:
        raise KeyError("sku")
    except KeyError:
        log.exception("lookup failed")
    line = next(line for line in tel.log_lines() if line["message"] == "lookup failed")
    assert "KeyError: 'sku'" in line["stack"]


def test_log_records_are_also_exported_over_otlp_with_trace_context(tel: testing.Capture) -> None:
    with otel_kit.correlation_scope("c-otlp"):
        otel_kit.traced(lambda: log.info("exported"))()
    record = next(r for r in tel.log_records() if r.log_record.body == "exported")
    span = tel.spans()[0]
    assert record.log_record.trace_id == span.context.trace_id
    assert record.log_record.attributes is not None
    assert record.log_record.attributes["correlation_id"] == "c-otlp"
    assert record.resource.attributes["service.name"] == "test-service"
    # what the record carries in its own fields or its resource is not repeated, nor are the toolkit's markers
    assert set(record.log_record.attributes) == {"correlation_id"}


def _otlp_handler(*extra: LogRecordProcessor) -> tuple[logs._OtelKitOtlpHandler, InMemoryLogRecordExporter]:
    """The toolkit's OTLP handler on a provider with the toolkit's batch processor, then ``extra`` processors."""
    provider = LoggerProvider(
        resource=Resource.create({"service.name": "shapes"}),
        shutdown_on_exit=False,
        log_record_limits=LogRecordLimits(max_attributes=6, max_attribute_length=20),
    )
    exported = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]  # untyped upstream
    provider.add_log_record_processor(logs._LeanBatchLogRecordProcessor(exported))
    for processor in extra:
        provider.add_log_record_processor(processor)
    return logs._OtelKitOtlpHandler(provider), exported


def _exported(handler: logs._OtelKitOtlpHandler, exporter: InMemoryLogRecordExporter) -> list[dict[str, Any]]:
    handler._logger_provider.force_flush()  # type: ignore[attr-defined]
    request = encoding.encode_logs(exporter.get_finished_logs())
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                record.observed_time_unix_nano = 0  # the time of emitting: the one field that differs
    return [MessageToDict(r) for r in request.resource_logs]


def test_otlp_records_queued_directly_match_the_sdks_own_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """With only the toolkit's batch processors on the provider, the handler queues records itself instead of
    going through the SDK's logger (half the cost); what is exported must not change, whatever the record."""

    def record(level: int, message: str, extra: dict[str, Any] | None = None, name: str = "app.shapes") -> Any:
        return logging.getLogger(name).makeRecord(name, level, "f.py", 1, message, None, failure, extra=extra)

    failure = None
    records = [
        record(logging.INFO, "order 7 placed"),
        record(logging.WARNING, "typed", {"order_id": 7, "amount": 9.5, "paid": True, "sku": "A-1"}),
        record(logging.INFO, "event", {"otel.event.name": "order.placed"}, name="app.other"),
        record(logging.INFO, "not plain", {"items": [1, 2], "meta": {"k": "v"}, "when": datetime.now(UTC), "": "?"}),
        record(logging.INFO, "too long", {"note": "x" * 50}),
        record(logging.CRITICAL, "too many", {f"k{n}": n for n in range(9)}),
    ]
    try:
        raise ValueError("bad sku")
    except ValueError:
        failure = sys.exc_info()
    records.append(record(logging.ERROR, "failed"))
    direct, direct_out = _otlp_handler()
    sdk_way, sdk_out = _otlp_handler(SimpleLogRecordProcessor(InMemoryLogRecordExporter()))  # type: ignore[no-untyped-call]
    through_sdk_logger: list[Any] = []
    sdk_emit = SDKLogger.emit

    def counted_emit(self: SDKLogger, *args: Any, **kwargs: Any) -> None:
        through_sdk_logger.append(args)
        sdk_emit(self, *args, **kwargs)

    monkeypatch.setattr(SDKLogger, "emit", counted_emit)
    with warnings.catch_warnings(), trace.get_tracer("t").start_as_current_span("request") as span:
        warnings.simplefilter("ignore")  # the SDK warns of the dropped attributes, both ways
        for record in records:
            direct.handle(record)
        assert through_sdk_logger == []
        for record in records:
            sdk_way.handle(record)
    assert len(through_sdk_logger) == len(records)
    assert _exported(direct, direct_out) == _exported(sdk_way, sdk_out)
    exported = direct_out.get_finished_logs()
    assert [r.log_record.body for r in exported][:2] == ["order 7 placed", "typed"]
    assert {r.log_record.trace_id for r in exported} == {span.get_span_context().trace_id}
    by_body = {r.log_record.body: r for r in exported}
    assert by_body["too many"].dropped_attributes == 3
    assert by_body["too long"].log_record.attributes == {"note": "x" * 20}
    assert by_body["not plain"].log_record.attributes["items"] == (1, 2)
    assert by_body["failed"].log_record.attributes["exception.type"] == "ValueError"
    assert by_body["event"].log_record.event_name == "order.placed"


def test_a_processor_added_later_gets_the_records_the_sdks_way() -> None:
    handler, exported = _otlp_handler()
    record = logging.getLogger("app").makeRecord("app", logging.INFO, "f.py", 1, "first", None, None)
    handler.handle(record)
    added = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    handler._logger_provider.add_log_record_processor(SimpleLogRecordProcessor(added))  # type: ignore[attr-defined]
    handler.handle(logging.getLogger("app").makeRecord("app", logging.INFO, "f.py", 2, "second", None, None))
    handler._logger_provider.force_flush()  # type: ignore[attr-defined]
    assert [r.log_record.body for r in added.get_finished_logs()] == ["second"]
    assert [r.log_record.body for r in exported.get_finished_logs()] == ["first", "second"]


def test_the_opentelemetry_sdks_own_records_are_written_but_not_exported(tel: testing.Capture) -> None:
    for name in ("opentelemetry", "opentelemetry.exporter.otlp", "opentelemetry_app", "app"):
        logging.getLogger(name).warning("from %s", name)
    assert [line["message"] for line in tel.log_lines()] == [
        "from opentelemetry",
        "from opentelemetry.exporter.otlp",
        "from opentelemetry_app",
        "from app",
    ]
    assert [r.log_record.body for r in tel.log_records()] == ["from opentelemetry_app", "from app"]


def test_async_traced_function_and_concurrent_tasks_keep_their_own_ids(tel: testing.Capture) -> None:
    @otel_kit.traced
    async def handle(n: int) -> str | None:
        with otel_kit.correlation_scope(f"req-{n}"):
            await asyncio.sleep(0)  # yield to the other tasks
            log.info("handled %d", n)
            return otel_kit.get_correlation_id()

    async def main() -> list[str | None]:
        return list(await asyncio.gather(*(handle(n) for n in range(5))))

    assert asyncio.run(main()) == [f"req-{n}" for n in range(5)]
    for line in tel.log_lines():
        if line["logger"] == "app":
            n = int(line["message"].split()[-1])
            assert line["correlation_id"] == f"req-{n}"
    assert len({s.context.trace_id for s in tel.spans()}) == 5


def test_threads_handling_requests_at_once_never_see_each_others_ids(tel: testing.Capture) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    barrier = threading.Barrier(8)

    @otel_kit.traced
    def handle(n: int) -> str | None:
        with otel_kit.correlation_scope(f"thread-{n}"):
            barrier.wait(10)  # all eight requests are in flight together
            log.info("handled %d", n)
            return otel_kit.get_correlation_id()

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(handle, range(8))) == [f"thread-{n}" for n in range(8)]
    lines = [line for line in tel.log_lines() if line["logger"] == "app"]
    assert len(lines) == 8
    for line in lines:
        assert line["correlation_id"] == f"thread-{line['message'].split()[-1]}"
    assert otel_kit.get_correlation_id() is None  # nothing leaked back into the caller


@given(st.text(max_size=200), st.dictionaries(st.from_regex(r"x_[a-z]{1,8}", fullmatch=True), st.text(max_size=40)))
def test_any_message_and_fields_stay_on_one_json_line(message: str, fields: dict[str, str]) -> None:
    """Not even U+0085 or U+2028 (left raw by JSON, split on by str.splitlines) can break a line in two."""
    record = logging.LogRecord("app", logging.INFO, __file__, 1, message, None, None)
    record.__dict__.update(fields)
    line = json_formatter().format(record)
    assert len(line.splitlines()) == 1
    parsed = json.loads(line)
    assert parsed["message"] == message
    assert all(parsed[key] == value for key, value in fields.items())


def test_each_line_carries_the_ids_of_the_context_it_was_logged_in(tel: testing.Capture) -> None:
    """The filter works the ids out once per context: every change of span or correlation id must show."""
    tracer = trace.get_tracer("t")
    with otel_kit.correlation_scope("outer"), tracer.start_as_current_span("a") as a:
        log.info("one")
        log.info("two")
        with otel_kit.correlation_scope("inner"):
            log.info("three")
        with tracer.start_as_current_span("b") as b:
            log.info("four")
        log.info("five")
    log.info("six")
    lines = {line["message"]: line for line in tel.log_lines()}
    span_a, span_b = (format(s.get_span_context().span_id, "016x") for s in (a, b))
    seen = [(lines[m]["span_id"], lines[m]["correlation_id"]) for m in ("one", "two", "three", "four", "five", "six")]
    assert seen == [(span_a, "outer"), (span_a, "outer"), (span_a, "inner"), (span_b, "outer"), (span_a, "outer"),
                    (None, None)]  # fmt: skip


def test_ids_given_in_extra_are_kept_and_the_rest_come_from_the_context(tel: testing.Capture) -> None:
    """A caller logging on behalf of another trace (a consumer, a batch job) names its ids; the others still fill."""
    other = "5759e988bd862e3fe1be46a994272793"
    with otel_kit.correlation_scope("ctx-cid"), trace.get_tracer("t").start_as_current_span("s") as span:
        log.info("trace given", extra={"trace_id": other})
        log.info("correlation given", extra={"correlation_id": "given-cid"})
        log.info({"event": "dict message", "service": "not-this-one"})
    lines = {str(line.get("message") or line.get("event")): line for line in tel.log_lines()}
    assert lines["trace given"]["trace_id"] == other
    assert lines["trace given"]["xray_trace_id"] == "1-5759e988-bd862e3fe1be46a994272793"
    assert lines["trace given"]["span_id"] is None  # the current span belongs to another trace
    assert lines["trace given"]["correlation_id"] == "ctx-cid"
    given = lines["correlation given"]
    assert given["correlation_id"] == "given-cid"
    assert given["span_id"] == format_span_id(span.get_span_context().span_id)
    assert given["service"] == "test-service"
    assert lines["dict message"]["service"] == "test-service"
    assert list(lines["dict message"])[: len(JSON_FIELDS)] == list(JSON_FIELDS)
