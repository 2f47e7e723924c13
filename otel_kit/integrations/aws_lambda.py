"""``@lambda_handler``: a span per AWS Lambda invocation, flushed before the handler returns.

The parent is taken from the event when it carries one: the HTTP headers of an API Gateway event
(``traceparent``, ``X-Amzn-Trace-Id``), the record of a one-message SQS event (its ``AWSTraceHeader`` attribute and
``traceparent``/``baggage``/``X-Correlation-ID`` message attributes), or an EventBridge event's ``detail``
(``traceparent``, ``baggage``, ``correlation_id``); else from the ``_X_AMZN_TRACE_ID`` variable the Lambda runtime
sets for each invocation.

An SQS batch is many requests: as the handler iterates over ``event["Records"]``, each record gets its own span,
continuing its producer's trace (from its message attributes or ``AWSTraceHeader``, or, for a message SNS or
EventBridge delivered, from the notification or event in its body), and its own correlation id in every log line
written while it is processed; a record the handler raised on, or reported in ``batchItemFailures``, ends its span
as an error (``_SqsBatch``). The span carries ``faas.invocation_id`` (the request id), ``faas.coldstart``,
``faas.name`` and ``cloud.resource_id``; the correlation id comes from the event or is fresh, and is echoed in an
API Gateway response's headers. Every log line of the invocation carries its ``request_id``. Telemetry (spans,
logs, and metrics, as EMF lines with ``OTEL_METRICS_EXPORTER=emf``) is flushed before returning, because a frozen
Lambda sandbox may never run again.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Generator, Iterator, Mapping
from time import time_ns
from typing import Any, TypeVar

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_kit._internal import correlation
from otel_kit._internal.logs import LAMBDA_REQUEST_ID
from otel_kit._internal.propagation import add_header, joined, lower_case_getter

__all__ = ["lambda_handler"]

H = TypeVar("H", bound=Callable[..., Any])
_cold_start = True
# where an EventBridge event's producer puts its context, and the header each field stands for
_DETAIL_FIELDS = (("traceparent", "traceparent"), ("baggage", "baggage"), ("correlation_id", "x-correlation-id"))


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
        for key, header in _DETAIL_FIELDS:
            if isinstance(detail.get(key), str):
                carrier[header] = detail[key]
    records = _sqs_records(event)
    if records is not None and len(records) == 1:  # one message: the invocation is its processing
        carrier.update(_record_carrier(records[0]))
    return carrier


def _sqs_records(event: Mapping[str, Any]) -> list[Any] | None:
    """The records of an SQS event, or None for any other event."""
    records = event.get("Records")
    if not isinstance(records, list) or not records:
        return None
    first = records[0]
    return records if isinstance(first, Mapping) and first.get("eventSource") == "aws:sqs" else None


def _record_carrier(record: Any) -> dict[str, str]:
    """The context an SQS record carries: its ``AWSTraceHeader`` and string message attributes; for a message
    that SNS or EventBridge delivered to the queue, the notification's message attributes or the event's
    ``detail`` in its body."""
    carrier: dict[str, str] = {}
    if not isinstance(record, Mapping):
        return carrier
    attributes = record.get("attributes")
    if isinstance(attributes, Mapping) and isinstance(attributes.get("AWSTraceHeader"), str):
        carrier["x-amzn-trace-id"] = attributes["AWSTraceHeader"]
    message_attributes = record.get("messageAttributes")
    if isinstance(message_attributes, Mapping):
        for name, value in message_attributes.items():
            if isinstance(value, Mapping) and isinstance(value.get("stringValue"), str):
                add_header(carrier, str(name), value["stringValue"])
    body = record.get("body")
    if isinstance(body, str) and body.startswith("{") and ('"Notification"' in body or '"detail-type"' in body):
        try:
            inner = json.loads(body)
        except ValueError:
            return carrier
        if isinstance(inner, Mapping) and inner.get("Type") == "Notification":  # SNS -> SQS
            sns_attributes = inner.get("MessageAttributes")
            if isinstance(sns_attributes, Mapping):
                for name, value in sns_attributes.items():
                    if isinstance(value, Mapping) and isinstance(value.get("Value"), str):
                        carrier.setdefault(str(name).lower(), value["Value"])
        elif isinstance(inner, Mapping) and isinstance(inner.get("detail"), Mapping):  # EventBridge -> SQS
            for key, header in _DETAIL_FIELDS:
                if isinstance(inner["detail"].get(key), str):
                    carrier.setdefault(header, inner["detail"][key])
    return carrier


class _SqsBatch:
    """One span per record of an SQS batch, as the handler iterates over ``event["Records"]``.

    A record's span (``process <queue>``, kind CONSUMER) continues the producer's trace when the record carries
    one the invocation does not continue already (linking to the invocation's span), else is a child of the
    invocation's span; while the handler works on the record, its context (and so its correlation id, from the
    message or fresh) is the current one. The span ends when the handler moves on, its end time noted; it is
    closed when the invocation ends, as an error when the handler raised while on it or reported the record in
    ``batchItemFailures``.
    """

    def __init__(self, tracer: trace.Tracer, invocation: trace.Span) -> None:
        self._tracer = tracer
        self._invocation = invocation
        self._spans: list[tuple[str, trace.Span, int | None]] = []  # message id, span, noted end time
        self._iterations: list[Generator[Any, None, None]] = []

    def iterate(self, records: Iterator[Any]) -> Iterator[Any]:
        """``records`` one by one, each in its own span and context (see the class docstring)."""
        iteration = self._iterate(records)
        self._iterations.append(iteration)
        return iteration

    def _iterate(self, records: Iterator[Any]) -> Generator[Any, None, None]:
        for record in records:
            message_id = str(record.get("messageId", "")) if isinstance(record, Mapping) else ""
            producer = propagate.extract(_record_carrier(record), getter=lower_case_getter)
            producer_span = trace.get_current_span(producer).get_span_context()
            invocation = self._invocation.get_span_context()
            # a record from another trace continues it and links to the invocation; a record whose trace the
            # invocation already continues (a one-message batch) is the invocation's child
            own_trace = producer_span.is_valid and producer_span.trace_id != invocation.trace_id
            parent = producer if own_trace else trace.set_span_in_context(self._invocation, producer)
            queue = ""
            if isinstance(record, Mapping):
                queue = str(record.get("eventSourceARN", "")).rsplit(":", 1)[-1]
            span = self._tracer.start_span(
                f"process {queue}".strip(),
                context=parent,
                kind=SpanKind.CONSUMER,
                links=[trace.Link(invocation)] if own_trace else None,
                attributes={
                    "messaging.system": "aws_sqs",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": queue,
                    "messaging.message.id": message_id,
                },
            )
            index = len(self._spans)
            self._spans.append((message_id, span, None))
            token = context.attach(trace.set_span_in_context(span, parent))
            try:
                yield record
            finally:
                context.detach(token)
                self._spans[index] = (message_id, span, time_ns())

    def finish(self, result: Any, error: BaseException | None) -> None:
        """End every record's span; the one the handler raised on and those it reported as failed as errors."""
        in_progress = {index for index, (_, _, ended) in enumerate(self._spans) if ended is None}
        for iteration in self._iterations:
            iteration.close()
        failed: set[str] = set()
        if isinstance(result, Mapping) and isinstance(result.get("batchItemFailures"), list):
            failed = {
                str(item.get("itemIdentifier")) for item in result["batchItemFailures"] if isinstance(item, Mapping)
            }
        for index, (message_id, span, ended) in enumerate(self._spans):
            if error is not None and index in in_progress:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR))  # described by the exception as it ends
            elif message_id in failed:
                span.set_status(Status(StatusCode.ERROR, "reported in batchItemFailures"))
            span.end(end_time=ended)


class _TracedRecords(list):  # type: ignore[type-arg]
    """``event["Records"]`` as the handler gets it: a list whose iteration goes through ``_SqsBatch.iterate``."""

    def __init__(self, records: list[Any], batch: _SqsBatch) -> None:
        super().__init__(records)
        self._batch = batch

    def __iter__(self) -> Iterator[Any]:
        return self._batch.iterate(super().__iter__())


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
            records = _sqs_records(event) if isinstance(event, Mapping) else None
            is_queue = isinstance(event, Mapping) and (records is not None or "detail-type" in event)
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
                ) as invocation:
                    batch = None
                    if records is not None and isinstance(event, dict):
                        batch = _SqsBatch(tracer, invocation)
                        event["Records"] = _TracedRecords(records, batch)
                    result = None
                    try:
                        result = fn(event, lambda_context)
                    except BaseException as err:
                        if batch is not None:
                            batch.finish(None, err)
                        raise
                    if batch is not None:
                        batch.finish(result, None)
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
    from otel_kit._internal.running import current_handle

    handle = current_handle()
    if handle is not None:
        handle.force_flush(timeout_ms)
