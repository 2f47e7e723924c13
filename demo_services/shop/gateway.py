"""gateway: the shop's public API (FastAPI). Authenticates by API key, rate-limits per key, validates, routes.

GET /products, POST /orders, GET /orders/{id}, POST /orders/{id}/cancel, each needing ``X-Api-Key``: 401 without a
known key, 429 (with ``Retry-After``) above ``SHOP_RATE_LIMIT`` requests a second per key (burst twice that), 422
for a body that fails validation. API keys come from ``SHOP_API_KEYS`` (comma-separated), never from code.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
import uuid
from typing import Annotated, Any

import httpx
from fastapi import Depends, Header, HTTPException
from fastapi.responses import JSONResponse
from opentelemetry import metrics, trace
from pydantic import BaseModel, Field

import otel_kit
from demo_services.shop.common import serve_asgi, service_app, setting

otel_kit.init("gateway")
log = logging.getLogger("gateway")
rejected = metrics.get_meter("shop.gateway").create_counter(
    "shop.gateway.rejected", unit="{request}", description="Requests refused by the gateway, by reason."
)

API_KEYS = [key.strip() for key in setting("SHOP_API_KEYS").split(",") if key.strip()]
_rate = setting("SHOP_RATE_LIMIT", "50")
try:
    RATE = float(_rate)
except ValueError:
    RATE = 0
if not RATE > 0:
    raise SystemExit(f"SHOP_RATE_LIMIT must be a positive number of requests a second, got {_rate!r}")
if not API_KEYS:
    raise SystemExit("SHOP_API_KEYS holds no API key; set one or more, comma-separated")
ORDERS, INVENTORY = setting("ORDERS_URL"), setting("INVENTORY_URL")
http = httpx.Client(timeout=5.0)


class TokenBucket:
    """``rate`` tokens a second, up to ``2 * rate`` saved; one per request."""

    def __init__(self, rate: float) -> None:
        self.rate, self.capacity = rate, 2 * rate
        self.tokens, self.updated = self.capacity, time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> float:
        """0 when a token was taken, else the seconds until one is available."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.rate


buckets = {key: TokenBucket(RATE) for key in API_KEYS}


def customer(x_api_key: Annotated[str | None, Header()] = None) -> str:
    """The customer id for a valid API key (constant-time comparison), after the rate limit."""
    matched = next((k for k in API_KEYS if x_api_key and hmac.compare_digest(k, x_api_key)), None)
    if matched is None:
        rejected.add(1, {"reason": "unauthenticated"})
        log.warning("request without a valid API key")
        raise HTTPException(401, "a valid X-Api-Key header is required")
    wait = buckets[matched].take()
    if wait:
        rejected.add(1, {"reason": "rate_limited"})
        raise HTTPException(429, "rate limit exceeded", headers={"Retry-After": f"{max(1, round(wait))}"})
    customer_id = f"customer-{API_KEYS.index(matched) + 1}"
    trace.get_current_span().set_attribute("enduser.id", customer_id)
    return customer_id


class OrderRequest(BaseModel):
    sku: str = Field(pattern=r"^[a-z]+-[0-9]+$")
    qty: int = Field(ge=1, le=10)
    card: str = Field(min_length=3, max_length=64, description="a card token from the payment page, e.g. tok_visa")


app = service_app("shop gateway")


def _relay(response: httpx.Response) -> JSONResponse:
    return JSONResponse(response.json(), status_code=response.status_code)


@app.get("/products")
def products(_: Annotated[str, Depends(customer)]) -> Any:
    return _relay(http.get(f"{INVENTORY}/products"))


@app.post("/orders")
def place_order(body: OrderRequest, customer_id: Annotated[str, Depends(customer)]) -> Any:
    product = http.get(f"{INVENTORY}/products/{body.sku}")
    if product.status_code == 404:
        raise HTTPException(422, f"unknown sku {body.sku}")
    product.raise_for_status()
    order = {
        "order_id": uuid.uuid4().hex[:12],
        "customer_id": customer_id,
        "sku": body.sku,
        "qty": body.qty,
        "amount": round(product.json()["price"] * body.qty, 2),
        "card": body.card,
    }
    log.info("order received", extra={"order_id": order["order_id"], "sku": body.sku})
    return _relay(http.post(f"{ORDERS}/orders", json=order))


@app.get("/orders/{order_id}")
def get_order(order_id: str, _: Annotated[str, Depends(customer)]) -> Any:
    return _relay(http.get(f"{ORDERS}/orders/{order_id}"))


@app.post("/orders/{order_id}/cancel")
def cancel(order_id: str, _: Annotated[str, Depends(customer)]) -> Any:
    return _relay(http.post(f"{ORDERS}/orders/{order_id}/cancel"))


if __name__ == "__main__":
    serve_asgi(app, int(setting("PORT")))
