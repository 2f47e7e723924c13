"""The background log writer: a log call queues its line, and nothing queued is lost, reordered or changed."""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from opentelemetry import trace

import otel_kit
from demo_services.stack.servers import wait_until
from otel_kit import testing
from otel_kit._internal.logs import TelemetryContextFilter, json_formatter
from otel_kit._internal.logwriter import BackgroundLogHandler

_names = itertools.count()
Writer = tuple[logging.Logger, BackgroundLogHandler, io.StringIO]


def _messages(text: str) -> list[str]:
    return [json.loads(line)["message"] for line in text.splitlines()]


class _StalledStream(io.StringIO):
    """Standard output that nobody reads for a while: ``write`` waits until ``go`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()

    def write(self, text: str) -> int:
        self.go.wait(10)
        return super().write(text)


def test_by_default_a_log_call_returns_while_stdout_is_stalled_and_its_line_follows() -> None:
    stream = _StalledStream()
    testing.reset()
    handle = otel_kit.init(
        "stalled", traces_exporter="none", metrics_exporter="none", logs_exporter="none", log_stream=stream
    )
    try:
        logging.getLogger("app").info("logged while stdout is stalled")
        assert stream.getvalue() == ""  # returned before its line could be written
        stream.go.set()
        handle.force_flush()
        assert _messages(stream.getvalue()) == ["logged while stdout is stalled"]
    finally:
        stream.go.set()
        testing.reset()


def test_a_bad_settings_warning_is_on_stdout_when_init_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "seven")
    stream = io.StringIO()
    testing.reset()
    try:
        quiet = {"traces_exporter": "none", "metrics_exporter": "none", "logs_exporter": "none"}
        otel_kit.init("misconfigured", **quiet, log_stream=stream)
        (warning,) = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert warning["level"] == "WARNING" and "OTEL_TRACES_SAMPLER_ARG" in warning["message"]
    finally:
        testing.reset()


def _behind_writer(
    stream: IO[str], *more: logging.Handler, **options: Any
) -> tuple[logging.Logger, BackgroundLogHandler]:
    """A logger of its own whose JSON lines go to ``stream`` (and its records to ``more`` handlers) through a
    background writer; unless ``options`` say otherwise, its thread never wakes by itself."""
    record_filter = TelemetryContextFilter("writer-service")
    stdout = logging.StreamHandler(stream)
    stdout.setFormatter(json_formatter())
    stdout.addFilter(record_filter)
    handler = BackgroundLogHandler([stdout, *more], record_filter, **{"interval_s": 3600, **options})
    logger = logging.getLogger(f"writer.{next(_names)}")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    return logger, handler


@pytest.fixture
def writer() -> Iterator[Writer]:
    """A logger behind a background writer whose thread never wakes by itself: only what the caller does runs."""
    stream = io.StringIO()
    logger, handler = _behind_writer(stream, limit=4)
    try:
        yield logger, handler, stream
    finally:
        handler.close()


def test_an_error_is_written_at_once_after_the_lines_queued_before_it(writer: Writer) -> None:
    logger, _, stream = writer
    logger.info("reserving stock")
    assert stream.getvalue() == ""
    logger.error("payment failed")
    assert _messages(stream.getvalue()) == ["reserving stock", "payment failed"]
    try:
        raise ValueError("card declined")
    except ValueError:
        logger.warning("retrying", exc_info=True)  # a stack, at any level, is written at once too
    assert json.loads(stream.getvalue().splitlines()[-1])["stack"].endswith("ValueError: card declined")


def test_the_line_shows_the_arguments_as_they_were_at_the_call(writer: Writer) -> None:
    logger, handler, stream = writer
    items = ["book"]
    logger.info("cart %s", items)
    items.append("lamp")
    handler.flush()
    assert _messages(stream.getvalue()) == ["cart ['book']"]


class _CountingFile(io.FileIO):
    """A file that counts the system calls written to it."""

    writes = 0

    def write(self, data: Any) -> int:
        self.writes += 1
        return super().write(data)


def test_a_batch_reaches_an_unbuffered_stdout_in_one_write(tmp_path: Path) -> None:
    # stdout as PYTHONUNBUFFERED=1 (set in most container images) makes it: every write is a system call, and
    # every system call lets the request thread take the interpreter lock from the writer.
    raw = _CountingFile(tmp_path / "stdout", "w")
    stdout = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    logger, handler = _behind_writer(stdout)
    try:
        for n in range(50):
            logger.info("line %d", n)
        assert raw.writes == 0
        handler.flush()
        assert raw.writes == 1
        assert _messages((tmp_path / "stdout").read_text()) == [f"line {n}" for n in range(50)]
    finally:
        handler.close()
        stdout.close()


def test_a_full_queue_is_written_by_its_caller_and_no_line_is_lost(writer: Writer) -> None:
    logger, handler, stream = writer
    for n in range(10):
        logger.info("line %d", n)
    assert len(stream.getvalue().splitlines()) >= 6  # the queue (limit 4) never held more than 4 of the 10
    handler.flush()
    assert _messages(stream.getvalue()) == [f"line {n}" for n in range(10)]


def test_the_exported_record_carries_the_span_it_was_logged_in() -> None:
    with testing.capture(log_background=True) as tel:
        with trace.get_tracer("test").start_as_current_span("checkout") as span:
            logging.getLogger("app").info("in the span")
        assert tel.log_records() == []  # still queued: the writer's thread exports it
        tel.handle.force_flush()
        (record,) = [r for r in tel.log_records() if r.log_record.body == "in the span"]
        assert record.log_record.trace_id == span.get_span_context().trace_id
        assert record.log_record.span_id == span.get_span_context().span_id
        assert tel.log_lines()[-1]["trace_id"] == format(span.get_span_context().trace_id, "032x")


def test_shutdown_writes_every_queued_line() -> None:
    with testing.capture(log_background=True) as tel:
        for n in range(3):
            logging.getLogger("app").info("queued %d", n)
        otel_kit.shutdown()
        assert [line["message"] for line in tel.log_lines() if line["logger"] == "app"] == [
            "queued 0",
            "queued 1",
            "queued 2",
        ]


def test_a_forked_child_does_not_write_its_parents_queued_lines_again(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    with out.open("a", buffering=1) as stream:
        logger, handler = _behind_writer(stream)
        logger.info("queued in the parent")
        pid = os.fork()
        if pid == 0:  # the child: log, write, and leave without running the parent's cleanup
            logger.info("from the child")
            handler.flush()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        handler.close()
    assert os.waitstatus_to_exitcode(status) == 0
    assert sorted(_messages(out.read_text())) == ["from the child", "queued in the parent"]


def test_writers_share_one_fork_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fork hook cannot be removed: a process calling init() again and again must not pile one up per writer."""
    registered: list[object] = []
    monkeypatch.setattr(os, "register_at_fork", lambda **hooks: registered.append(hooks))
    for _ in range(3):
        _behind_writer(io.StringIO())[1].close()
    assert registered == []


class _FailingOnce(logging.Filter):
    """A handler's filter that raises the first time, as a faulty third-party handler might."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a handler broke")
        return True


class _BrokenPipeOnce(io.StringIO):
    """Standard output whose reader went away once: the first flush raises."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = True

    def flush(self) -> None:
        if self.broken:
            self.broken = False
            raise BrokenPipeError("stdout closed")
        super().flush()


def test_a_broken_stdout_or_handler_is_reported_and_the_writer_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    stream = _BrokenPipeOnce()
    faulty = logging.StreamHandler(io.StringIO())
    faulty.addFilter(_FailingOnce())
    # the thread wakes only when two records wait: each batch is exactly the two lines logged together
    logger, handler = _behind_writer(stream, faulty, batch=2)
    expected = ["first batch, first line", "first batch, second line", "second batch", "second batch, too"]
    try:
        for message in expected[:2]:
            logger.info(message)
        wait_until(lambda: not stream.broken, 10, "the writer's first batch")
        for message in expected[2:]:
            logger.info(message)  # written by the writer's thread, which survived both failures
        wait_until(lambda: "second batch, too" in stream.getvalue(), 10, "the second batch")
    finally:
        handler.close()
    assert _messages(stream.getvalue()) == expected
    reported = capsys.readouterr().err
    assert "BrokenPipeError: stdout closed" in reported and "RuntimeError: a handler broke" in reported
