"""``@traced``: a span around a sync or async function, with the exception recorded and re-raised unchanged."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

__all__ = ["traced"]

F = TypeVar("F", bound=Callable[..., Any])

_TRACER_NAME = "otel_kit"


@overload
def traced(func: F, /) -> F: ...


@overload
def traced(
    *,
    name: str | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> Callable[[F], F]: ...


def traced(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> Any:
    """Trace each call of the decorated function (``@traced`` or ``@traced(name=..., attributes=...)``).

    The span is named after the function's qualified name (``Class.method``; the enclosing function of a
    nested one is left out) unless ``name`` is given. An exception is recorded on
    the span, the status set to ERROR, and the exception re-raised as it was. Works for ``async def`` too; the
    span then covers the awaited body. Cost: one span per call (a no-op span when tracing is off).
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        span_name = name or fn.__qualname__.rsplit("<locals>.", 1)[-1]
        attrs = dict(attributes or {})
        attrs.setdefault("code.function.name", f"{fn.__module__}.{fn.__qualname__}")

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                tracer = trace.get_tracer(_TRACER_NAME)
                with tracer.start_as_current_span(span_name, kind=kind, attributes=attrs):
                    return await fn(*args, **kwargs)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            tracer = trace.get_tracer(_TRACER_NAME)
            with tracer.start_as_current_span(span_name, kind=kind, attributes=attrs):
                return fn(*args, **kwargs)

        return wrapper

    if func is not None:
        return decorate(func)
    return decorate
