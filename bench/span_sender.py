"""Sends N spans over OTLP gRPC as fast as one Python process can, then flushes: the load for collector_throughput.

    python -m bench.span_sender --endpoint http://127.0.0.1:4317 --spans 100000

Spans come in CLIENT/SERVER pairs across two services so the service-graph connector has edges to build.
Prints the number of spans handed to the exporter.
"""

from __future__ import annotations

import argparse

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, set_span_in_context


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--spans", type=int, required=True)
    args = parser.parse_args()
    providers = []
    for service in ("bench-frontend", "bench-backend"):
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        exporter = OTLPSpanExporter(endpoint=args.endpoint, insecure=True)
        provider.add_span_processor(
            BatchSpanProcessor(
                exporter, max_queue_size=args.spans, max_export_batch_size=1024, schedule_delay_millis=50
            )
        )
        providers.append(provider)
    front, back = (p.get_tracer("bench") for p in providers)
    attrs = {"http.request.method": "GET", "http.route": "/items/{id}", "http.response.status_code": 200}
    for _ in range(args.spans // 2):
        client = front.start_span("GET", kind=SpanKind.CLIENT, attributes=attrs)
        back.start_span("GET /items/{id}", context=set_span_in_context(client), kind=SpanKind.SERVER,
                        attributes=attrs).end()  # fmt: skip
        client.end()
    for provider in providers:
        provider.force_flush(120_000)
        provider.shutdown()
    print(args.spans // 2 * 2)


if __name__ == "__main__":
    main()
