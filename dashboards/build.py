"""The dashboards, built with grafana-foundation-sdk (the release for Grafana 11.6, the version compose runs).

``python -m dashboards`` renders each to ``dashboards/json/<uid>.json``; a test fails when a committed file is not
what this module renders. Datasource uids (``mimir``, ``loki``, ``tempo``) and dashboard uids are fixed so the
links between dashboards, alerts and datasources hold; ``provisioning/`` provisions the same uids.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard, logs, loki, nodegraph, prometheus, stat, tempo, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

OUT = Path(__file__).resolve().parent / "json"
MIMIR = DataSourceRef(type_val="prometheus", uid="mimir")
LOKI = DataSourceRef(type_val="loki", uid="loki")
TEMPO = DataSourceRef(type_val="tempo", uid="tempo")

# the label names the collector's prometheusremotewrite exporter gives the resource attributes
ENV, SERVICE = "deployment_environment_name", "service_name"
SEL = f'{ENV}=~"$env", {SERVICE}=~"$service"'
HTTP = "http_server_request_duration_seconds"
SPANS = "traces_span_metrics"
SERVER_OR_CONSUMER = 'span_kind=~"SPAN_KIND_SERVER|SPAN_KIND_CONSUMER"'


def prom(expr: str, legend: str = "", exemplar: bool = False) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").exemplar(exemplar).datasource(MIMIR)


def series(title: str, description: str, unit: str, *queries: prometheus.Dataquery, width: int = 12) -> Any:
    panel = timeseries.Panel().title(title).description(description).unit(unit).datasource(MIMIR)
    panel = panel.height(8).span(width)
    for ref_id, query in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(query.ref_id(ref_id))
    return panel


def single(title: str, description: str, unit: str, query: prometheus.Dataquery, width: int = 6) -> Any:
    return stat.Panel().title(title).description(description).unit(unit).datasource(MIMIR).height(5).span(width) \
        .with_target(query.instant().ref_id("A"))  # fmt: skip


def base(uid: str, title: str, description: str, variables: bool = True) -> dashboard.Dashboard:
    board = (
        dashboard.Dashboard(title).uid(uid).description(description).tags(["otel-kit"]).refresh("30s")
        .time("now-1h", "now").timezone("browser").editable()
    )  # fmt: skip
    if variables:
        board = board.with_variable(
            dashboard.QueryVariable("env").label("Environment").datasource(MIMIR)
            .query(f"label_values({HTTP}_count, {ENV})").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .include_all(True).all_value(".*").multi(True)
        ).with_variable(
            dashboard.QueryVariable("service").label("Service").datasource(MIMIR)
            .query(f'label_values({SPANS}_calls_total{{{ENV}=~"$env"}}, {SERVICE})')
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).include_all(True).all_value(".*").multi(True)
        )  # fmt: skip
    for link_uid, link_title in LINKS.items():
        if link_uid != uid:
            board = board.link(
                dashboard.DashboardLink(link_title)
                .type("link")
                .url(f"/d/{link_uid}")
                .include_vars(True)
                .keep_time(True)
            )
    return board


LINKS = {
    "otel-kit-overview": "Service overview",
    "otel-kit-service-map": "Service map",
    "otel-kit-logs": "Logs",
    "otel-kit-saga": "Order saga",
    "otel-kit-slo": "SLOs",
    "otel-kit-collector": "Collector health",
}


def service_overview() -> dashboard.Dashboard:
    by_route = f"sum by ({SERVICE}, http_route)"
    quantile = "histogram_quantile({q}, sum by ({svc}, http_route, le) (rate({h}_bucket{{{sel}}}[$__rate_interval])))"
    return (
        base("otel-kit-overview", "Service overview", "Rate, errors and duration per route of every HTTP service.")
        .with_panel(single("Requests", "Requests a second over the selected services.", "reqps",
                           prom(f"sum(rate({HTTP}_count{{{SEL}}}[$__rate_interval]))")))
        .with_panel(single("Errors", "Share of requests answered with a 5xx.", "percentunit",
                           prom(f'sum(rate({HTTP}_count{{{SEL}, http_response_status_code=~"5.."}}[$__rate_interval]) '
                                f"or rate({HTTP}_count{{{SEL}}}[$__rate_interval]) * 0) "
                                f"/ sum(rate({HTTP}_count{{{SEL}}}[$__rate_interval]))")))
        .with_panel(single("p95 duration", "95th percentile of request duration.", "s",
                           prom(f"histogram_quantile(0.95, sum by (le) (rate({HTTP}_bucket{{{SEL}}}[$__rate_interval])))")))
        .with_panel(single("Services", "Services that served requests.", "none",
                           prom(f"count(count by ({SERVICE}) ({HTTP}_count{{{SEL}}}))")))
        .with_panel(series("Request rate by route", "Requests a second per service and route.", "reqps",
                           prom(f"{by_route} (rate({HTTP}_count{{{SEL}}}[$__rate_interval]))", "{{service_name}} {{http_route}}")))
        .with_panel(series("Errors by route", "Share of each route's requests answered with a 5xx.", "percentunit",
                           prom(f'{by_route} (rate({HTTP}_count{{{SEL}, http_response_status_code=~"5.."}}[$__rate_interval]) '
                                f"or rate({HTTP}_count{{{SEL}}}[$__rate_interval]) * 0) "
                                f"/ {by_route} (rate({HTTP}_count{{{SEL}}}[$__rate_interval]))",
                                "{{service_name}} {{http_route}}")))
        .with_panel(series("Duration by route", "p50, p95 and p99 request duration; the dots are exemplars that open "
                           "the trace in Tempo.", "s",
                           *(prom(quantile.format(q=q, svc=SERVICE, h=HTTP, sel=SEL), f"p{int(q * 100)} {{{{service_name}}}} {{{{http_route}}}}",
                                  exemplar=True) for q in (0.5, 0.95, 0.99)), width=24))
        .with_panel(series("Responses by status", "Responses a second by status code.", "reqps",
                           prom(f"sum by (http_response_status_code) (rate({HTTP}_count{{{SEL}}}[$__rate_interval]))",
                                "{{http_response_status_code}}"), width=24))
    )  # fmt: skip


def service_map() -> dashboard.Dashboard:
    edges = "sum by (client, server) (rate(traces_service_graph_request_total[$__rate_interval]))"
    return (
        base("otel-kit-service-map", "Service map", "Who calls whom, from the collector's service graph.")
        .with_panel(nodegraph.Panel().title("Service graph").description(
            "Services and their calls (Tempo's service map, from the servicegraph metrics in Mimir).").datasource(TEMPO)
            .height(14).span(24).with_target(tempo.TempoQuery().query_type("serviceMap").datasource(TEMPO).ref_id("A")))
        .with_panel(series("Calls per edge", "Requests a second from client to server.", "reqps",
                           prom(edges, "{{client}} → {{server}}")))
        .with_panel(series("Failed calls per edge", "Failed requests a second from client to server.", "reqps",
                           prom("sum by (client, server) (rate(traces_service_graph_request_failed_total[$__rate_interval]) "
                                "or rate(traces_service_graph_request_total[$__rate_interval]) * 0)",
                                "{{client}} → {{server}}")))
    )  # fmt: skip


def logs_dashboard() -> dashboard.Dashboard:
    stream = '{service_name=~"$service", deployment_environment_name=~"$env"} | severity_text=~"$level" | correlation_id=~"$correlation_id"'
    return (
        base("otel-kit-logs", "Logs", "The services' log lines in Loki; each line links to its trace.")
        # the severity_text of the OTLP records (OpenTelemetry's names: WARN for WARNING, FATAL for CRITICAL)
        .with_variable(dashboard.CustomVariable("level").label("Level").values("FATAL,ERROR,WARN,INFO,DEBUG")
                       .include_all(True).all_value(".*").multi(True))
        .with_variable(dashboard.TextBoxVariable("correlation_id").label("Correlation id").default_value(".*"))
        .with_panel(timeseries.Panel().title("Log volume").description("Log lines a minute by level.").unit("short")
                    .datasource(LOKI).height(7).span(24)
                    .with_target(loki.Dataquery().expr(f"sum by (severity_text) (count_over_time({stream} [1m]))")
                                 .legend_format("{{severity_text}}").datasource(LOKI).ref_id("A")))
        .with_panel(logs.Panel().title("Log lines").description(
            "Filter by service, level and correlation id; open a line for its trace (the trace_id derived field).")
            .datasource(LOKI).height(18).span(24).show_time(True).enable_log_details(True).sort_order("Descending")
            .with_target(loki.Dataquery().expr(stream).datasource(LOKI).ref_id("A")))
    )  # fmt: skip


def saga() -> dashboard.Dashboard:
    orders = "shop_orders_total"
    return (
        base("otel-kit-saga", "Order saga", "Orders placed, completed and compensated, and the asynchronous side.")
        .with_panel(single("Orders", "Orders a second, all outcomes.", "ops",
                           prom(f'sum(rate({orders}{{{ENV}=~"$env"}}[$__rate_interval]))')))
        .with_panel(single("Compensated", "Share of placed orders that were compensated.", "percentunit",
                           prom(f'sum(rate({orders}{{{ENV}=~"$env", outcome="compensated"}}[$__rate_interval]) or '
                                f'rate({orders}{{{ENV}=~"$env"}}[$__rate_interval]) * 0) / '
                                f'sum(rate({orders}{{{ENV}=~"$env", outcome=~"completed|compensated"}}[$__rate_interval]))')))
        .with_panel(single("Outbox", "Order events waiting for the broker.", "short",
                           prom(f'max(shop_outbox_pending{{{ENV}=~"$env"}})')))
        .with_panel(single("Dead letters", "Messages in the dead-letter queue.", "short",
                           prom('sum(rabbitmq_queue_messages_ready{queue="dead-letters"})')))
        .with_panel(series("Orders by outcome", "Orders a second: completed, compensated, cancelled.", "ops",
                           prom(f'sum by (outcome) (rate({orders}{{{ENV}=~"$env"}}[$__rate_interval]))', "{{outcome}}")))
        .with_panel(series("Compensations by reason", "Why orders were compensated.", "ops",
                           prom(f'sum by (reason) (rate({orders}{{{ENV}=~"$env", outcome="compensated"}}[$__rate_interval]) '
                                f'or rate({orders}{{{ENV}=~"$env", outcome="completed"}}[$__rate_interval]) * 0)', "{{reason}}")))
        .with_panel(series("Saga duration", "p50 and p95 time to place an order, by outcome.", "s",
                           *(prom(f'histogram_quantile({q}, sum by (outcome, le) (rate(shop_saga_duration_seconds_bucket{{{ENV}=~"$env"}}[$__rate_interval])))',
                                  f"p{int(q * 100)} {{{{outcome}}}}") for q in (0.5, 0.95))))
        .with_panel(series("Payments by outcome", "Charges a second: charged, declined, failed, refunded.", "ops",
                           prom(f'sum by (outcome) (rate(shop_payments_charges_total{{{ENV}=~"$env"}}[$__rate_interval]))', "{{outcome}}")))
        .with_panel(series("Queue depth (cashback lag)", "Messages waiting per queue; cashback's is its lag.", "short",
                           prom("sum by (queue) (rabbitmq_queue_messages_ready)", "{{queue}}")))
        .with_panel(series("Cashback credited", "Confirmed orders credited with cashback a second.", "ops",
                           prom(f'sum(rate(shop_cashback_credited_total{{{ENV}=~"$env"}}[$__rate_interval]))', "credited")))
    )  # fmt: skip


def slos() -> dashboard.Dashboard:
    sel = f'{{{ENV}=~"$env", {SERVICE}=~"$service"}}'
    panels: list[Any] = []
    for slo, ratio, budget in (("availability", "http_errors", 0.005), ("latency", "http_slow", 0.05)):
        panels += [
            series(f"{slo.capitalize()}: error budget left", f"Share of the {budget:.1%} budget left, over the last day "
                   "(1 = untouched, below 0 = spent).", "percentunit",
                   prom(f"1 - service:{ratio}:ratio_rate1d{sel} / {budget}", "{{service_name}}")),
            series(f"{slo.capitalize()}: burn rate", "How many times faster than allowed the budget burns (1 = "
                   "exactly on budget; the fast alert pages at 14.4 over 1 h).", "none",
                   prom(f"service:{ratio}:ratio_rate1h{sel} / {budget}", "1h {{service_name}}"),
                   prom(f"service:{ratio}:ratio_rate6h{sel} / {budget}", "6h {{service_name}}")),
        ]  # fmt: skip
    board = base("otel-kit-slo", "SLOs", "Availability (99.5 % without a 5xx) and latency (95 % within 0.5 s) per "
                 "service: budget left and burn rates, from the recording rules of alerts/slo.rules.yml.")  # fmt: skip
    for panel in panels:
        board = board.with_panel(panel)
    return board


def collector() -> dashboard.Dashboard:
    def rate_by(label: str, *metrics: str) -> str:
        return f"sum by ({label}) (" + " or ".join(f"rate({m}[$__rate_interval])" for m in metrics) + ")"

    return (
        base("otel-kit-collector", "Collector health", "What the collector accepted, refused, sent and dropped.",
             variables=False)
        .with_panel(series("Accepted", "Spans and log records a second accepted by each receiver.", "short",
                           prom(rate_by("receiver", "otelcol_receiver_accepted_spans", "otelcol_receiver_accepted_log_records"), "{{receiver}}")))
        .with_panel(series("Refused", "Items a second refused by each receiver (memory limit, full queue).", "short",
                           prom(rate_by("receiver", "otelcol_receiver_refused_spans", "otelcol_receiver_refused_log_records"), "{{receiver}}")))
        .with_panel(series("Sent", "Items a second each exporter delivered.", "short",
                           prom(rate_by("exporter", "otelcol_exporter_sent_spans", "otelcol_exporter_sent_log_records"), "{{exporter}}")))
        .with_panel(series("Export failures", "Items a second each exporter failed to deliver (they wait in the queue).",
                           "short", prom("sum by (exporter) (rate(otelcol_exporter_send_failed_spans[$__rate_interval]) or "
                                         "rate(otelcol_exporter_sent_spans[$__rate_interval]) * 0)", "{{exporter}}")))
        .with_panel(series("Queue fill", "Sending queue size over its capacity, per exporter.", "percentunit",
                           prom("max by (exporter) (otelcol_exporter_queue_size / otelcol_exporter_queue_capacity)", "{{exporter}}")))
        .with_panel(series("Memory", "Resident memory of the collector.", "bytes",
                           prom("max(otelcol_process_memory_rss)", "rss")))
        .with_panel(series("Lost in services", "Telemetry the services could not export (otel_kit.export.failed and "
                           "otel_kit.queue.dropped), per service and signal.", "short",
                           prom("sum by (service_name, signal) (rate(otel_kit_export_failed_total[$__rate_interval]) or "
                                "rate(otel_kit_queue_dropped_total[$__rate_interval]) or "
                                "rate(traces_span_metrics_calls_total[$__rate_interval]) * 0)", "{{service_name}} {{signal}}"),
                           width=24))
    )  # fmt: skip


DASHBOARDS: dict[str, Callable[[], dashboard.Dashboard]] = {
    "otel-kit-overview": service_overview,
    "otel-kit-service-map": service_map,
    "otel-kit-logs": logs_dashboard,
    "otel-kit-saga": saga,
    "otel-kit-slo": slos,
    "otel-kit-collector": collector,
}


def render(uid: str) -> str:
    """The dashboard's JSON as committed (sorted keys, two-space indent, final newline)."""
    model = DASHBOARDS[uid]().build()
    return json.dumps(json.loads(JSONEncoder(sort_keys=True).encode(model)), indent=2, sort_keys=True) + "\n"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for uid in DASHBOARDS:
        (OUT / f"{uid}.json").write_text(render(uid))
        print(f"wrote {OUT / f'{uid}.json'}")
