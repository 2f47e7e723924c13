"""The background log writer: the request thread queues a record, a thread of the toolkit formats and sends it.

A JSON line on stdout and an OTLP log record cost a request thread tens of microseconds each, and a write to a
stdout pipe nobody reads blocks it outright. With ``OTEL_KIT_LOG_BACKGROUND`` on (the default) the root logger
gets one ``BackgroundLogHandler`` in front of the toolkit's stdout and OTLP handlers. On the calling thread it
does only what has to happen there:

- the toolkit's filter: secrets scrubbed, and ``trace_id``, ``span_id`` and ``correlation_id`` read from the
  caller's context;
- the message rendered with its arguments, so objects changed after the call do not change the line;
- the caller's OpenTelemetry context captured, so the OTLP record carries the caller's span.

Then it queues the record. A thread named ``otel-kit-logs`` hands the queued records to the handlers in order,
every 0.2 s or as soon as 256 wait, and writes the lines of a batch to stdout in one write.

Nothing is dropped:

- a record at ERROR or above, or with an exception or a stack, is handled at once on the calling thread, after
  everything queued before it, so the lines that explain a crash are out before the crash goes on;
- a full queue (8,192 records) is emptied by the thread that finds it full: that caller waits, nothing is lost;
- ``force_flush()``, ``shutdown()``, ``logging.shutdown()`` at exit and the end of a Lambda invocation empty
  the queue. A forked child starts with an empty queue (its parent writes what it had queued).

A stdout that fails (a closed pipe) or a handler that raises is reported on stderr, as ``logging`` reports
it, and the writer goes on with the next records.

What can still be lost: lines queued in the last 0.2 s before the process is killed (SIGKILL, ``os._exit``)
without shutting down. Set ``OTEL_KIT_LOG_BACKGROUND=false`` to have every record handled on its caller's
thread.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sys
import threading
import traceback
import weakref
from collections.abc import Sequence
from typing import Any

from opentelemetry import context
from opentelemetry.context import Context

__all__ = ["BackgroundLogHandler"]

_Entry = tuple[logging.LogRecord, Context]


# Every writer of the process, so that one fork hook, registered once, gives each a fresh queue in a forked child
# (hooks cannot be removed: one per writer would pile up in a process that calls init() many times).
_WRITERS: weakref.WeakSet[BackgroundLogHandler] = weakref.WeakSet()


def _start_fresh_after_fork() -> None:
    for writer in list(_WRITERS):
        writer._start_fresh()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_start_fresh_after_fork)


class BackgroundLogHandler(logging.Handler):
    """Queue each record (after ``record_filter``) and hand it to ``handlers`` on a background thread."""

    def __init__(
        self,
        handlers: Sequence[logging.Handler],
        record_filter: logging.Filter,
        *,
        interval_s: float = 0.2,
        batch: int = 256,
        limit: int = 8192,
    ) -> None:
        super().__init__()
        self.handlers = list(handlers)
        self._streams = [h for h in self.handlers if isinstance(h, logging.StreamHandler)]  # written once a batch
        self._filter = record_filter
        self._interval_s = interval_s
        self._batch = batch
        self._limit = limit
        self._closed = False
        self._start_fresh()
        _WRITERS.add(self)

    def _start_fresh(self) -> None:
        """A new, empty queue, its lock and its wake-up; the thread starts with the first queued record."""
        self._queue: collections.deque[_Entry] = collections.deque()
        self._wake = threading.Event()
        # re-entrant: a handler that logs an ERROR while it handles a batch drains again on the same thread
        self._drain_lock = threading.RLock()
        self._thread: threading.Thread | None = None

    def handle(self, record: logging.LogRecord) -> bool:
        """Queue ``record``, or hand it over now (see the module docstring); never raises for a bad record."""
        if not self._filter.filter(record):
            return False
        if record.args:  # the scrubbing filter has usually done this already
            with contextlib.suppress(Exception):  # a bad format is left to the formatter, which reports it
                record.msg, record.args = record.getMessage(), None
        entry = (record, context.get_current())
        queue = self._queue
        if (
            record.levelno >= logging.ERROR
            or record.exc_info
            or record.exc_text
            or record.stack_info
            or self._closed
            or len(queue) >= self._limit
        ):
            self._drain(entry)
            return True
        queue.append(entry)
        if self._thread is None:
            self._start_thread()
        if len(queue) >= self._batch:
            self._wake.set()
        return True

    def emit(self, record: logging.LogRecord) -> None:  # handle() does the work; kept for the Handler interface
        self.handle(record)

    def flush(self) -> None:
        """Hand every queued record to the handlers now, on this thread."""
        self._drain()

    def close(self) -> None:
        """Hand over what is queued and stop the thread; later records are handled on their caller's thread."""
        self._closed = True
        self._drain()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(1.0, self._interval_s * 5))
        super().close()

    def _start_thread(self) -> None:
        with self._drain_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="otel-kit-logs", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self._interval_s)
            self._wake.clear()
            try:
                self._drain()
            except Exception:  # whatever it is, it must not stop the writer
                traceback.print_exc(file=sys.stderr)

    def _drain(self, last: _Entry | None = None) -> None:
        with self._drain_lock:
            queue = self._queue
            batch = [queue.popleft() for _ in range(len(queue))]
            if last is not None:
                batch.append(last)
            if batch:
                self._deliver(batch)

    def _deliver(self, batch: list[_Entry]) -> None:
        lines: dict[logging.Handler, list[str]] = {stream: [] for stream in self._streams}  # each stream's, in order
        for record, ctx in batch:
            token = context.attach(ctx)
            try:
                for handler in self.handlers:
                    if record.levelno >= handler.level:
                        try:
                            if not isinstance(handler, logging.StreamHandler):
                                handler.handle(record)
                            elif handler.filter(record):
                                lines[handler].append(handler.format(record) + handler.terminator)
                        except RecursionError:  # as the standard handlers do: not reported, re-raised
                            raise
                        except Exception:  # reported as logging reports it; the batch goes on
                            handler.handleError(record)
            finally:
                context.detach(token)
        for stream in self._streams:
            if lines[stream]:
                _write_once(stream, "".join(lines[stream]), batch[-1][0])


def _write_once(handler: logging.StreamHandler[Any], text: str, last: logging.LogRecord) -> None:
    """A batch's lines in one write and one flush. One write a line would, on an unbuffered stdout
    (``PYTHONUNBUFFERED=1``, set in most container images), be one system call a line, each of which lets the
    request thread take the interpreter lock and makes the writer wait to get it back: a hand-over of the lock,
    both ways, for every line."""
    handler.acquire()
    try:
        handler.stream.write(text)
        handler.stream.flush()
    except Exception:  # a closed or broken stdout: reported as StreamHandler.emit reports it
        handler.handleError(last)
    finally:
        handler.release()
