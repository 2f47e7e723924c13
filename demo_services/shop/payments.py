"""payments: charges and refunds in its own PostgreSQL database, through a slow, flaky card provider (FastAPI).

POST /charges {order_id, amount, card} with an ``Idempotency-Key`` header: 201 charged, 402 declined, 503 when the
provider failed (the caller may retry with the same key; a replay returns the first answer, never charges twice).
POST /charges/<order_id>/refund. The card provider is simulated in-process as a CLIENT span to ``card-provider``:
20-60 ms, 4 % transient failures; the card ``tok_decline`` is always declined. Faults: ``decline_rate`` (0..1),
``latency_ms`` (added to every provider call), ``failure_rate`` (0..1, transient failures).
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from typing import Annotated, Any

from fastapi import Header, HTTPException
from fastapi.responses import JSONResponse
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, Field

import otel_kit
from demo_services.shop.common import Faults, serve_asgi, service_app, setting

otel_kit.init("payments")
log = logging.getLogger("payments")
tracer = trace.get_tracer("shop.payments")
charges_counter = metrics.get_meter("shop.payments").create_counter(
    "shop.payments.charges", unit="{charge}", description="Charges by outcome (charged, declined, failed)."
)

pool = ConnectionPool(setting("DATABASE_URL"), min_size=1, max_size=8, open=True)
faults = Faults(decline_rate=0, latency_ms=0, failure_rate=0.04)
with pool.connection() as _conn:
    _conn.execute(
        "CREATE TABLE IF NOT EXISTS charges (order_id text PRIMARY KEY, idempotency_key text UNIQUE NOT NULL,"
        " amount numeric NOT NULL, status text NOT NULL, provider_ref text, created timestamptz DEFAULT now())"
    )


class ProviderError(Exception):
    """The card provider failed transiently (timeout, 5xx): safe to retry with the same idempotency key."""


class Declined(Exception):
    """The card provider declined the card: final."""


def _provider_charge(amount: float, card: str) -> str:
    """The external card provider, simulated: a CLIENT span as an HTTP call to it would make."""
    attributes = {"peer.service": "card-provider", "server.address": "api.card-provider.example", "amount": amount}
    with tracer.start_as_current_span("POST /v1/charges", kind=SpanKind.CLIENT, attributes=attributes) as span:
        time.sleep(random.uniform(0.02, 0.06) + faults["latency_ms"] / 1000)
        if random.random() < faults["failure_rate"]:
            span.set_status(Status(StatusCode.ERROR, "provider returned 503"))
            span.set_attribute("http.response.status_code", 503)
            raise ProviderError("card provider unavailable (503)")
        if card == "tok_decline" or random.random() < faults["decline_rate"]:
            span.set_attribute("http.response.status_code", 402)
            raise Declined("card declined by the issuer")
        span.set_attribute("http.response.status_code", 200)
        return f"ch_{uuid.uuid4().hex[:16]}"


class Charge(BaseModel):
    order_id: str = Field(min_length=1, max_length=64)
    amount: float = Field(gt=0, le=100_000)
    card: str = Field(min_length=1, max_length=64)


app = service_app("payments")


@app.post("/charges", status_code=201)
def charge(body: Charge, idempotency_key: Annotated[str, Header(min_length=8, max_length=128)]) -> Any:
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT order_id, status, provider_ref FROM charges WHERE idempotency_key = %s", (idempotency_key,)
        ).fetchone()
    if row is not None:
        trace.get_current_span().set_attribute("shop.idempotent_replay", True)
        log.info("idempotent replay", extra={"order_id": row[0], "status": row[1]})
        code = 201 if row[1] == "charged" else 402
        return JSONResponse({"order_id": row[0], "status": row[1], "provider_ref": row[2]}, status_code=code)
    try:
        ref = _provider_charge(body.amount, body.card)
    except ProviderError as err:
        charges_counter.add(1, {"outcome": "failed"})
        log.warning("provider failed", extra={"order_id": body.order_id, "error": str(err)})
        raise HTTPException(503, str(err)) from None
    except Declined as err:
        charges_counter.add(1, {"outcome": "declined"})
        _store(body, idempotency_key, "declined", None)
        log.warning("card declined", extra={"order_id": body.order_id, "amount": body.amount})
        return JSONResponse({"order_id": body.order_id, "status": "declined", "reason": str(err)}, status_code=402)
    charges_counter.add(1, {"outcome": "charged"})
    _store(body, idempotency_key, "charged", ref)
    log.info("charged", extra={"order_id": body.order_id, "amount": body.amount})
    return {"order_id": body.order_id, "status": "charged", "provider_ref": ref}


def _store(body: Charge, key: str, status: str, ref: str | None) -> None:
    with pool.connection() as conn:
        conn.execute(
            "INSERT INTO charges (order_id, idempotency_key, amount, status, provider_ref) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (order_id) DO NOTHING",
            (body.order_id, key, body.amount, status, ref),
        )


@app.post("/charges/{order_id}/refund")
def refund(order_id: str) -> dict[str, Any]:
    with pool.connection() as conn:
        row = conn.execute(
            "UPDATE charges SET status = 'refunded' WHERE order_id = %s AND status = 'charged' RETURNING amount",
            (order_id,),
        ).fetchone()
    if row is None:
        raise HTTPException(404, f"no charge to refund for order {order_id}")
    charges_counter.add(1, {"outcome": "refunded"})
    log.info("refunded", extra={"order_id": order_id, "amount": float(row[0])})
    return {"order_id": order_id, "status": "refunded"}


@app.get("/admin/faults")
def get_faults() -> dict[str, float]:
    return faults.snapshot()


@app.put("/admin/faults")
def put_faults(changes: dict[str, Any]) -> dict[str, float]:
    try:
        return faults.update(changes)
    except ValueError as err:
        raise HTTPException(400, str(err)) from None


if __name__ == "__main__":
    serve_asgi(app, int(setting("PORT")))
