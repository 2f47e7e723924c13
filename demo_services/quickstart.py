"""The quickstart demo: three small services joined by otel_kit, exporting over real OTLP.

- gateway (FastAPI): ``POST /orders`` checks stock with the inventory over HTTP, then publishes ``order.placed``;
- inventory (Flask): ``GET /stock/<sku>``, fails now and then to show an error trace;
- notifier: consumes ``order.placed`` from RabbitMQ.

``python -m demo_services.quickstart --requests 20`` starts RabbitMQ and an OTLP receiver on free loopback ports,
runs the services in this process, sends the requests, and prints what the receiver got: a trace per order that
spans HTTP and RabbitMQ, with one correlation id in every span and log line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

EXCHANGE = "orders"
ROUTING_KEY = "order.placed"


def inventory_app(seen: dict[str, Any] | None = None, fail_every: int = 0) -> Any:
    """The inventory service; records the context headers it received in ``seen``."""
    from flask import Flask, request

    import otel_kit

    app = Flask("inventory")
    calls = Counter[str]()

    @app.get("/stock/<sku>")
    def stock(sku: str) -> Any:
        if seen is not None:
            seen["x-correlation-id"] = request.headers.get("X-Correlation-ID")
            seen["traceparent"] = request.headers.get("traceparent")
        calls["stock"] += 1
        if fail_every and calls["stock"] % fail_every == 0:
            raise RuntimeError(f"stock database timed out for {sku}")
        logging.getLogger("inventory").info("stock checked", extra={"sku": sku})
        return {"sku": sku, "available": 3}

    return otel_kit.instrument_flask(app)


def gateway_app(inventory_url: str, amqp_url: str, queue: str) -> Any:
    """The gateway service: one pika connection for publishing, guarded by a lock (pika is not thread-safe)."""
    import httpx
    import pika
    from fastapi import FastAPI, HTTPException

    import otel_kit

    app = FastAPI()
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.exchange_declare(EXCHANGE, exchange_type="topic")
    channel.queue_declare(queue, auto_delete=True)
    channel.queue_bind(queue, EXCHANGE, routing_key=ROUTING_KEY)
    lock = threading.Lock()
    app.state.amqp = connection

    @app.post("/orders")
    def place_order(order: dict[str, Any]) -> dict[str, Any]:
        log = logging.getLogger("gateway")
        log.info("order received", extra={"sku": order.get("sku")})
        with httpx.Client(base_url=inventory_url, timeout=5) as client:
            response = client.get(f"/stock/{order.get('sku', 'unknown')}")
        if response.status_code != 200:
            log.warning("inventory unavailable", extra={"status": response.status_code})
            raise HTTPException(503, "inventory unavailable")
        with lock:
            channel.basic_publish(
                EXCHANGE,
                ROUTING_KEY,
                json.dumps(order).encode(),
                pika.BasicProperties(content_type="application/json", message_id=str(uuid.uuid4())),
            )
        log.info("order accepted")
        return {"accepted": True, "available": response.json()["available"]}

    return otel_kit.instrument_fastapi(app)


@dataclass
class Notifier:
    """The notifier: consumes order events in a thread; ``handled`` counts messages, ``event`` fires on each."""

    amqp_url: str
    queue: str
    handled: int = 0
    last: dict[str, Any] = field(default_factory=dict)
    event: threading.Event = field(default_factory=threading.Event)

    @contextmanager
    def running(self) -> Iterator[Notifier]:
        import pika

        import otel_kit

        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        channel = connection.channel()

        def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
            self.last = {"correlation_id": otel_kit.get_correlation_id(), "headers": dict(properties.headers or {})}
            logging.getLogger("notifier").info("order event handled", extra={"routing_key": method.routing_key})
            ch.basic_ack(method.delivery_tag)
            self.handled += 1
            self.event.set()

        channel.basic_consume(self.queue, on_message)
        thread = threading.Thread(target=channel.start_consuming, name="notifier", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            connection.add_callback_threadsafe(connection.close)
            thread.join(10)


def _summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    spans: list[dict[str, Any]] = []
    for r in records:
        if r["signal"] == "traces":
            for rs in r["body"].get("resourceSpans", []):
                for ss in rs.get("scopeSpans", []):
                    spans.extend(ss.get("spans", []))
    traces = Counter(s["traceId"] for s in spans)
    errors = [s["name"] for s in spans if s.get("status", {}).get("code") == "STATUS_CODE_ERROR"]
    kinds = Counter(s.get("kind", "").removeprefix("SPAN_KIND_") for s in spans)
    logs = sum(
        len(sl.get("logRecords", []))
        for r in records
        if r["signal"] == "logs"
        for rl in r["body"].get("resourceLogs", [])
        for sl in rl.get("scopeLogs", [])
    )
    metrics = sorted(
        {
            m["name"]
            for r in records
            if r["signal"] == "metrics"
            for rm in r["body"].get("resourceMetrics", [])
            for sm in rm.get("scopeMetrics", [])
            for m in sm.get("metrics", [])
        }
    )
    return {
        "spans": len(spans),
        "traces": len(traces),
        "kinds": dict(kinds),
        "errors": errors,
        "logs": logs,
        "metrics": metrics,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="otel-kit quickstart demo")
    parser.add_argument("--requests", type=int, default=20, help="orders to place (default 20)")
    parser.add_argument("--fail-every", type=int, default=7, help="inventory fails every Nth call (0: never)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.fail_every < 0:
        parser.error("--requests must be at least 1 and --fail-every at least 0")

    import httpx

    from demo_services.stack.servers import OtlpReceiver, RabbitMQ, serve_asgi, serve_wsgi, wait_until

    with ExitStack() as stack:
        print("starting RabbitMQ and an OTLP receiver on loopback ...", file=sys.stderr)
        rabbit = stack.enter_context(RabbitMQ())
        receiver = stack.enter_context(OtlpReceiver())
        os.environ.setdefault("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.grpc_port}")
        os.environ.setdefault("OTEL_METRIC_EXPORT_INTERVAL", "1000")
        os.environ.setdefault("OTEL_KIT_LOG_STDOUT", "false")  # keep the terminal for the report

        import otel_kit

        handle = otel_kit.init("quickstart-shop", service_version="0.1.0", environment="demo")
        stack.callback(otel_kit.shutdown)
        queue = f"notifications-{uuid.uuid4().hex[:8]}"
        inventory_url = stack.enter_context(serve_wsgi(inventory_app(fail_every=args.fail_every)))
        gateway = gateway_app(inventory_url, rabbit.url, queue)
        stack.callback(gateway.state.amqp.close)
        gateway_url = stack.enter_context(serve_asgi(gateway))
        notifier = Notifier(rabbit.url, queue)
        stack.enter_context(notifier.running())

        statuses: Counter[int] = Counter()
        ids: list[str] = []
        with httpx.Client(base_url=gateway_url, timeout=10) as client:
            for n in range(args.requests):
                response = client.post("/orders", json={"sku": f"book-{n % 5}", "qty": 1})
                statuses[response.status_code] += 1
                ids.append(response.headers.get("X-Correlation-ID", ""))
                print(f"\rorders placed: {n + 1}/{args.requests}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        accepted = statuses[200]
        wait_until(lambda: notifier.handled >= accepted, 30, "the notifier to handle every accepted order")
        handle.force_flush(10_000)
        summary = _summarise(list(receiver.records()))

    print(
        json.dumps(
            {
                "orders": dict(statuses),
                "correlation_ids_sample": ids[:3],
                "notified": notifier.handled,
                "received_by_otlp": summary,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
