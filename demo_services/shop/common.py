"""What the shop's services share: settings from the environment, faults, the message topology and its consumers."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("shop")

ORDERS_EXCHANGE = "shop.orders"  # topic: order.placed, order.confirmed, order.compensated, order.cancelled
CONFIRMED_EXCHANGE = "shop.orders.confirmed"  # fanout of order.confirmed to every interested service
DEAD_LETTER_EXCHANGE = "shop.dead-letters"
DEAD_LETTER_QUEUE = "dead-letters"
QUEUES = {
    # queue: (exchange, routing key)
    "notifications": (ORDERS_EXCHANGE, "order.*"),
    "cashback": (CONFIRMED_EXCHANGE, ""),
    "receipts": (CONFIRMED_EXCHANGE, ""),
}


def setting(name: str, default: str | None = None) -> str:
    """A required (or defaulted) environment variable, with a clear error naming it."""
    value = os.environ.get(name, default)
    if value is None:
        raise SystemExit(f"{name} is not set; the stack runner (python -m demo_services.shop) sets it")
    return value


class Faults:
    """Switchable faults of one service, changed at run time through ``PUT /admin/faults`` (JSON)."""

    def __init__(self, **defaults: float) -> None:
        self._values = dict(defaults)
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> float:
        with self._lock:
            return self._values[name]

    def update(self, changes: dict[str, Any]) -> dict[str, float]:
        """Apply ``changes``; an unknown name or a non-number is a ValueError naming it."""
        with self._lock:
            for name, value in changes.items():
                if name not in self._values:
                    raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(self._values))}")
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ValueError(f"fault {name!r} needs a number >= 0, got {value!r}")
            self._values.update(changes)
            return dict(self._values)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self._values)


def declare_topology(channel: Any) -> None:
    """Exchanges, queues and bindings (idempotent); every work queue dead-letters what its consumer rejects."""
    channel.exchange_declare(ORDERS_EXCHANGE, exchange_type="topic", durable=True)
    channel.exchange_declare(CONFIRMED_EXCHANGE, exchange_type="fanout", durable=True)
    channel.exchange_bind(CONFIRMED_EXCHANGE, ORDERS_EXCHANGE, routing_key="order.confirmed")
    channel.exchange_declare(DEAD_LETTER_EXCHANGE, exchange_type="fanout", durable=True)
    channel.queue_declare(DEAD_LETTER_QUEUE, durable=True)
    channel.queue_bind(DEAD_LETTER_QUEUE, DEAD_LETTER_EXCHANGE)
    for queue, (exchange, key) in QUEUES.items():
        channel.queue_declare(queue, durable=True, arguments={"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE})
        channel.queue_bind(queue, exchange, routing_key=key)


class PoisonMessage(ValueError):
    """A message that can never be handled (malformed, wrong schema): it goes to the dead-letter queue."""


def parse_event(body: bytes, *required: str) -> dict[str, Any]:
    """The JSON object of an order event, or PoisonMessage saying what is wrong with it."""
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PoisonMessage(f"not JSON: {err}") from None
    if not isinstance(event, dict):
        raise PoisonMessage("not a JSON object")
    missing = [name for name in required if name not in event]
    if missing:
        raise PoisonMessage(f"missing {', '.join(missing)}")
    return event


def consume(
    amqp_url: str,
    queue: str,
    handle: Callable[[dict[str, Any], str], None],
    *,
    required: tuple[str, ...] = ("order_id",),
    consumers: int = 1,
    stop: threading.Event | None = None,
) -> None:
    """Consume ``queue`` with ``consumers`` competing consumers until ``stop`` is set, reconnecting after outages.

    ``handle(event, routing_key)`` runs inside the consumer span that otel_kit's pika integration opens, so its
    spans and log lines join the trace of the order. A poison message is rejected without requeue (dead-lettered,
    headers and trace context intact); a message whose handling fails is retried once, then dead-lettered too.
    """
    stop = stop or threading.Event()
    threads = [
        threading.Thread(target=_consumer_loop, args=(amqp_url, queue, handle, required, stop), name=f"{queue}-{n}")
        for n in range(consumers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _consumer_loop(
    amqp_url: str,
    queue: str,
    handle: Callable[[dict[str, Any], str], None],
    required: tuple[str, ...],
    stop: threading.Event,
) -> None:
    import pika
    import pika.exceptions

    def on_message(channel: Any, method: Any, properties: Any, body: bytes) -> None:
        try:
            handle(parse_event(body, *required), method.routing_key)
        except PoisonMessage as err:
            log.error("poison message dead-lettered", extra={"queue": queue, "reason": str(err)})
            channel.basic_nack(method.delivery_tag, requeue=False)
            return
        except Exception:
            retry = not method.redelivered
            log.exception("message handling failed", extra={"queue": queue, "requeued": retry})
            channel.basic_nack(method.delivery_tag, requeue=retry)
            return
        channel.basic_ack(method.delivery_tag)

    while not stop.is_set():
        try:
            connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
            channel = connection.channel()
            declare_topology(channel)
            channel.basic_qos(prefetch_count=10)
            channel.basic_consume(queue, on_message)
            log.info("consuming", extra={"queue": queue})
            while not stop.is_set():
                connection.process_data_events(time_limit=0.5)
            connection.close()
        except pika.exceptions.AMQPError as err:
            log.warning("broker unreachable; reconnecting in 1 s", extra={"queue": queue, "error": repr(err)})
            stop.wait(1)


def service_app(title: str) -> Any:
    """A FastAPI app instrumented by otel_kit, with an untraced ``GET /health`` for the stack runner."""
    from fastapi import FastAPI

    import otel_kit

    app = otel_kit.instrument_fastapi(FastAPI(title=title), excluded_paths=["/health"])
    app.add_api_route("/health", lambda: {"status": "ok"}, methods=["GET"])
    return app


def serve_asgi(app: Any, port: int) -> None:
    """Run an ASGI app with uvicorn on ``SHOP_BIND_HOST`` (default 127.0.0.1; compose sets 0.0.0.0, as a container's
    service is reached from other containers), its access log off: the JSON lines carry each request."""
    import uvicorn

    host = os.environ.get("SHOP_BIND_HOST", "127.0.0.1")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on")
