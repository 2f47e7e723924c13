"""RabbitMQ through pika (``BlockingChannel``) and aio-pika (``Exchange.publish`` and ``Queue.consume``).

A lean instrumentation written for the toolkit rather than the contrib ones: those use retired attribute names
and make the consumer a plain child of the producer, with no link. Here both libraries share ``amqp``:
the publish injects context and the correlation id into the message headers, and each consumed message runs
under a CONSUMER span that continues the trace and links to the producer.

Not covered: pika's ``SelectConnection``/asyncio adapters and ``BlockingChannel.consume()`` generator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import wrapt
from opentelemetry.instrumentation.utils import unwrap

from otel_kit.integrations import amqp

__all__ = ["AioPikaInstrumentation", "PikaInstrumentation"]


def _body_size(body: Any) -> int | None:
    return len(body) if isinstance(body, (bytes, bytearray, str)) else None


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any = None) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


class PikaInstrumentation:
    """Patches ``pika.BlockingChannel.basic_publish`` and ``basic_consume``; ``uninstrument()`` undoes it."""

    def instrument(self) -> PikaInstrumentation:
        from pika.adapters.blocking_connection import BlockingChannel

        wrapt.wrap_function_wrapper(BlockingChannel, "basic_publish", _pika_publish)
        wrapt.wrap_function_wrapper(BlockingChannel, "basic_consume", _pika_consume)
        return self

    def uninstrument(self) -> None:
        from pika.adapters.blocking_connection import BlockingChannel

        unwrap(BlockingChannel, "basic_publish")
        unwrap(BlockingChannel, "basic_consume")


def _pika_server(channel: Any) -> tuple[str, int] | None:
    try:
        params = channel.connection._impl.params
        return str(params.host), int(params.port)
    except Exception:
        return None


def _pika_publish(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    import pika

    exchange = _arg(args, kwargs, 0, "exchange", "")
    routing_key = _arg(args, kwargs, 1, "routing_key", "")
    body = _arg(args, kwargs, 2, "body")
    properties = _arg(args, kwargs, 3, "properties") or pika.BasicProperties()
    properties.headers = dict(properties.headers or {})
    rest = {k: v for k, v in kwargs.items() if k not in ("exchange", "routing_key", "body", "properties")}
    with amqp.publish_span(
        properties.headers,
        exchange=exchange,
        routing_key=routing_key,
        message_id=properties.message_id,
        conversation_id=properties.correlation_id,
        body_size=_body_size(body),
        server=_pika_server(instance),
    ):
        return wrapped(exchange, routing_key, body, properties, *args[4:], **rest)


def _pika_consume(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    callback = _arg(args, kwargs, 1, "on_message_callback")
    if callback is None:
        return wrapped(*args, **kwargs)

    def traced_callback(channel: Any, method: Any, properties: Any, body: bytes) -> Any:
        with amqp.process_span(
            getattr(properties, "headers", None),
            exchange=getattr(method, "exchange", ""),
            routing_key=getattr(method, "routing_key", ""),
            message_id=getattr(properties, "message_id", None),
            conversation_id=getattr(properties, "correlation_id", None),
            body_size=_body_size(body),
        ):
            return callback(channel, method, properties, body)

    if len(args) > 1:
        args = (args[0], traced_callback, *args[2:])
    else:
        kwargs["on_message_callback"] = traced_callback
    return wrapped(*args, **kwargs)


class AioPikaInstrumentation:
    """Patches ``aio_pika.Exchange.publish`` and ``aio_pika.Queue.consume``; ``uninstrument()`` undoes it."""

    def instrument(self) -> AioPikaInstrumentation:
        import aio_pika

        wrapt.wrap_function_wrapper(aio_pika.Exchange, "publish", _aio_publish)
        wrapt.wrap_function_wrapper(aio_pika.Queue, "consume", _aio_consume)
        return self

    def uninstrument(self) -> None:
        import aio_pika

        unwrap(aio_pika.Exchange, "publish")
        unwrap(aio_pika.Queue, "consume")


async def _aio_publish(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    message = _arg(args, kwargs, 0, "message")
    routing_key = _arg(args, kwargs, 1, "routing_key", "")
    if message is None:
        return await wrapped(*args, **kwargs)
    message.headers = dict(message.headers or {})
    with amqp.publish_span(
        message.headers,
        exchange=str(getattr(instance, "name", "") or ""),
        routing_key=routing_key,
        message_id=message.message_id,
        conversation_id=message.correlation_id,
        body_size=_body_size(message.body),
    ):
        return await wrapped(*args, **kwargs)


async def _aio_consume(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    callback = _arg(args, kwargs, 0, "callback")
    if callback is None:
        return await wrapped(*args, **kwargs)

    async def traced_callback(message: Any) -> Any:
        with amqp.process_span(
            message.headers,
            exchange=str(message.exchange or ""),
            routing_key=str(message.routing_key or ""),
            message_id=message.message_id,
            conversation_id=message.correlation_id,
            body_size=_body_size(message.body),
        ):
            return await callback(message)

    if args:
        args = (traced_callback, *args[1:])
    else:
        kwargs["callback"] = traced_callback
    return await wrapped(*args, **kwargs)
