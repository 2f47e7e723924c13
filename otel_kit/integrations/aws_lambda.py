"""``@lambda_handler``: a span per AWS Lambda invocation, flushed before the handler returns.

The parent is taken from the event when it carries one: the HTTP headers of an API Gateway event
(``traceparent``, ``X-Amzn-Trace-Id``), the first record of an SQS event (its ``AWSTraceHeader`` attribute and
``traceparent``/``baggage``/``X-Correlation-ID`` message attributes), or an EventBridge event's ``detail``
(``traceparent``, ``baggage``, ``correlation_id``); else from the ``_X_AMZN_TRACE_ID`` variable the Lambda runtime
sets for each invocation. The span carries ``faas.invocation_id`` (the request id), ``faas.coldstart``,
``faas.name`` and ``cloud.resource_id``; the correlation id comes from the event or is fresh, and is echoed in an
API Gateway response's headers. Every log line of the invocation carries its ``request_id``. Telemetry (spans,
logs, and metrics, as EMF lines with ``OTEL_METRICS_EXPORTER=emf``) is flushed before returning, because a frozen
Lambda sandbox may never run again.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind

from otel_kit._internal import correlation
from otel_kit._internal.logs import LAMBDA_REQUEST_ID
from otel_kit._internal.propagation import add_header, joined, lower_case_getter

__all__ = ["lambda_handler"]

H = TypeVar("H", bound=Callable[..., Any])
_cold_start = True


def _carrier(event: Any) -> dict[str, str]:
    """Headers to extract from: the event's HTTP headers, with the runtime's X-Ray header as a fallback."""
    carrier: dict[str, str] = {}
    trace_env = os.environ.get("_X_AMZN_TRACE_ID")
    if trace_env:
        carrier["x-amzn-trace-id"] = trace_env
    if not isinstance(event, Mapping):
        return carrier
    # API Gateway's REST APIs and ALB targets pass a repeated header's lines in multiValueHeaders (REST APIs keep
    # only the last one in headers); HTTP APIs join them with "," in headers themselves
    multi = event.get("multiValueHeaders")
    headers = multi if isinstance(multi, Mapping) and multi else event.get("headers")
    if isinstance(headers, Mapping):
        http: dict[str, str] = {}
        for name, value in headers.items():
            text = joined(value)
            if text is not None:
                add_header(http, str(name), text)  # names that differ only in case are one header
        carrier.update(http)
    detail = event.get("detail") if "detail-type" in event else None
    if isinstance(detail, Mapping):  # EventBridge: the producer put its context in the event's detail
        for key, header in (
            ("traceparent", "traceparent"),
            ("baggage", "baggage"),
            ("correlation_id", "x-correlation-id"),
        ):
            if isinstance(detail.get(key), str):
                carrier[header] = detail[key]
    record = _first_sqs_record(event)
    if record is not None:
        attributes = record.get("attributes")
        if isinstance(attributes, Mapping) and isinstance(attributes.get("AWSTraceHeader"), str):
            carrier["x-amzn-trace-id"] = attributes["AWSTraceHeader"]
        message_attributes = record.get("messageAttributes")
        if isinstance(message_attributes, Mapping):
            for name, value in message_attributes.items():
                if isinstance(value, Mapping) and isinstance(value.get("stringValue"), str):
                    carrier[str(name).lower()] = value["stringValue"]
    return carrier


def _first_sqs_record(event: Mapping[str, Any]) -> Mapping[str, Any] | None:
    records = event.get("Records")
    first = records[0] if isinstance(records, list) and records else None
    return first if isinstance(first, Mapping) and first.get("eventSource") == "aws:sqs" else None


def lambda_handler(handler: H | None = None, *, flush_timeout_ms: int = 2000) -> Any:
    """Decorate a Lambda handler ``(event, context)``; use as ``@lambda_handler`` or ``@lambda_handler(...)``."""

    def decorate(fn: H) -> H:
        @functools.wraps(fn)
        def wrapper(event: Any, lambda_context: Any) -> Any:
            global _cold_start
            cold, _cold_start = _cold_start, False
            carrier = _carrier(event)
            ctx = propagate.extract(carrier, getter=lower_case_getter)
            is_http = isinstance(event, Mapping) and isinstance(event.get("headers"), Mapping)
            is_queue = isinstance(event, Mapping) and (_first_sqs_record(event) is not None or "detail-type" in event)
            attrs: dict[str, Any] = {
                "faas.trigger": "http" if is_http else "pubsub" if is_queue else "other",
                "faas.coldstart": cold,
                "faas.invocation_id": str(getattr(lambda_context, "aws_request_id", "")),
                "faas.name": str(
                    getattr(lambda_context, "function_name", os.environ.get("AWS_LAMBDA_FUNCTION_NAME", ""))
                ),
            }
            arn = getattr(lambda_context, "invoked_function_arn", None)
            if arn:
                attrs["cloud.resource_id"] = str(arn)
            token = context.attach(ctx)
            request_token = LAMBDA_REQUEST_ID.set(str(attrs["faas.invocation_id"]) or None)
            try:
                tracer = trace.get_tracer("otel_kit.lambda")
                with tracer.start_as_current_span(
                    str(attrs["faas.name"] or fn.__name__), kind=SpanKind.SERVER, attributes=attrs
                ):
                    result = fn(event, lambda_context)
                if is_http and isinstance(result, dict):
                    headers = result.setdefault("headers", {})
                    if isinstance(headers, dict):
                        headers[correlation.HEADER] = correlation.get_correlation_id() or ""
                return result
            finally:
                context.detach(token)
                LAMBDA_REQUEST_ID.reset(request_token)
                _flush(flush_timeout_ms)

        return wrapper  # type: ignore[return-value]

    if handler is not None:
        return decorate(handler)
    return decorate


def _flush(timeout_ms: int) -> None:
    from otel_kit._internal.main import current_handle

    handle = current_handle()
    if handle is not None:
        handle.force_flush(timeout_ms)
