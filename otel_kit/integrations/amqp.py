"""AMQP message spans for RabbitMQ, shared by the pika and aio-pika integrations: publish and process.

Follows the OpenTelemetry messaging semantic conventions: a PRODUCER span ``publish <exchange>`` that injects
its context (``traceparent``, ``baggage``, ``X-Amzn-Trace-Id``, ``X-Correlation-ID``) into the message headers,
and a CONSUMER span ``process <exchange>`` that continues the producer's trace *and* links to the producer span,
so the hop is visible both in the trace tree and as a link when a consumer handles many messages.

Headers that fail to parse start a fresh trace and a fresh correlation id (see ``propagation``); a header value
that is not text is ignored.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Link, SpanKind

from otel_kit._internal.propagation import joined

__all__ = ["HeaderGetter", "process_span", "publish_span"]

TRACER_NAME = "otel_kit.messaging"
_DEFAULT_EXCHANGE = "amq.default"


class HeaderGetter(Getter[MutableMapping[str, Any]]):
    """Reads AMQP headers, any letter case; values may be ``str``, UTF-8 ``bytes`` or an array of them (joined with
    ","), anything else counts as absent."""

    def get(self, carrier: MutableMapping[str, Any], key: str) -> list[str] | None:
        lowered = key.lower()
        # every spelling of the name (producers differ), in the table's order, each value text or an array of
        # text: one header, its values joined with "," as repeated HTTP headers are
        values: list[Any] = []
        for k, v in carrier.items():
            if isinstance(k, str) and k.lower() == lowered:
                values.extend(v if isinstance(v, (list, tuple)) else (v,))
        if not values:
            return None
        value = joined(values)
        return [value] if value is not None else None

    def keys(self, carrier: MutableMapping[str, Any]) -> list[str]:
        return [str(k) for k in carrier]


_getter = HeaderGetter()


def _attributes(
    operation: str, exchange: str, routing_key: str, message_id: Any, conversation_id: Any, body_size: int | None
) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "send" if operation == "publish" else "process",
        "messaging.operation.name": operation,
        "messaging.destination.name": exchange or _DEFAULT_EXCHANGE,
        "messaging.rabbitmq.destination.routing_key": routing_key,
    }
    if message_id:
        attrs["messaging.message.id"] = str(message_id)
    if conversation_id:
        attrs["messaging.message.conversation_id"] = str(conversation_id)
    if body_size is not None:
        attrs["messaging.message.body.size"] = body_size
    return attrs


@contextmanager
def publish_span(
    headers: MutableMapping[str, Any],
    *,
    exchange: str,
    routing_key: str,
    message_id: Any = None,
    conversation_id: Any = None,
    body_size: int | None = None,
    server: tuple[str, int] | None = None,
) -> Iterator[trace.Span]:
    """A PRODUCER span around a publish; the message ``headers`` get the span's context injected."""
    attrs = _attributes("publish", exchange, routing_key, message_id, conversation_id, body_size)
    if server:
        attrs["server.address"], attrs["server.port"] = server
    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(
        f"publish {exchange or _DEFAULT_EXCHANGE}", kind=SpanKind.PRODUCER, attributes=attrs
    ) as span:
        propagate.inject(headers)
        yield span


@contextmanager
def process_span(
    headers: MutableMapping[str, Any] | None,
    *,
    exchange: str,
    routing_key: str,
    message_id: Any = None,
    conversation_id: Any = None,
    body_size: int | None = None,
) -> Iterator[trace.Span]:
    """A CONSUMER span for handling one message: child of and linked to the producer span.

    While the block runs, the producer's context (with its correlation id) is the current context, so log lines
    and outgoing calls made by the handler carry the same trace and correlation id.
    """
    ctx = propagate.extract(headers or {}, getter=_getter)
    producer = trace.get_current_span(ctx).get_span_context()
    links = [Link(producer)] if producer.is_valid else []
    attrs = _attributes("process", exchange, routing_key, message_id, conversation_id, body_size)
    token = context.attach(ctx)
    try:
        tracer = trace.get_tracer(TRACER_NAME)
        with tracer.start_as_current_span(
            f"process {exchange or _DEFAULT_EXCHANGE}", kind=SpanKind.CONSUMER, attributes=attrs, links=links
        ) as span:
            yield span
    finally:
        context.detach(token)
