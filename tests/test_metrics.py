"""Metrics: semantic-convention HTTP histograms, bounded cardinality, the Prometheus pull endpoint."""

from __future__ import annotations

import urllib.request

import pytest
from opentelemetry import metrics
from opentelemetry.sdk.metrics.export import HistogramDataPoint

from demo_services.stack.servers import OtlpReceiver, attributes, free_port
from otel_kit import testing
from otel_kit._internal.metrics import HTTP_DURATION_ATTRIBUTES, HTTP_DURATION_BUCKETS, OVERFLOW_ATTRIBUTE
from tests.asgi import call, ping_app


def test_server_duration_histogram_has_semconv_name_buckets_and_only_allowed_attributes(
    tel: testing.Capture,
) -> None:
    app = ping_app()
    for _ in range(3):
        assert call(app, [(b"user-agent", b"test"), (b"x-user-id", b"u-1")])[0] == 200
    metric = tel.metrics()["http.server.request.duration"]
    assert metric.unit == "s"
    points = list(metric.data.data_points)
    assert len(points) == 1
    point = points[0]
    assert isinstance(point, HistogramDataPoint)
    assert point.count == 3
    assert tuple(point.explicit_bounds) == HTTP_DURATION_BUCKETS
    assert set(point.attributes) <= HTTP_DURATION_ATTRIBUTES
    assert point.attributes["http.route"] == "/ping"
    assert point.attributes["http.request.method"] == "GET"
    assert point.attributes["http.response.status_code"] == 200


def test_series_beyond_the_limit_fold_into_one_overflow_series_and_are_counted() -> None:
    with testing.capture("svc", series_limit=10) as tel:
        counter = metrics.get_meter("shop").create_counter("shop.orders")
        for user in range(50):
            counter.add(1, {"user.id": str(user)})
        points = list(tel.metrics()["shop.orders"].data.data_points)
    assert len(points) == 10
    overflow = [p for p in points if p.attributes.get(OVERFLOW_ATTRIBUTE) is True]
    assert len(overflow) == 1 and overflow[0].value == 41
    assert sum(p.value for p in points) == 50  # nothing lost, only folded


def test_overflow_count_is_exported_as_a_metric() -> None:
    with testing.capture("svc", series_limit=10) as tel:
        counter = metrics.get_meter("shop").create_counter("shop.views")
        for page in range(25):
            counter.add(1, {"page": str(page)})
        exported = tel.metrics()["otel_kit.metric.series_overflow"]
        values = {p.attributes["metric"]: p.value for p in exported.data.data_points}
    assert values == {"shop.views": 16}


def test_existing_series_keep_counting_after_the_limit_is_reached() -> None:
    with testing.capture("svc", series_limit=10) as tel:
        counter = metrics.get_meter("shop").create_counter("shop.carts")
        for n in range(30):
            counter.add(1, {"n": str(n % 12)})
        points = {p.attributes.get("n"): p.value for p in tel.metrics()["shop.carts"].data.data_points}
    # the first 9 attribute sets each got their own series for every hit
    assert all(points[str(n)] == (3 if n < 6 else 2) for n in range(9))


def test_an_applications_own_meter_provider_keeps_every_series_beside_the_toolkits() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    own_reader = InMemoryMetricReader()
    own = MeterProvider(metric_readers=[own_reader])
    with testing.capture("svc", series_limit=10) as tel:
        for name, meter in (("kit", metrics.get_meter("shop")), ("own", own.get_meter("shop"))):
            counter = meter.create_counter(f"shop.{name}.visits")
            for user in range(50):
                counter.add(1, {"user.id": str(user)})
        kit_points = list(tel.metrics()["shop.kit.visits"].data.data_points)
    data = own_reader.get_metrics_data()
    assert data is not None
    (own_metric,) = [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
    own_points = list(own_metric.data.data_points)
    own.shutdown()
    assert len(kit_points) == 10  # the toolkit's limit
    assert len(own_points) == 50 and not any(OVERFLOW_ATTRIBUTE in p.attributes for p in own_points)


@pytest.mark.e2e
def test_prometheus_endpoint_serves_metrics_for_scraping() -> None:
    port = free_port()
    with testing.capture("scraped", metrics_exporter="prometheus", prometheus_host="127.0.0.1", prometheus_port=port):
        metrics.get_meter("shop").create_counter("shop.orders.placed", unit="{order}").add(3, {"channel": "web"})
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
    assert 'shop_orders_placed_total{channel="web"' in body
    assert "target_info{" in body and 'service_name="scraped"' in body


def test_busy_prometheus_port_is_reported_and_the_app_still_starts() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with testing.capture(
            "svc", metrics_exporter="prometheus", prometheus_host="127.0.0.1", prometheus_port=port
        ) as tel:
            assert tel.handle.prometheus_port is None
            assert tel.handle.tracer_provider is not None
    assert any(
        "OTEL_EXPORTER_PROMETHEUS_PORT" in line["message"] for line in tel.log_lines() if line["level"] == "WARNING"
    )


@pytest.mark.e2e
def test_self_metrics_are_scraped_under_the_names_the_alerts_and_dashboards_use() -> None:
    """alerts/platform.rules.yml and the collector dashboard query these exact names."""
    from otel_kit._internal.selfmetrics import EXPORT_FAILED, QUEUE_DROPPED, counts

    port = free_port()
    with testing.capture("scraped", metrics_exporter="prometheus", prometheus_host="127.0.0.1", prometheus_port=port):
        counts().add(EXPORT_FAILED, "traces", 2)
        counts().add(QUEUE_DROPPED, "logs", 1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
    lines = body.splitlines()
    assert any(line.startswith("otel_kit_export_failed_total{") and 'signal="traces"} 2.0' in line for line in lines)
    assert any(line.startswith("otel_kit_queue_dropped_total{") and 'signal="logs"} 1.0' in line for line in lines)


def _many_routes(app: object, routes: int) -> None:
    for n in range(routes):
        assert call(app, [], f"/items/{n}")[0] == 200


def _routes_app() -> object:
    from fastapi import FastAPI

    import otel_kit

    app = FastAPI()
    for n in range(30):
        app.add_api_route(f"/items/{n}", lambda: {"ok": True}, methods=["GET"])
    return otel_kit.instrument_fastapi(app)


def test_http_duration_beyond_the_limit_lands_in_the_marked_overflow_series() -> None:
    """``http.server.request.duration`` has a view with an attribute allow-list, which used to filter the marker
    out: the overflow went to a series with no attributes at all."""
    with testing.capture("svc", series_limit=10) as tel:
        _many_routes(_routes_app(), 30)
        points = list(tel.metrics()["http.server.request.duration"].data.data_points)
    assert len(points) == 10
    overflow = [p for p in points if p.attributes == {OVERFLOW_ATTRIBUTE: True}]
    assert len(overflow) == 1 and overflow[0].count == 21  # type: ignore[union-attr]
    assert all(p.attributes for p in points)
    assert sum(p.count for p in points) == 30  # type: ignore[union-attr]


@pytest.mark.e2e
def test_http_duration_overflow_series_reaches_prometheus_and_otlp(otlp_receiver: OtlpReceiver) -> None:
    """Through the real exporters: the series a scrape of ``/metrics`` shows, and what the OTLP exporter sends to a
    receiving process."""
    port = free_port()
    with testing.capture(
        "svc",
        series_limit=10,
        metrics_exporter="prometheus,otlp",
        prometheus_host="127.0.0.1",
        prometheus_port=port,
        endpoint=f"http://127.0.0.1:{otlp_receiver.grpc_port}",
    ) as tel:
        _many_routes(_routes_app(), 30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
        tel.handle.force_flush()
    counts = [line for line in body.splitlines() if line.startswith("http_server_request_duration_seconds_count{")]
    assert len(counts) == 10
    (overflow_line,) = [line for line in counts if 'otel_metric_overflow="true"' in line]
    assert overflow_line.endswith(" 21.0") and 'http_route=""' in overflow_line  # the exporter fills in empty labels
    assert all('http_route="/items/' in line for line in counts if line != overflow_line)
    received = [m for _, m in otlp_receiver.metrics() if m["name"] == "http.server.request.duration"]
    points = [p for m in received for p in m["histogram"]["dataPoints"]]
    overflow = [p for p in points if attributes(p.get("attributes", [])) == {OVERFLOW_ATTRIBUTE: True}]
    assert overflow and int(overflow[-1]["count"]) == 21
    assert all(p.get("attributes") for p in points)


def test_http_client_duration_beyond_the_limit_keeps_the_overflow_marker() -> None:
    """The client histogram's view allow-lists ``server.address``; a client calling many hosts overflows."""
    with testing.capture("svc", series_limit=10) as tel:
        histogram = metrics.get_meter("client").create_histogram("http.client.request.duration", unit="s")
        for host in range(25):
            histogram.record(0.01, {"http.request.method": "GET", "server.address": f"h{host}", "url.full": "x"})
        points = list(tel.metrics()["http.client.request.duration"].data.data_points)
    assert len(points) == 10
    assert [p.count for p in points if p.attributes == {OVERFLOW_ATTRIBUTE: True}] == [16]  # type: ignore[union-attr]
