"""The project's collector, built from collector/manifest.yaml, with real telemetry through the real binary.

Tempo and Loki cannot run here: an OTLP receiving process listens where they would (Tempo's OTLP gRPC port,
Loki's ``/otlp`` HTTP path) and records exactly what the collector's real exporters send. Mimir is stood in for
by Prometheus from Debian, which takes the same remote-write protocol and answers the same PromQL.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from opentelemetry import trace
from opentelemetry.trace import SpanKind, format_trace_id

import otel_kit
from demo_services.quickstart import inventory_app
from demo_services.stack.servers import (
    COLLECTOR_DIR,
    Collector,
    OtlpReceiver,
    Prometheus,
    attributes,
    collector_binary,
    free_ports,
    hex_id,
    serve_wsgi,
    wait_until,
)
from otel_kit import testing

pytestmark = pytest.mark.e2e

CONFIG = COLLECTOR_DIR / "config"
ROOT = COLLECTOR_DIR.parent
# without a region the AWS SDK asks the EC2 instance metadata service, an address no test may reach
NO_AWS_METADATA = {"AWS_EC2_METADATA_DISABLED": "true"}


def _validate(*configs: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The collector's own ``validate``, which builds every component: the awsxray receiver binds its UDP port."""
    import os

    udp, proxy = free_ports(2)
    bound = {"OTELCOL_XRAY_UDP_ENDPOINT": f"127.0.0.1:{udp}", "OTELCOL_XRAY_PROXY_ENDPOINT": f"127.0.0.1:{proxy}"}
    argv = [str(collector_binary()), "validate", *(a for c in configs for a in ("--config", str(c)))]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env={**(env or os.environ), **bound})


@pytest.mark.parametrize(
    "overlays",
    [["lgtm.yaml"], ["aws.yaml"], ["lgtm.yaml", "auth.yaml"], ["aws.yaml", "auth.yaml"], ["lgtm.yaml", "scrape.yaml"]],
)
def test_shipped_configs_validate(overlays: list[str], tmp_path: Path) -> None:
    import os

    env = {**os.environ, "OTELCOL_STORAGE_DIR": str(tmp_path), "OTELCOL_BEARER_TOKEN": "t", **NO_AWS_METADATA}
    env |= {"OTELCOL_TLS_CERT_FILE": str(tmp_path / "c.pem"), "OTELCOL_TLS_KEY_FILE": str(tmp_path / "k.pem")}
    env["AWS_REGION"] = "eu-west-1"  # validate builds the exporters, and the AWS ones resolve their region
    result = _validate(CONFIG / "base.yaml", *(CONFIG / o for o in overlays), env=env)
    assert result.returncode == 0, result.stderr


def test_the_aws_overlay_without_a_region_stops_at_start_naming_it(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    env |= {"OTELCOL_STORAGE_DIR": str(tmp_path), **NO_AWS_METADATA}
    result = _validate(CONFIG / "base.yaml", CONFIG / "aws.yaml", env=env)
    assert result.returncode != 0
    # the AWS exporters cannot be built: the error names the region lookup (``otel-kit doctor --aws`` names
    # AWS_REGION before the collector starts)
    assert 'failed to create "aws' in result.stderr and "GetRegion" in result.stderr


def test_broken_config_fails_validation_naming_the_problem(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        (CONFIG / "lgtm.yaml").read_text().replace("resource_to_telemetry_conversion", "resource_to_telemtry")
    )
    result = _validate(CONFIG / "base.yaml", broken)
    assert result.returncode != 0
    assert "resource_to_telemtry" in result.stderr
    assert "prometheusremotewrite/mimir" in result.stderr


@pytest.fixture(scope="module")
def lgtm() -> Iterator[tuple[Collector, OtlpReceiver, OtlpReceiver, Prometheus]]:
    """The collector with the lgtm overlay, its backends stood in for on loopback."""
    with OtlpReceiver() as tempo, OtlpReceiver() as loki, Prometheus() as mimir:
        env = {
            "TEMPO_OTLP_ENDPOINT": f"127.0.0.1:{tempo.grpc_port}",
            "LOKI_OTLP_ENDPOINT": f"http://127.0.0.1:{loki.http_port}/otlp",
            "MIMIR_REMOTE_WRITE_URL": mimir.remote_write_url,
        }
        with Collector(["lgtm.yaml"], env) as collector:
            yield collector, tempo, loki, mimir


def test_service_telemetry_reaches_tempo_loki_and_mimir_through_the_collector(
    monkeypatch: pytest.MonkeyPatch, lgtm: tuple[Collector, OtlpReceiver, OtlpReceiver, Prometheus]
) -> None:
    collector, tempo, loki, mimir = lgtm
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "500")
    service = "checkout-e2e"
    with testing.capture(service, traces_exporter="otlp", metrics_exporter="otlp", logs_exporter="otlp") as tel:
        with serve_wsgi(inventory_app()) as inventory_url:

            @otel_kit.traced
            def checkout(n: int) -> None:
                with httpx.Client(base_url=inventory_url) as client:
                    assert client.get(f"/stock/book-{n}").status_code == 200

            for n in range(5):
                with otel_kit.correlation_scope(f"order-{n}"):
                    checkout(n)
        assert tel.handle.force_flush(10_000)
        local_trace_ids = {format_trace_id(s.context.trace_id) for s in tel.spans()}
        stdout_trace_ids = {line["trace_id"] for line in tel.log_lines() if line["logger"] == "inventory"}

        # traces toward Tempo: every span, with the service's resource, and the trace ids its logs carry
        wait_until(lambda: len(tempo.spans()) >= len(tel.spans()), 30, "spans at Tempo")
        at_tempo = tempo.spans()
        assert {resource["service.name"] for resource, _ in at_tempo} == {service}
        assert {resource["telemetry.distro.name"] for resource, _ in at_tempo} == {"otel-kit"}
        assert {hex_id(span["traceId"]) for _, span in at_tempo} == local_trace_ids
        assert stdout_trace_ids <= local_trace_ids and len(stdout_trace_ids) == 5

        # logs toward Loki's OTLP endpoint, joined to the same traces
        wait_until(lambda: len(loki.log_records()) >= 5, 30, "log records at Loki")
        stock_logs = [rec for res, rec in loki.log_records() if rec["body"].get("stringValue") == "stock checked"]
        assert {hex_id(rec["traceId"]) for rec in stock_logs} == stdout_trace_ids
        assert {attributes(rec["attributes"])["correlation_id"] for rec in stock_logs} == {
            f"order-{n}" for n in range(5)
        }

        # metrics toward Mimir: the service's own histogram, spanmetrics and the service graph, by PromQL
        selector = f'service_name="{service}"'
        queries = {
            "http histogram": f"http_server_request_duration_seconds_count{{{selector}}}",
            "spanmetrics calls": f"traces_span_metrics_calls_total{{{selector}}}",
            "spanmetrics duration": f"traces_span_metrics_duration_seconds_count{{{selector}}}",
            "service graph": f'traces_service_graph_request_total{{client="{service}",server="{service}"}}',
        }
        for what, promql in queries.items():
            wait_until(lambda q=promql: bool(mimir.query(q)), 60, f"{what} in Prometheus ({promql})")
        # the counts, once the connectors' next flush has counted every span
        spans = len(tel.spans())
        wait_until(lambda: _total(mimir, queries["spanmetrics calls"]) >= spans, 30, "span metrics to count every span")
    assert len([s for s in tel.spans() if s.kind is SpanKind.SERVER]) == 5
    assert _total(mimir, queries["http histogram"]) == 5
    assert _total(mimir, queries["spanmetrics calls"]) == spans == 15  # 5 x (traced function, client, server)
    assert _total(mimir, queries["service graph"]) == 5


def _trace_to_logs_query(trace_hex: str, span_tags: dict[str, str]) -> str:
    """The LogQL Grafana runs for a span's "Logs for this span": the provisioned ``tracesToLogsV2`` query after the
    provisioning's ``$$`` escape and Grafana's interpolation of ``${__tags}`` (the configured tags, renamed, joined
    with ", ") and ``${__trace.traceId}``, as Grafana's own createSpanLink tests spell it out (it cannot run here)."""
    import yaml

    provisioning = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/otel-kit.yaml").read_text())
    (tempo,) = [d for d in provisioning["datasources"] if d["type"] == "tempo"]
    link = tempo["jsonData"]["tracesToLogsV2"]
    assert link.get("customQuery") is True and not link.get("filterByTraceID")
    tags = ", ".join(f'{t.get("value") or t["key"]}="{span_tags[t["key"]]}"' for t in link["tags"])
    query = str(link["query"]).replace("$$", "$")
    return query.replace("${__tags}", tags).replace("${__trace.traceId}", trace_hex)


def _loki_matches(query: str, loki: OtlpReceiver) -> list[str]:
    """The lines a Loki 3.4 would return for ``query`` from what its OTLP endpoint was sent (tests/loki_otlp.py, a
    stand-in for Loki, which cannot run here; a query naming a field Loki does not store fails the test)."""
    from tests import loki_otlp

    config = yaml.safe_load((ROOT / "backends" / "loki" / "loki.yaml").read_text())
    stored = loki_otlp.entries([r["body"] for r in loki.records() if r["signal"] == "logs"], config)
    parsed = loki_otlp.parse(query)
    assert not loki_otlp.unknown_fields(parsed, stored), query
    return [e.line for e in loki_otlp.select(parsed, stored)]


def test_logs_for_a_span_finds_its_records_where_the_collector_sent_them(
    monkeypatch: pytest.MonkeyPatch, lgtm: tuple[Collector, OtlpReceiver, OtlpReceiver, Prometheus]
) -> None:
    """Grafana's Tempo → Loki link, as provisioned, applied to what the collector sent toward Loki. The default
    (filterByTraceID) searched the line text for the trace id: the line is the message alone, so it found nothing."""
    import logging

    collector, tempo, loki, _ = lgtm
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
    with testing.capture("links-e2e", traces_exporter="otlp", logs_exporter="otlp") as tel:
        with otel_kit.correlation_scope("link-1"), trace.get_tracer("t").start_as_current_span("pay") as span:
            logging.getLogger("payments").info("charge accepted")
            logging.getLogger("payments").warning("card near its limit")
        assert tel.handle.force_flush(10_000)
    trace_hex = format_trace_id(span.get_span_context().trace_id)
    wait_until(lambda: any(hex_id(s["traceId"]) == trace_hex for _, s in tempo.spans()), 30, "the span at Tempo")
    (resource, _), *_ = [(r, s) for r, s in tempo.spans() if hex_id(s["traceId"]) == trace_hex]
    query = _trace_to_logs_query(trace_hex, {k: str(v) for k, v in resource.items()})
    assert query == f'{{service_name="links-e2e"}} | trace_id="{trace_hex}"'
    wait_until(lambda: len(_loki_matches(query, loki)) == 2, 30, "the span's log records")
    assert sorted(_loki_matches(query, loki)) == ["card near its limit", "charge accepted"]
    # what the default filter looked for: the trace id in the line's text, which carries only the message
    assert not [r for _, r in loki.log_records() if trace_hex in r["body"].get("stringValue", "")]


def _total(prometheus: Prometheus, promql: str) -> float:
    return sum(float(row["value"][1]) for row in prometheus.query(promql))


def _failed_exports_of_one_span(who: str) -> dict[str, float]:
    """Send one span named ``<who> span`` with the OTLP settings in the environment; failed exports by signal."""
    with testing.capture(who, traces_exporter="otlp", shutdown_timeout_ms=3000) as tel:
        otel_kit.traced(lambda: None, name=f"{who} span")()
        tel.handle.force_flush(5000)
        failed = tel.metrics().get("otel_kit.export.failed")
        points = failed.data.data_points if failed else []
        return {p.attributes["signal"]: p.value for p in points}  # type: ignore[attr-defined,misc]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_auth_overlay_refuses_senders_without_the_bearer_token(monkeypatch: pytest.MonkeyPatch, protocol: str) -> None:
    with OtlpReceiver() as tempo, OtlpReceiver() as loki:
        env = {
            "OTELCOL_BEARER_TOKEN": "s3cret-token",
            "TEMPO_OTLP_ENDPOINT": f"127.0.0.1:{tempo.grpc_port}",
            "LOKI_OTLP_ENDPOINT": f"http://127.0.0.1:{loki.http_port}/otlp",
        }
        with Collector(["lgtm.yaml", "auth.yaml"], env) as collector:
            port = collector.grpc_port if protocol == "grpc" else collector.http_port
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2")
            sent = {}
            for who, headers in (("stranger", None), ("friend", "authorization=Bearer s3cret-token")):
                if headers:
                    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", headers)
                sent[who] = _failed_exports_of_one_span(who)
            wait_until(lambda: any(s["name"] == "friend span" for _, s in tempo.spans()), 30, "the friend's span")
            names = {s["name"] for _, s in tempo.spans()}
    assert names == {"friend span"}
    assert sent["friend"] == {}
    assert sent["stranger"] == {"traces": 1}  # the refused span is counted, over gRPC and HTTP alike


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_tls_with_a_private_ca_and_a_bearer_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, protocol: str
) -> None:
    from tests.certs import make_ca_and_server_cert

    ca, cert, key = make_ca_and_server_cert(tmp_path)
    with OtlpReceiver() as tempo, OtlpReceiver() as loki:
        env = {
            "OTELCOL_TLS_CERT_FILE": str(cert),
            "OTELCOL_TLS_KEY_FILE": str(key),
            "OTELCOL_BEARER_TOKEN": "tls-token",
            "TEMPO_OTLP_ENDPOINT": f"127.0.0.1:{tempo.grpc_port}",
            "LOKI_OTLP_ENDPOINT": f"http://127.0.0.1:{loki.http_port}/otlp",
        }
        with Collector(["lgtm.yaml", "tls.yaml", "auth.yaml"], env) as collector:
            port = collector.grpc_port if protocol == "grpc" else collector.http_port
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"https://127.0.0.1:{port}")
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer tls-token")
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2")
            failed = {}
            for who, trust in (("untrusting", None), ("trusting", str(ca))):
                if trust:
                    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", trust)
                failed[who] = _failed_exports_of_one_span(who)
            wait_until(lambda: any(s["name"] == "trusting span" for _, s in tempo.spans()), 30, "the trusted span")
            names = {s["name"] for _, s in tempo.spans()}
    assert names == {"trusting span"}
    assert failed == {"untrusting": {"traces": 1}, "trusting": {}}


def test_a_collector_whose_port_was_taken_before_it_started_starts_on_new_ones() -> None:
    """A free port can be taken between its choice and the collector's bind (an outgoing connection of any process
    may get it): the harness starts the collector again on new ports instead of failing the test that needed it."""
    collector = Collector([Path(__file__).resolve().parents[1] / "bench" / "collector-sink.yaml"])
    taken = collector.grpc_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        with collector:
            assert collector.grpc_port != taken
            assert collector.endpoint == f"http://127.0.0.1:{collector.grpc_port}"
            assert httpx.get(f"http://127.0.0.1:{collector.health_port}/").status_code == 200
