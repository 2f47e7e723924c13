"""orders: the saga orchestrator for placing an order (FastAPI, its own PostgreSQL database).

Placing an order runs three steps: reserve stock (inventory), charge payment (payments), confirm. When a step
fails, the steps already done are compensated in reverse (release the stock; a charge is the last step, so it is
never refunded by the saga) and the order ends ``compensated`` with the reason. Every step and compensation is a
span under the ``saga place-order`` span, which ends in ERROR with the reason when the order did not complete.

Resilience, each visible in the trace: a 2 s timeout on every call; retries with exponential backoff and jitter
for timeouts, connection errors and 5xx (a ``retry`` event per attempt); a circuit breaker around payments that
opens after 5 consecutive failures for 10 s (``circuit_open`` event, the step fails fast); and the order id as
the payment's idempotency key, so a retried charge is never taken twice.

Events leave through an outbox: written in the same transaction as the order's state with the trace context of
the saga, and published to RabbitMQ by a relay thread, so an order survives a broker outage and its events are
sent, in the order's trace, when the broker is back (``shop.outbox.pending`` counts what waits).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pybreaker
from fastapi import HTTPException
from fastapi.responses import JSONResponse
from opentelemetry import context, metrics, propagate, trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Status, StatusCode
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, Field
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

import otel_kit
from demo_services.shop.common import ORDERS_EXCHANGE, declare_topology, serve_asgi, service_app, setting

otel_kit.init("orders")
log = logging.getLogger("orders")
tracer = trace.get_tracer("shop.orders")
meter = metrics.get_meter("shop.orders")
orders_counter = meter.create_counter(
    "shop.orders", unit="{order}", description="Orders by outcome (completed, compensated, cancelled) and reason."
)
saga_duration = meter.create_histogram(
    "shop.saga.duration", unit="s", description="Time to place an order, by outcome.",
    explicit_bucket_boundaries_advisory=[0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
)  # fmt: skip

pool = ConnectionPool(setting("DATABASE_URL"), min_size=2, max_size=10, open=True)
http = httpx.Client(timeout=2.0)
INVENTORY, PAYMENTS = setting("INVENTORY_URL"), setting("PAYMENTS_URL")
payments_breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=10, name="payments")

with pool.connection() as _conn:
    _conn.execute(
        "CREATE TABLE IF NOT EXISTS orders (order_id text PRIMARY KEY, customer_id text NOT NULL, sku text NOT NULL,"
        " qty int NOT NULL, amount numeric NOT NULL, status text NOT NULL, reason text,"
        " created timestamptz NOT NULL DEFAULT now())"
    )
    _conn.execute(
        "CREATE TABLE IF NOT EXISTS outbox (id bigserial PRIMARY KEY, routing_key text NOT NULL, body jsonb NOT NULL,"
        " headers jsonb NOT NULL, sent_at timestamptz)"
    )


class Transient(Exception):
    """A call that may succeed when tried again (timeout, connection error, 5xx)."""


class StepFailed(Exception):
    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.reason, self.status = reason, status


def _call(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One HTTP call with retries (4 attempts, backoff 50 ms doubling, jitter) on transient failures."""
    span = trace.get_current_span()

    def note_retry(state: Any) -> None:
        error = state.outcome.exception() if state.outcome else None
        span.add_event("retry", {"attempt": state.attempt_number, "error": str(error)})
        log.warning("retrying", extra={"url": url, "attempt": state.attempt_number, "error": str(error)})

    def attempt() -> httpx.Response:
        try:
            response = http.request(method, url, **kwargs)
        except httpx.TransportError as err:  # timeouts and connection errors
            raise Transient(f"{type(err).__name__}: {err}") from err
        if response.status_code >= 500:
            raise Transient(f"HTTP {response.status_code} from {url}")
        return response

    retrying = Retrying(
        stop=stop_after_attempt(4),
        wait=wait_exponential_jitter(initial=0.05, max=1.0),
        retry=retry_if_exception_type(Transient),
        before_sleep=note_retry,
        reraise=True,
    )
    return retrying(attempt)


@contextmanager
def _step(name: str) -> Iterator[trace.Span]:
    with tracer.start_as_current_span(f"saga step {name}", attributes={"saga.step": name}) as span:
        yield span


def _reserve(order: dict[str, Any]) -> None:
    with _step("reserve-stock"):
        try:
            response = _call(
                "POST", f"{INVENTORY}/reservations", json={k: order[k] for k in ("order_id", "sku", "qty")}
            )
        except Transient as err:
            raise StepFailed(f"inventory_unavailable: {err}", 503) from err
        if response.status_code == 409:
            raise StepFailed("out_of_stock", 409)
        response.raise_for_status()


def _charge(order: dict[str, Any], card: str) -> None:
    with _step("charge-payment") as span:
        body = {"order_id": order["order_id"], "amount": order["amount"], "card": card}
        headers = {"Idempotency-Key": f"order-{order['order_id']}"}
        try:
            response = payments_breaker.call(_call, "POST", f"{PAYMENTS}/charges", json=body, headers=headers)
        except pybreaker.CircuitBreakerError:
            span.add_event("circuit_open", {"breaker": "payments"})
            raise StepFailed("payment_unavailable: circuit open", 503) from None
        except Transient as err:
            raise StepFailed(f"payment_unavailable: {err}", 503) from err
        if response.status_code == 402:
            raise StepFailed("payment_declined", 402)
        response.raise_for_status()


def _release(order: dict[str, Any]) -> None:
    with tracer.start_as_current_span("saga compensate release-stock", attributes={"saga.step": "release-stock"}):
        _call("DELETE", f"{INVENTORY}/reservations/{order['order_id']}").raise_for_status()


def _record(order_id: str, status: str, reason: str | None, event: str, payload: dict[str, Any]) -> None:
    """Set the order's state and queue its event in one transaction, with the current trace context."""
    headers: dict[str, str] = {}
    propagate.inject(headers)
    with pool.connection() as conn:
        conn.execute("UPDATE orders SET status = %s, reason = %s WHERE order_id = %s", (status, reason, order_id))
        conn.execute(
            "INSERT INTO outbox (routing_key, body, headers) VALUES (%s, %s, %s)",
            (event, json.dumps({**payload, "status": status, "reason": reason}), json.dumps(headers)),
        )


class PlaceOrder(BaseModel):
    order_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12], pattern=r"^[A-Za-z0-9-]{1,64}$")
    customer_id: str = Field(min_length=1, max_length=64)
    sku: str = Field(min_length=1, max_length=32)
    qty: int = Field(ge=1, le=10)
    amount: float = Field(gt=0, le=100_000)
    card: str = Field(min_length=1, max_length=64)


app = service_app("orders")


@app.post("/orders", status_code=201)
def place_order(body: PlaceOrder) -> Any:
    order = body.model_dump(exclude={"card"})
    started = time.perf_counter()
    attributes = {"order.id": body.order_id, "order.sku": body.sku, "order.amount": body.amount}
    with tracer.start_as_current_span("saga place-order", attributes=attributes) as saga:
        with pool.connection() as conn:
            inserted = conn.execute(
                "INSERT INTO orders (order_id, customer_id, sku, qty, amount, status) VALUES (%s, %s, %s, %s, %s,"
                " 'pending') ON CONFLICT (order_id) DO NOTHING RETURNING order_id",
                (body.order_id, body.customer_id, body.sku, body.qty, body.amount),
            ).fetchone()
        if inserted is None:
            raise HTTPException(409, f"order {body.order_id} exists")
        log.info("saga started", extra={"order_id": body.order_id, "sku": body.sku})
        done: list[Callable[[dict[str, Any]], None]] = []
        try:
            _reserve(order)
            done.append(_release)
            _charge(order, body.card)
            with _step("confirm"):
                _record(body.order_id, "confirmed", None, "order.confirmed", order)
        except StepFailed as failure:
            _compensate(order, done, failure.reason)
            saga.set_status(Status(StatusCode.ERROR, failure.reason))
            saga.set_attribute("saga.outcome", "compensated")
            orders_counter.add(1, {"outcome": "compensated", "reason": failure.reason.split(":")[0]})
            saga_duration.record(time.perf_counter() - started, {"outcome": "compensated"})
            log.error("order compensated", extra={"order_id": body.order_id, "reason": failure.reason})
            content = {"order_id": body.order_id, "status": "compensated", "reason": failure.reason}
            return JSONResponse(content, status_code=failure.status)
        saga.set_attribute("saga.outcome", "completed")
        orders_counter.add(1, {"outcome": "completed", "reason": "none"})
        saga_duration.record(time.perf_counter() - started, {"outcome": "completed"})
        log.info("order confirmed", extra={"order_id": body.order_id})
        return {"order_id": body.order_id, "status": "confirmed"}


def _compensate(order: dict[str, Any], done: list[Callable[[dict[str, Any]], None]], reason: str) -> None:
    for undo in reversed(done):
        try:
            undo(order)
        except Exception:  # the order stays compensated; the failed undo is logged with its stack for a person
            log.exception("compensation step failed", extra={"order_id": order["order_id"], "step": undo.__name__})
    _record(order["order_id"], "compensated", reason, "order.compensated", order)


def _status(order_id: str) -> tuple[str, str | None]:
    """The order's status and reason, or HTTP 404."""
    with pool.connection() as conn:
        row = conn.execute("SELECT status, reason FROM orders WHERE order_id = %s", (order_id,)).fetchone()
    if row is None:
        raise HTTPException(404, f"no order {order_id}")
    return row[0], row[1]


@app.post("/orders/{order_id}/cancel")
def cancel(order_id: str) -> dict[str, Any]:
    status, _ = _status(order_id)
    if status != "confirmed":
        raise HTTPException(409, f"order {order_id} is {status}, only a confirmed order can be cancelled")
    with tracer.start_as_current_span("cancel-order", attributes={"order.id": order_id}):
        _call("POST", f"{PAYMENTS}/charges/{order_id}/refund").raise_for_status()
        _release({"order_id": order_id})
        _record(order_id, "cancelled", "customer_request", "order.cancelled", {"order_id": order_id})
    orders_counter.add(1, {"outcome": "cancelled", "reason": "customer_request"})
    log.info("order cancelled", extra={"order_id": order_id})
    return {"order_id": order_id, "status": "cancelled"}


@app.get("/orders/{order_id}")
def get_order(order_id: str) -> dict[str, Any]:
    status, reason = _status(order_id)
    return {"order_id": order_id, "status": status, "reason": reason}


# --- the outbox relay ---------------------------------------------------------------------------------------------

_pending = 0


def _observe_pending(_options: CallbackOptions) -> list[Observation]:
    return [Observation(_pending)]


meter.create_observable_gauge(
    "shop.outbox.pending", [_observe_pending], unit="{event}", description="Order events waiting for the broker."
)


def relay(amqp_url: str, stop: threading.Event) -> None:
    """Publish the outbox in order, each event under the trace context it was written with."""
    import pika
    import pika.exceptions

    global _pending
    channel = None
    while not stop.is_set():
        try:
            # the polling itself is not traced (it would be a root span five times a second); each publish is, in
            # the trace it was written in
            with suppress_instrumentation(), pool.connection() as conn:
                counted = conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()
                _pending = counted[0] if counted else 0
                if channel is None:
                    channel = pika.BlockingConnection(pika.URLParameters(amqp_url)).channel()
                    declare_topology(channel)
                    channel.confirm_delivery()
                rows = conn.execute(
                    "SELECT id, routing_key, body, headers FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT 100"
                ).fetchall()
                for row_id, key, body, headers in rows:
                    token = context.attach(propagate.extract(headers))
                    try:
                        channel.basic_publish(
                            ORDERS_EXCHANGE, key, json.dumps(body).encode(),
                            pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                                 message_id=f"outbox-{row_id}"),
                        )  # fmt: skip
                    finally:
                        context.detach(token)
                    conn.execute("UPDATE outbox SET sent_at = now() WHERE id = %s", (row_id,))
                    conn.commit()
                    _pending -= 1
        except pika.exceptions.AMQPError as err:
            log.warning("broker unreachable; outbox events wait", extra={"pending": _pending, "error": repr(err)})
            channel = None
            stop.wait(1)
            continue
        stop.wait(0.2)


if __name__ == "__main__":
    stop_relay = threading.Event()
    relay_thread = threading.Thread(target=relay, args=(setting("AMQP_URL"), stop_relay), name="outbox-relay")
    relay_thread.start()
    try:
        serve_asgi(app, int(setting("PORT")))
    finally:
        stop_relay.set()
        relay_thread.join(5)
