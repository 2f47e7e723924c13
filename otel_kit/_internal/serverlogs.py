"""The servers' own loggers, taken over: their records become the toolkit's JSON lines, and an error is logged once.

uvicorn and gunicorn give their loggers handlers of their own (uvicorn: ``uvicorn`` to stderr, ``uvicorn.access``
to stdout; gunicorn: ``gunicorn.error`` to stderr, ``gunicorn.access`` where ``--access-logfile`` says) and stop
them from propagating, so their lines come out as plain text between the JSON lines. ``take_over()`` removes their
console handlers and lets their records propagate to the root logger, where the toolkit's handlers write them as
JSON with the trace and correlation ids. ``init()`` calls it, and so does the ASGI middleware when the server starts
the app's lifespan (``uvicorn.run()`` configures its loggers again after the app module is imported). A server's
lines written before either (``Started server process``) stay as the server wrote them, on stderr.

An unhandled exception is logged once, by the toolkit, at the innermost span that recorded it (with its stack and
the trace ids). A server's own record of that same exception (uvicorn's ``Exception in ASGI application``,
Flask's ``Exception on /path [GET]``) is dropped, but only when a span of the toolkit recorded it: with tracing off
or the request not sampled, the server's record is the only one and is kept.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from opentelemetry import trace

__all__ = ["SERVER_LOGGERS", "drop_server_duplicates", "mark_logged", "take_over"]

SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn.error", "gunicorn.access")
_LOGGED = "_otel_kit_logged"


def mark_logged(exc: BaseException) -> None:
    """Note that the toolkit logs ``exc`` with its span, so a server's record of it is dropped."""
    try:
        setattr(exc, _LOGGED, True)
    except Exception:  # an exception type that takes no attributes: the server's record stays
        return


def recorded_by_toolkit(span: Any) -> bool:
    """Whether ``span`` records on a provider of the toolkit, whose processor logs the exceptions it ends with."""
    from otel_kit._internal.tracing import KitSpanProcessor

    return bool(span.is_recording()) and isinstance(getattr(span, "_span_processor", None), KitSpanProcessor)


class _DropLoggedTwice(logging.Filter):
    """Drops a server's record of an exception the toolkit logs with its span (``mark_logged``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not getattr(exc, _LOGGED, False)


class _DropWhileSpanRecords(logging.Filter):
    """For a framework that logs a request's exception while the request's span is still open (Flask's
    ``log_exception``): the span records the exception as it ends and the toolkit logs it then, with its stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or record.exc_info[1] is None:
            return True
        if recorded_by_toolkit(trace.get_current_span()):
            mark_logged(record.exc_info[1])
            return False
        return True


def _console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (
        sys.stdout,
        sys.stderr,
        sys.__stdout__,
        sys.__stderr__,
    )


def take_over() -> None:
    """Route the server loggers' records to the root logger's handlers (idempotent; file handlers are kept)."""
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if _console(handler):
                logger.removeHandler(handler)
        if not logger.handlers:
            logger.propagate = True
        if not any(isinstance(f, _DropLoggedTwice) for f in logger.filters):
            logger.addFilter(_DropLoggedTwice())


def drop_server_duplicates(logger: logging.Logger) -> None:
    """Drop the records ``logger`` writes of a request's exception that the request's span logs (Flask's app logger;
    its default handler to stderr is removed too)."""
    for handler in list(logger.handlers):
        if _console(handler):
            logger.removeHandler(handler)
    if not any(isinstance(f, _DropWhileSpanRecords) for f in logger.filters):
        logger.addFilter(_DropWhileSpanRecords())
