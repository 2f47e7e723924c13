"""WSGI servers: picking the request's correlation id, and the WSGI middleware around the contrib Flask one.

The correlation id is ``X-Correlation-ID``, else ``X-Request-ID``, else the ``correlation_id`` baggage entry,
else a fresh one; malformed values are replaced. The middleware sits outermost, writes the id back into the
request as ``X-Correlation-ID`` so the tracing middleware inside extracts the same id, and echoes it on the
response, error responses included. (ASGI apps get ``asgi.OtelKitASGIMiddleware``, which does both jobs.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter

from otel_kit._internal import correlation
from otel_kit._internal.propagation import CorrelationPropagator

__all__ = ["CorrelationWSGIMiddleware", "incoming_correlation_id"]

_propagator = CorrelationPropagator()


def incoming_correlation_id(carrier: Any, getter: Getter[Any]) -> str:
    """The correlation id a request carries (validated), or a fresh one."""
    ctx = Context()
    baggage_header = getter.get(carrier, "baggage")
    if baggage_header:
        from opentelemetry.baggage.propagation import W3CBaggagePropagator

        ctx = W3CBaggagePropagator().extract(carrier, ctx, getter=getter)
    return correlation.get_correlation_id(_propagator.extract(carrier, ctx, getter=getter)) or ""


class _EnvironGetter(Getter[MutableMapping[str, Any]]):
    def get(self, carrier: MutableMapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: MutableMapping[str, Any]) -> list[str]:
        return [k for k in carrier if k.startswith("HTTP_")]


_environ_getter = _EnvironGetter()


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
