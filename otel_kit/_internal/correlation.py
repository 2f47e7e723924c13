"""The correlation id: one id per business request, carried next to the trace through every hop.

It lives in OpenTelemetry baggage under ``correlation_id`` (baggage is held by OpenTelemetry's context, a
``contextvars.ContextVar``, so it follows threads started with a copied context and asyncio tasks). On the wire
it travels as ``X-Correlation-ID`` and in the W3C ``baggage`` header; ``X-Request-ID`` is accepted on the way in.

Only ids of 1 to 128 characters from ``[A-Za-z0-9._:-]`` are accepted: anything else (newlines, quotes, control
characters, oversize values) is replaced by a fresh id, so an incoming header can never forge a log line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from random import getrandbits

from opentelemetry import baggage, context
from opentelemetry.context import Context

__all__ = [
    "BAGGAGE_KEY",
    "HEADER",
    "REQUEST_ID_HEADER",
    "correlation_scope",
    "get_correlation_id",
    "new_correlation_id",
    "valid_correlation_id",
    "with_correlation_id",
    "with_fresh_correlation_id",
]

HEADER = "X-Correlation-ID"
HEADER_BYTES = HEADER.lower().encode("latin-1")  # as ASGI carries header names
REQUEST_ID_HEADER = "X-Request-ID"
BAGGAGE_KEY = "correlation_id"
MAX_LENGTH = 128
_VALID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:\-]{{0,{MAX_LENGTH - 1}}}")


# a correlation id names a request, it guards nothing: the process's fast generator suffices (uuid.uuid4() asks
# the kernel for 16 bytes each time, a system call on every request without an id). ``random`` is reseeded in
# forked children, so workers do not repeat each other's ids.
_VERSION_4 = (0x4000 << 64) | (0x8000 << 48)  # the version and variant bits of a random UUID
_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))


def new_correlation_id() -> str:
    """A fresh random id in the form of a UUID4 (36 characters)."""
    h = f"{getrandbits(128) & _CLEAR | _VERSION_4:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def valid_correlation_id(value: object) -> str | None:
    """``value`` if it is an acceptable id, else None. Never raises."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str) or len(value) > MAX_LENGTH:
        return None
    return value if _VALID.fullmatch(value) else None


def get_correlation_id(ctx: Context | None = None) -> str | None:
    """The correlation id of ``ctx`` (default: the current context), or None when there is none."""
    return valid_correlation_id(baggage.get_baggage(BAGGAGE_KEY, ctx))


def with_correlation_id(correlation_id: str, ctx: Context | None = None) -> Context:
    """A copy of ``ctx`` carrying ``correlation_id`` (replaced by a fresh id when it is not acceptable)."""
    cid = valid_correlation_id(correlation_id) or new_correlation_id()
    return baggage.set_baggage(BAGGAGE_KEY, cid, ctx)


def with_fresh_correlation_id(ctx: Context | None = None) -> Context:
    """A copy of ``ctx`` carrying a fresh id (valid by construction: no check)."""
    return baggage.set_baggage(BAGGAGE_KEY, new_correlation_id(), ctx)


@contextmanager
def correlation_scope(correlation_id: str | None = None) -> Iterator[str]:
    """Run a block under ``correlation_id`` (a fresh one when None or invalid); yields the id in force.

    Use it where work starts outside an instrumented server or consumer: a batch job, a scheduled task.
    """
    ctx = with_correlation_id(correlation_id or new_correlation_id())
    token = context.attach(ctx)
    try:
        yield get_correlation_id(ctx) or ""
    finally:
        context.detach(token)
