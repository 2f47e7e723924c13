"""HTTP servers: the correlation id middleware (ASGI and WSGI) around the contrib server instrumentations.

The middleware sits outermost. It picks the request's correlation id (``X-Correlation-ID``, else
``X-Request-ID``, else the ``correlation_id`` baggage entry, else a fresh one; malformed values are replaced),
writes it back into the request as ``X-Correlation-ID`` so the tracing middleware inside extracts the same id,
and echoes it on the response, error responses included.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter

from otel_kit._internal import correlation
from otel_kit._internal.propagation import CorrelationPropagator

__all__ = ["CorrelationASGIMiddleware", "CorrelationWSGIMiddleware", "incoming_correlation_id"]

_HEADER_BYTES = correlation.HEADER.lower().encode("latin-1")
_propagator = CorrelationPropagator()


def incoming_correlation_id(carrier: Any, getter: Getter[Any]) -> str:
    """The correlation id a request carries (validated), or a fresh one."""
    ctx = Context()
    baggage_header = getter.get(carrier, "baggage")
    if baggage_header:
        from opentelemetry.baggage.propagation import W3CBaggagePropagator

        ctx = W3CBaggagePropagator().extract(carrier, ctx, getter=getter)
    return correlation.get_correlation_id(_propagator.extract(carrier, ctx, getter=getter)) or ""


class _ScopeGetter(Getter[MutableMapping[str, Any]]):
    def get(self, carrier: MutableMapping[str, Any], key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [v.decode("latin-1") for k, v in carrier.get("headers") or () if k.lower() == name]
        return values or None

    def keys(self, carrier: MutableMapping[str, Any]) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier.get("headers") or ()]


class _EnvironGetter(Getter[MutableMapping[str, Any]]):
    def get(self, carrier: MutableMapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: MutableMapping[str, Any]) -> list[str]:
        return [k for k in carrier if k.startswith("HTTP_")]


_scope_getter = _ScopeGetter()
_environ_getter = _EnvironGetter()

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]
]


class CorrelationASGIMiddleware:
    """ASGI middleware: one correlation id per HTTP request, echoed in the ``X-Correlation-ID`` response header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        cid = incoming_correlation_id(scope, _scope_getter)
        value = cid.encode("latin-1")
        headers = [(k, v) for k, v in scope.get("headers") or () if k.lower() != _HEADER_BYTES]
        scope = dict(scope, headers=[*headers, (_HEADER_BYTES, value)])

        async def send_with_id(message: Any) -> None:
            if message.get("type") == "http.response.start":
                out = [(k, v) for k, v in message.get("headers") or () if k.lower() != _HEADER_BYTES]
                message = dict(message, headers=[*out, (_HEADER_BYTES, value)])
            await send(message)

        await self.app(scope, receive, send_with_id)


class CorrelationWSGIMiddleware:
    """WSGI middleware: one correlation id per HTTP request, echoed in the ``X-Correlation-ID`` response header."""

    _ENVIRON_KEY = "HTTP_" + correlation.HEADER.upper().replace("-", "_")

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        cid = incoming_correlation_id(environ, _environ_getter)
        environ[self._ENVIRON_KEY] = cid

        def start_with_id(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            kept = [(k, v) for k, v in headers if k.lower() != correlation.HEADER.lower()]
            return start_response(status, [*kept, (correlation.HEADER, cid)], exc_info)

        return self.app(environ, start_with_id)
