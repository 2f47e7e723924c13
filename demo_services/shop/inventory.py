"""inventory: products and stock reservations in its own PostgreSQL database (Flask, served by gunicorn).

GET /products, GET /products/<sku>, POST /reservations {order_id, sku, qty} (201, or 409 when out of stock),
DELETE /reservations/<order_id> (the saga's compensation; idempotent). Fault ``slow_query_ms`` makes the
reservation query slow inside the database (``pg_sleep``), so the delay shows as a slow database span.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify, request
from psycopg_pool import ConnectionPool

import otel_kit
from demo_services.shop.common import Faults, setting

otel_kit.init("inventory")
log = logging.getLogger("inventory")

PRODUCTS = [  # sku, name, price, stock
    ("book-1", "Observability Engineering", 42.0, 1000),
    ("book-2", "Site Reliability Engineering", 38.5, 1000),
    ("book-3", "Designing Data-Intensive Applications", 45.0, 1000),
    ("mug-1", "Trace mug", 12.0, 500),
    ("tee-1", "Span tee", 20.0, 3),  # sells out: the saga's "out of stock" path
]

pool = ConnectionPool(setting("DATABASE_URL"), min_size=1, max_size=8, open=True)
faults = Faults(slow_query_ms=0)


def _schema() -> None:
    with pool.connection() as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS products (sku text PRIMARY KEY, name text NOT NULL, price numeric NOT NULL,"
            " stock int NOT NULL CHECK (stock >= 0))"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS reservations (order_id text PRIMARY KEY, sku text NOT NULL REFERENCES"
            " products, qty int NOT NULL, created timestamptz NOT NULL DEFAULT now())"
        )
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO products VALUES (%s, %s, %s, %s) ON CONFLICT (sku) DO NOTHING", PRODUCTS)


_schema()
app = otel_kit.instrument_flask(Flask("inventory"))


@app.get("/health")
def health() -> Any:
    return {"status": "ok"}


@app.get("/products")
def products() -> Any:
    with pool.connection() as conn:
        rows = conn.execute("SELECT sku, name, price, stock FROM products ORDER BY sku").fetchall()
    return jsonify([{"sku": r[0], "name": r[1], "price": float(r[2]), "in_stock": r[3] > 0} for r in rows])


@app.get("/products/<sku>")
def product(sku: str) -> Any:
    with pool.connection() as conn:
        row = conn.execute("SELECT sku, name, price, stock FROM products WHERE sku = %s", (sku,)).fetchone()
    if row is None:
        return {"error": f"no product {sku}"}, 404
    return {"sku": row[0], "name": row[1], "price": float(row[2]), "stock": row[3]}


@app.post("/reservations")
def reserve() -> Any:
    body = request.get_json(silent=True) or {}
    order_id, sku, qty = body.get("order_id"), body.get("sku"), body.get("qty")
    if not isinstance(order_id, str) or not isinstance(sku, str) or not isinstance(qty, int) or qty < 1:
        return {"error": "order_id, sku and qty (a positive integer) are required"}, 400
    slow = faults["slow_query_ms"] / 1000
    with pool.connection() as conn:
        existing = conn.execute("SELECT sku, qty FROM reservations WHERE order_id = %s", (order_id,)).fetchone()
        if existing is not None:  # a retried request: the reservation already stands
            return {"order_id": order_id, "sku": existing[0], "qty": existing[1]}, 200
        # one statement takes the stock only if enough is left (pg_sleep: the "slow query" fault)
        taken = conn.execute(
            "UPDATE products SET stock = stock - %s WHERE sku = %s AND stock >= %s AND pg_sleep(%s) IS NOT NULL"
            " RETURNING stock",
            (qty, sku, qty, slow),
        ).fetchone()
        if taken is None:
            log.warning("out of stock", extra={"sku": sku, "qty": qty, "order_id": order_id})
            return {"error": "out of stock", "sku": sku}, 409
        conn.execute("INSERT INTO reservations (order_id, sku, qty) VALUES (%s, %s, %s)", (order_id, sku, qty))
    log.info("stock reserved", extra={"sku": sku, "qty": qty, "order_id": order_id, "left": taken[0]})
    return {"order_id": order_id, "sku": sku, "qty": qty}, 201


@app.delete("/reservations/<order_id>")
def release(order_id: str) -> Any:
    with pool.connection() as conn:
        row = conn.execute("DELETE FROM reservations WHERE order_id = %s RETURNING sku, qty", (order_id,)).fetchone()
        if row is not None:
            conn.execute("UPDATE products SET stock = stock + %s WHERE sku = %s", (row[1], row[0]))
    log.info("stock released", extra={"order_id": order_id, "released": row is not None})
    return {"order_id": order_id, "released": row is not None}


@app.get("/admin/faults")
def get_faults() -> Any:
    return faults.snapshot()


@app.put("/admin/faults")
def put_faults() -> Any:
    try:
        return faults.update(request.get_json(force=True) or {})
    except ValueError as err:
        return {"error": str(err)}, 400
