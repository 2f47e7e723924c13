"""The demo shop end to end, on the real broker, databases and collector: what its traces, logs and queues show.

One stack serves the tests of this module (about 30 s to start); the runner's own tests start their own.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest

from demo_services.shop.common import DEAD_LETTER_QUEUE, ORDERS_EXCHANGE
from demo_services.shop.stack import ShopStack
from demo_services.stack.servers import attributes, hex_id, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SERVICES = {"gateway", "orders", "inventory", "payments", "notifications", "cashback", "receipts"}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShopStack]:
    with ShopStack(tmp_path_factory.mktemp("shop"), rate_limit=20) as stack:
        yield stack


def _client(shop: ShopStack, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=shop.urls["gateway"], headers={"X-Api-Key": shop.api_key, **headers}, timeout=30)


def _trace_of_order(shop: ShopStack, order_id: str) -> str:
    for _, span in shop.tempo.spans():
        if span["name"] == "saga place-order" and attributes(span.get("attributes", [])).get("order.id") == order_id:
            return hex_id(span["traceId"])
    raise AssertionError(f"no saga span for order {order_id}")


def _spans(shop: ShopStack, trace_hex: str) -> list[tuple[str, dict[str, Any]]]:
    return [(r["service.name"], s) for r, s in shop.tempo.spans() if hex_id(s["traceId"]) == trace_hex]


def _wait_for_services(
    shop: ShopStack, order_id: str, services: set[str], names: frozenset[str] = frozenset()
) -> list[tuple[str, dict[str, Any]]]:
    """The spans of an order's trace, once every one of ``services`` and every span named in ``names`` arrived (a
    service exports its spans in batches: its first ones may arrive before the one a test reads)."""

    def seen() -> bool:
        try:
            spans = _spans(shop, _trace_of_order(shop, order_id))
        except AssertionError:
            return False
        return services <= {svc for svc, _ in spans} and names <= {s["name"] for _, s in spans}

    wait_until(seen, 30, f"spans of {sorted(services)} and {sorted(names)} for order {order_id}")
    return _spans(shop, _trace_of_order(shop, order_id))


def test_a_placed_order_is_one_trace_across_every_service(shop: ShopStack) -> None:
    with _client(shop) as client:
        response = client.post("/orders", json={"sku": "book-1", "qty": 1, "card": "tok_visa"})
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "confirmed"
    spans = _wait_for_services(shop, response.json()["order_id"], SERVICES)

    kinds = {(svc, s["kind"]) for svc, s in spans}
    assert ("gateway", "SPAN_KIND_SERVER") in kinds
    for consumer in ("notifications", "cashback", "receipts"):
        assert (consumer, "SPAN_KIND_CONSUMER") in kinds
    # database spans from both databases the saga touched
    db_services = {svc for svc, s in spans if attributes(s.get("attributes", [])).get("db.system") == "postgresql"}
    assert {"orders", "inventory", "payments"} <= db_services
    # the consumers' spans are children of the publish span and link to it
    publish = [s for svc, s in spans if svc == "orders" and s["kind"] == "SPAN_KIND_PRODUCER"]
    assert len(publish) == 1
    assert attributes(publish[0]["attributes"])["messaging.system"] == "rabbitmq"
    rabbitmq = [(svc, s) for svc, s in spans if attributes(s["attributes"]).get("messaging.system") == "rabbitmq"]
    for svc, span in rabbitmq:
        if span["kind"] == "SPAN_KIND_CONSUMER":
            assert span["parentSpanId"] == publish[0]["spanId"], svc
            assert [link["spanId"] for link in span.get("links", [])] == [publish[0]["spanId"]], svc
    # the Lambda handler's invocation span continues the receipts consumer's, and processes its SQS record
    lambda_span = next(s for svc, s in spans if svc == "receipts" and s["kind"] == "SPAN_KIND_SERVER")
    assert attributes(lambda_span["attributes"])["faas.trigger"] == "pubsub"
    (record,) = [s for _, s in spans if attributes(s["attributes"]).get("messaging.system") == "aws_sqs"]
    assert (record["name"], record["kind"]) == ("process receipts", "SPAN_KIND_CONSUMER")
    assert record["parentSpanId"] == lambda_span["spanId"] and not record.get("links")


def test_a_declined_payment_is_compensated_and_the_saga_fails(shop: ShopStack) -> None:
    with _client(shop) as client:
        stock_before = httpx.get(f"{shop.urls['inventory']}/products/book-2").json()["stock"]
        response = client.post("/orders", json={"sku": "book-2", "qty": 2, "card": "tok_decline"})
        stock_after = httpx.get(f"{shop.urls['inventory']}/products/book-2").json()["stock"]
    assert response.status_code == 402
    assert response.json() | {"order_id": ""} == {"order_id": "", "status": "compensated", "reason": "payment_declined"}
    assert stock_after == stock_before  # the reservation was released
    compensation = frozenset({"saga place-order", "saga compensate release-stock", "DELETE /reservations/<order_id>"})
    spans = _wait_for_services(shop, response.json()["order_id"], {"orders", "inventory", "payments"}, compensation)
    names = {s["name"]: s for _, s in spans}
    saga = names["saga place-order"]
    assert saga["status"] == {"code": "STATUS_CODE_ERROR", "message": "payment_declined"}
    release = names["saga compensate release-stock"]
    assert release["parentSpanId"] == saga["spanId"]
    assert release.get("status", {}).get("code") != "STATUS_CODE_ERROR"
    assert "DELETE /reservations/<order_id>" in names  # the inventory's side of the compensation


def test_every_log_line_of_one_order_carries_its_correlation_id(shop: ShopStack) -> None:
    correlation_id = f"e2e-{uuid.uuid4().hex[:12]}"
    with _client(shop, **{"X-Correlation-ID": correlation_id}) as client:
        response = client.post("/orders", json={"sku": "book-3", "qty": 1, "card": "tok_visa"})
    assert response.headers["X-Correlation-ID"] == correlation_id
    order_id = response.json()["order_id"]
    _wait_for_services(shop, order_id, SERVICES)

    def lines() -> list[dict[str, Any]]:
        found = []
        for log in (shop.out / "services").glob("*.log"):
            for line in log.read_text().splitlines():
                if order_id in line and line.startswith("{"):
                    found.append(json.loads(line))
        return found

    wait_until(lambda: {line["service"] for line in lines()} >= SERVICES, 30, "log lines from every service")
    assert {line["correlation_id"] for line in lines()} == {correlation_id}
    assert {line["trace_id"] for line in lines()} == {_trace_of_order(shop, order_id)}
    print(f"{len(lines())} log lines from {len(SERVICES)} services carry {correlation_id}")


def test_a_poison_message_is_dead_lettered_with_its_trace_id(shop: ShopStack) -> None:
    trace_hex = uuid.uuid4().hex
    traceparent = f"00-{trace_hex}-{uuid.uuid4().hex[:16]}-01"
    connection = pika.BlockingConnection(pika.URLParameters(shop.rabbitmq.url))
    try:
        channel = connection.channel()
        properties = pika.BasicProperties(headers={"traceparent": traceparent}, content_type="application/json")
        channel.basic_publish(ORDERS_EXCHANGE, "order.confirmed", b"{not json", properties)

        dead: list[tuple[Any, bytes]] = []

        def collect() -> bool:
            method, props, body = channel.basic_get(DEAD_LETTER_QUEUE, auto_ack=True)
            if method is not None:
                dead.append((props, body))
            return {d["queue"] for p, _ in dead for d in p.headers.get("x-death", [])} >= {"cashback", "receipts"}

        wait_until(collect, 30, "the poison message in the dead-letter queue from each consumer")
    finally:
        connection.close()
    for props, body in dead:
        assert body == b"{not json"
        assert props.headers["traceparent"] == traceparent  # the trace id survives dead-lettering

    # each consumer said why, in the trace of the message
    def logged() -> set[str]:
        services = set()
        for log in (shop.out / "services").glob("*.log"):
            for line in log.read_text().splitlines():
                if trace_hex in line and "poison message dead-lettered" in line:
                    services.add(json.loads(line)["service"])
        return services

    wait_until(lambda: logged() >= {"cashback", "receipts", "notifications"}, 30, "the consumers' error lines")


def test_gateway_refuses_without_a_key_rate_limits_and_validates(shop: ShopStack) -> None:
    assert httpx.get(f"{shop.urls['gateway']}/products").status_code == 401
    with _client(shop) as client:
        assert client.post("/orders", json={"sku": "book-1", "qty": 0, "card": "tok_visa"}).status_code == 422
        assert client.post("/orders", json={"sku": "nope-9", "qty": 1, "card": "tok_visa"}).status_code == 422
        assert client.get("/products").status_code == 200
        refused: list[httpx.Response] = []
        with ThreadPoolExecutor(20) as pool:  # bursts of 100 until one is refused (at most 10: 1,000 requests)
            for _ in range(10):
                refused = [r for r in pool.map(lambda _: client.get("/products"), range(100)) if r.status_code != 200]
                if refused:
                    break
        # beyond the bucket (2 x SHOP_RATE_LIMIT) a request is refused, told when to come back, and let in then
        assert refused and {r.status_code for r in refused} == {429}
        assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)
        wait_until(lambda: client.get("/products").status_code == 200, 30, "the bucket to let a request in again")


def test_payment_retries_use_one_idempotency_key(shop: ShopStack) -> None:
    """A charge the provider failed (503) is not remembered, so its retry with the same key charges; a replay after
    that is answered from the stored result, never charged twice. The provider's transient failures (4 % at random)
    are forced on, then off, so that each path runs every time."""
    order_id = f"idem-{uuid.uuid4().hex[:8]}"
    body = {"order_id": order_id, "amount": 10.0, "card": "tok_visa"}
    headers = {"Idempotency-Key": f"order-{order_id}"}
    charges, faults = f"{shop.urls['payments']}/charges", f"{shop.urls['payments']}/admin/faults"
    before = httpx.get(faults, timeout=10).json()["failure_rate"]
    try:
        httpx.put(faults, json={"failure_rate": 1}, timeout=10).raise_for_status()
        failed = httpx.post(charges, json=body, headers=headers, timeout=10)
        httpx.put(faults, json={"failure_rate": 0}, timeout=10).raise_for_status()
        charged = httpx.post(charges, json=body, headers=headers, timeout=10)
        replayed = httpx.post(charges, json=body, headers=headers, timeout=10)
    finally:
        httpx.put(faults, json={"failure_rate": before}, timeout=10).raise_for_status()
    assert failed.status_code == 503
    assert charged.status_code == replayed.status_code == 201
    assert charged.json()["provider_ref"] == replayed.json()["provider_ref"]


def test_orders_complete_during_a_broker_outage_and_their_events_follow(shop: ShopStack) -> None:
    """The outbox keeps an order's events while RabbitMQ is down and sends them, in the order's trace, after."""
    shop.set_fault("broker-outage", True)
    try:
        with _client(shop) as client:
            response = client.post("/orders", json={"sku": "mug-1", "qty": 1, "card": "tok_visa"})
        assert response.status_code == 201, response.text
    finally:
        shop.set_fault("broker-outage", False)
    order_id = response.json()["order_id"]
    spans = _wait_for_services(shop, order_id, SERVICES)  # the consumers got the event after the outage
    consumer = next(s for svc, s in spans if svc == "notifications" and s["kind"] == "SPAN_KIND_CONSUMER")
    saga = next(s for _, s in spans if s["name"] == "saga place-order")
    assert int(consumer["startTimeUnixNano"]) > int(saga["endTimeUnixNano"])


def test_a_broker_outage_pages_through_alertmanager_and_resolves(shop: ShopStack) -> None:
    """Real Prometheus and Alertmanager with the project's rules and routing: the outbox backlog of a broker outage
    reaches the PagerDuty stand-in as a critical trigger with the routing key, dedup key and links, then resolves."""
    shop.set_fault("broker-outage", True)
    try:
        with _client(shop) as client:
            for _ in range(8):
                assert client.post("/orders", json={"sku": "book-1", "qty": 1, "card": "tok_visa"}).status_code == 201

        def triggered() -> list[dict[str, Any]]:
            return [e for e in shop.pagerduty.events if e["event_action"] == "trigger"
                    and e["payload"]["summary"] == "Order events are not reaching the broker"]  # fmt: skip

        wait_until(lambda: bool(triggered()), 120, "the PagerDuty trigger for ShopOutboxBacklog")
    finally:
        shop.set_fault("broker-outage", False)
    trigger = triggered()[0]
    assert trigger["routing_key"] == "demo-routing-key"
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["dedup_key"]
    assert {link["text"]: link["href"] for link in trigger["links"]} == {
        "Dashboard": "http://localhost:3000/d/otel-kit-saga/order-saga",
        "Runbook": "alerts/runbooks.md#shopoutboxbacklog",
    }
    assert trigger["payload"]["custom_details"]["service"] == "orders"

    def resolved() -> bool:
        return any(e["event_action"] == "resolve" and e["dedup_key"] == trigger["dedup_key"]
                   for e in shop.pagerduty.events)  # fmt: skip

    wait_until(resolved, 120, "the resolve once the broker is back and the outbox drained")


def test_every_dashboard_query_and_recording_rule_returns_data(shop: ShopStack) -> None:
    """With the demo's telemetry in a real Prometheus, no panel of any dashboard is empty, nor any recording rule."""
    from dashboards.queries import dashboard_queries, recording_rules
    from demo_services.shop.loadgen import run_load

    run_load(shop.urls["gateway"], shop.api_key, rate=5, duration=8, seed=11, progress=False)
    queries = {**dashboard_queries(), **{f"rule {name}": expr for name, expr in recording_rules().items()}}

    def empty() -> list[str]:
        return [name for name, expr in queries.items() if not shop.mimir.query(expr)]

    try:
        wait_until(lambda: not empty(), 90, "data for every query")
    except TimeoutError:
        pytest.fail("queries without data:\n" + "\n".join(f"{name}: {queries[name]}" for name in empty()))
    print(f"{len(queries)} queries, each with data")

    # every metric name a dashboard or an alert asks for is one the services, the collector or RabbitMQ emit
    emitted = {row["metric"]["__name__"] for row in shop.mimir.query('{__name__=~".+"}')}
    asked = set(
        re.findall(
            r"\b([a-z_]+(?:_total|_seconds_(?:bucket|count|sum)|_spans|_records|_pending|_ready|"
            r"_capacity|_size|_rss|_calls_total)|up)\b",
            " ".join([*queries.values(), *_alert_exprs()]),
        )
    )
    assert asked - emitted <= FAILURE_ONLY, f"asked for but never emitted: {sorted(asked - emitted - FAILURE_ONLY)}"


# counters that exist only once something failed (the collector creates them on the first failure; otel_kit's
# names are checked against its code in tests/test_metrics.py)
FAILURE_ONLY = {
    "otelcol_receiver_refused_spans", "otelcol_receiver_refused_log_records",
    "otelcol_exporter_send_failed_spans", "otelcol_exporter_send_failed_log_records",
    "otel_kit_export_failed_total", "otel_kit_queue_dropped_total", "traces_service_graph_request_failed_total",
}  # fmt: skip


def _alert_exprs() -> list[str]:
    import yaml

    return [
        rule["expr"]
        for path in sorted((Path(__file__).resolve().parents[1] / "alerts").glob("*.rules.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]
