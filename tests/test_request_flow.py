"""One request through three services: FastAPI -> Flask over HTTP, and FastAPI -> RabbitMQ -> consumer.

Real HTTP servers (uvicorn, werkzeug) and a real RabbitMQ node on loopback; telemetry goes to in-memory
exporters, so the assertions see exactly what would be exported. The consumer signals an Event when it has
handled the message; the test waits on that, never on a clock.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aio_pika
import pytest
from opentelemetry.trace import SpanKind, format_trace_id

import otel_kit
from demo_services.quickstart import EXCHANGE, Notifier, gateway_app, inventory_app
from demo_services.stack.servers import RabbitMQ, serve_asgi, serve_wsgi
from otel_kit import testing

pytestmark = pytest.mark.e2e


@dataclass
class Shop:
    gateway_url: str
    notifier: Notifier
    seen_by_inventory: dict[str, Any]


@pytest.fixture
def shop(rabbitmq: RabbitMQ) -> Iterator[tuple[Shop, testing.Capture]]:
    """The quickstart's gateway (FastAPI), inventory (Flask) and notifier (pika consumer) on real servers."""
    queue = f"notifications-{uuid.uuid4().hex[:8]}"
    with testing.capture("shop") as tel:
        seen: dict[str, Any] = {}
        with serve_wsgi(inventory_app(seen)) as inventory_url:
            gateway = gateway_app(inventory_url, rabbitmq.url, queue)
            try:
                with serve_asgi(gateway) as gateway_url, Notifier(rabbitmq.url, queue).running() as notifier:
                    yield Shop(gateway_url, notifier, seen), tel
            finally:
                gateway.state.amqp.close()


def _post_order(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], dict[str, Any]]:
    """A plain, uninstrumented client: what an outside caller sends."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", "/orders", json.dumps({"sku": "book-1"}), {"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        body = json.loads(response.read())
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def _assert_one_trace_one_correlation_id(tel: testing.Capture, correlation_id: str) -> str:
    spans = tel.spans()
    kinds = {span.kind for span in spans}
    assert {SpanKind.SERVER, SpanKind.CLIENT, SpanKind.PRODUCER, SpanKind.CONSUMER} <= kinds
    trace_ids = {span.context.trace_id for span in spans}
    assert len(trace_ids) == 1, [(s.name, format_trace_id(s.context.trace_id)) for s in spans]
    trace_id = format_trace_id(trace_ids.pop())
    # every span carries the correlation id
    assert {span.attributes.get("correlation_id") for span in spans} == {correlation_id}
    # the consumer span continues the trace and links to the producer span
    producer = next(s for s in spans if s.kind is SpanKind.PRODUCER)
    consumer = next(s for s in spans if s.kind is SpanKind.CONSUMER)
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert [link.context.span_id for link in consumer.links] == [producer.context.span_id]
    assert consumer.attributes["messaging.system"] == "rabbitmq"
    assert consumer.attributes["messaging.destination.name"] == EXCHANGE
    # every application log line carries the same correlation id and the trace id of its span
    app_lines = [line for line in tel.log_lines() if line["logger"] in ("gateway", "inventory", "notifier")]
    assert [line["message"] for line in app_lines].count("order event handled") == 1
    assert {line["logger"] for line in app_lines} == {"gateway", "inventory", "notifier"}
    for line in app_lines:
        assert line["correlation_id"] == correlation_id, line
        assert line["trace_id"] == trace_id, line
        assert line["xray_trace_id"] == f"1-{trace_id[:8]}-{trace_id[8:]}"
        assert line["service"] == "shop"
    return trace_id


def test_one_request_shares_trace_and_correlation_id_across_http_and_rabbitmq(
    shop: tuple[Shop, testing.Capture],
) -> None:
    state, tel = shop
    status, headers, body = _post_order(state.gateway_url, {"X-Correlation-ID": "order-42"})
    assert status == 200 and body == {"accepted": True, "available": 3}
    assert headers["x-correlation-id"] == "order-42"
    assert state.notifier.event.wait(15), "the notifier never received the order event"

    assert state.seen_by_inventory["x-correlation-id"] == "order-42"
    assert state.notifier.last["correlation_id"] == "order-42"
    assert state.notifier.last["headers"]["X-Correlation-ID"] == "order-42"
    trace_id = _assert_one_trace_one_correlation_id(tel, "order-42")
    assert state.notifier.last["headers"]["traceparent"].split("-")[1] == trace_id


def test_request_without_ids_gets_a_fresh_correlation_id_echoed_and_propagated(
    shop: tuple[Shop, testing.Capture],
) -> None:
    state, tel = shop
    status, headers, _ = _post_order(state.gateway_url, {})
    assert status == 200
    generated = headers["x-correlation-id"]
    assert uuid.UUID(generated)
    assert state.notifier.event.wait(15)
    assert state.seen_by_inventory["x-correlation-id"] == generated
    _assert_one_trace_one_correlation_id(tel, generated)


def test_incoming_traceparent_is_continued(shop: tuple[Shop, testing.Capture]) -> None:
    state, tel = shop
    trace_id = "5f3c2a1b" + "9" * 24
    status, _, _ = _post_order(
        state.gateway_url, {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01", "X-Request-ID": "req-7"}
    )
    assert status == 200
    assert state.notifier.event.wait(15)
    assert _assert_one_trace_one_correlation_id(tel, "req-7") == trace_id


def test_aio_pika_consumer_span_links_to_publisher(rabbitmq: RabbitMQ) -> None:
    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        done = asyncio.Event()
        connection = await aio_pika.connect_robust(rabbitmq.url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.declare_exchange("events", aio_pika.ExchangeType.FANOUT, auto_delete=True)
            queue = await channel.declare_queue(exclusive=True)
            await queue.bind(exchange)

            async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                async with message.process():
                    seen["correlation_id"] = otel_kit.get_correlation_id()
                    logging.getLogger("cashback").info("cashback credited")
                    done.set()

            await queue.consume(handle)
            with otel_kit.correlation_scope("saga-9"):
                await exchange.publish(aio_pika.Message(b"{}", message_id="m-1"), routing_key="")
            await asyncio.wait_for(done.wait(), 15)
        return seen

    with testing.capture("cashback") as tel:
        seen = asyncio.run(scenario())
    assert seen["correlation_id"] == "saga-9"
    producer = next(s for s in tel.spans() if s.kind is SpanKind.PRODUCER)
    consumer = next(s for s in tel.spans() if s.kind is SpanKind.CONSUMER)
    assert consumer.context.trace_id == producer.context.trace_id
    assert [link.context.span_id for link in consumer.links] == [producer.context.span_id]
    assert producer.attributes["messaging.message.id"] == "m-1"
    line = next(line for line in tel.log_lines() if line["message"] == "cashback credited")
    assert line["correlation_id"] == "saga-9"
    assert line["trace_id"] == format_trace_id(consumer.context.trace_id)
