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


SERVICE = "quickstart-shop"


def _total(prometheus: Any, promql: str) -> float:
    return sum(float(row["value"][1]) for row in prometheus.query(promql))


def _trace_story(tempo: Any, trace_hex: str) -> list[str]:
    """The spans of one trace as indented lines, parents before children."""
    from demo_services.stack.servers import hex_id

    spans = [span for _, span in tempo.spans() if hex_id(span["traceId"]) == trace_hex]
    by_parent: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_parent.setdefault(hex_id(span.get("parentSpanId", "")), []).append(span)
    ids = {hex_id(span["spanId"]) for span in spans}
    lines: list[str] = []

    def walk(span: dict[str, Any], depth: int) -> None:
        duration_ms = (int(span["endTimeUnixNano"]) - int(span["startTimeUnixNano"])) / 1e6
        kind = span.get("kind", "").removeprefix("SPAN_KIND_").lower()
        status = " ERROR" if span.get("status", {}).get("code") == "STATUS_CODE_ERROR" else ""
        lines.append(f"{'  ' * depth}{span['name']}  [{kind}] {duration_ms:.1f} ms{status}")
        for child in sorted(by_parent.get(hex_id(span["spanId"]), []), key=lambda s: int(s["startTimeUnixNano"])):
            walk(child, depth + 1)

    for root in (s for s in spans if hex_id(s.get("parentSpanId", "")) not in ids):
        walk(root, 1)
    return lines


def _report(statuses: Counter[int], notifier: Notifier, tempo: Any, loki: Any, mimir: Any) -> str:
    from demo_services.stack.servers import attributes, hex_id

    spans = tempo.spans()
    traces = {hex_id(span["traceId"]) for _, span in spans}
    failed = {hex_id(span["traceId"]) for _, span in spans if span.get("status", {}).get("code") == "STATUS_CODE_ERROR"}
    records = [record for _, record in loki.log_records()]
    out = [
        f"orders: {sum(statuses.values())} sent, "
        + ", ".join(f"{n} x HTTP {code}" for code, n in sorted(statuses.items())),
        f"notifier handled {notifier.handled} order events from RabbitMQ",
        f"Tempo received {len(spans)} spans in {len(traces)} traces ({len(failed)} with an error)",
        f"Loki received {len(records)} log records",
    ]
    ok = next(
        (
            t
            for t in sorted(traces)
            if t not in failed
            and any(span["name"].startswith("process") for _, span in spans if hex_id(span["traceId"]) == t)
        ),
        None,
    )
    for title, trace_hex in (("a placed order", ok), ("a failed order", next(iter(sorted(failed)), None))):
        if trace_hex is None:
            continue
        cids = {
            attributes(span.get("attributes", [])).get("correlation_id")
            for _, span in spans
            if hex_id(span["traceId"]) == trace_hex
        }
        logs = [r for r in records if hex_id(r.get("traceId", "")) == trace_hex]
        out += ["", f"{title}: trace {trace_hex}, correlation id {', '.join(sorted(c for c in cids if c))}"]
        out += _trace_story(tempo, trace_hex)
        out += [f"    log: {r['body'].get('stringValue', '')}" for r in logs]
    selector = f'service_name="{SERVICE}"'
    by_route = "sum by (http_route, http_response_status_code)"
    queries = {
        "requests by route and status (the service's own histogram)": (
            f"{by_route} (http_server_request_duration_seconds_count{{{selector}}})"
        ),
        "calls by span name (span_metrics)": f"sum by (span_name) (traces_span_metrics_calls_total{{{selector}}})",
        "service graph edges (service_graph)": "sum by (client, server) (traces_service_graph_request_total)",
    }
    out.append("")
    out.append("Prometheus (remote write, as Mimir would get it):")
    for title, promql in queries.items():
        out.append(f"  {title}:")
        for row in mimir.query(promql):
            labels = ", ".join(f"{k}={v}" for k, v in sorted(row["metric"].items()))
            out.append(f"    {labels or '(all)'}: {float(row['value'][1]):g}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="otel-kit quickstart demo")
    parser.add_argument("--requests", type=int, default=20, help="orders to place (default 20)")
    parser.add_argument("--fail-every", type=int, default=7, help="inventory fails every Nth call (0: never)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.fail_every < 0:
        parser.error("--requests must be at least 1 and --fail-every at least 0")

    import httpx

    from demo_services.stack.servers import (
        Collector,
        OtlpReceiver,
        Prometheus,
        RabbitMQ,
        serve_asgi,
        serve_wsgi,
        wait_until,
    )

    def step(text: str) -> None:
        print(f"==> {text}", file=sys.stderr, flush=True)

    with ExitStack() as stack:
        step("starting RabbitMQ, Prometheus (for Mimir), OTLP captures (for Tempo and Loki) on loopback")
        rabbit = stack.enter_context(RabbitMQ())
        mimir = stack.enter_context(Prometheus())
        tempo = stack.enter_context(OtlpReceiver())
        loki = stack.enter_context(OtlpReceiver())
        step("starting the otel-kit collector (base + lgtm)")
        backends = {
            "TEMPO_OTLP_ENDPOINT": f"127.0.0.1:{tempo.grpc_port}",
            "LOKI_OTLP_ENDPOINT": f"http://127.0.0.1:{loki.http_port}/otlp",
            "MIMIR_REMOTE_WRITE_URL": mimir.remote_write_url,
        }
        collector = stack.enter_context(Collector(["lgtm.yaml"], backends))
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.endpoint
        os.environ.setdefault("OTEL_METRIC_EXPORT_INTERVAL", "1000")
        os.environ.setdefault("OTEL_KIT_LOG_STDOUT", "false")  # keep the terminal for the report

        import otel_kit

        handle = otel_kit.init(SERVICE, service_version="0.1.0", environment="demo")
        stack.callback(otel_kit.shutdown)
        step("starting gateway (FastAPI), inventory (Flask) and notifier (RabbitMQ consumer)")
        queue = f"notifications-{uuid.uuid4().hex[:8]}"
        inventory_url = stack.enter_context(serve_wsgi(inventory_app(fail_every=args.fail_every)))
        gateway = gateway_app(inventory_url, rabbit.url, queue)
        stack.callback(gateway.state.amqp.close)
        gateway_url = stack.enter_context(serve_asgi(gateway))
        notifier = stack.enter_context(Notifier(rabbit.url, queue).running())

        statuses: Counter[int] = Counter()
        with httpx.Client(base_url=gateway_url, timeout=10) as client:
            for n in range(args.requests):
                response = client.post("/orders", json={"sku": f"book-{n % 5}", "qty": 1})
                statuses[response.status_code] += 1
                print(f"\rorders placed: {n + 1}/{args.requests}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        wait_until(lambda: notifier.handled >= statuses[200], 30, "the notifier to handle every accepted order")
        step("flushing and waiting for the collector to deliver")
        handle.force_flush(10_000)
        wait_until(lambda: len({s["traceId"] for _, s in tempo.spans()}) >= args.requests, 30, "traces at Tempo")
        # span_metrics and service_graph flush every 5 s: wait until they have counted every span
        span_count = len(tempo.spans())
        wait_until(
            lambda: _total(mimir, f'traces_span_metrics_calls_total{{service_name="{SERVICE}"}}') >= span_count,
            30,
            "span metrics in Prometheus",
        )
        print(_report(statuses, notifier, tempo, loki, mimir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
