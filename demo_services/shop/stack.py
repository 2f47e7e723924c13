"""The local stack runner: the whole shop and its observability backends on free loopback ports, then a report.

Start order, each step waiting for a health check: the OTLP captures standing in for Tempo and Loki, Alertmanager,
Prometheus (standing in for Mimir, with the rules in ``alerts/``), the collector (base + lgtm overlay), RabbitMQ,
PostgreSQL (one database per service), then inventory, payments, orders, gateway and the three consumers.
Everything is stopped in reverse on exit, on Ctrl-C, on SIGTERM and when a step fails; ``stack.json`` in the
output folder lists every process and port while they run.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import signal
import sys
import time
from collections import Counter, defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

import httpx

from demo_services.shop.loadgen import LoadResult, run_load
from demo_services.stack.servers import (
    Alertmanager,
    Collector,
    ManagedProcess,
    MotoServer,
    OtlpReceiver,
    PagerDutyCapture,
    PostgreSQL,
    Prometheus,
    RabbitMQ,
    attributes,
    free_port,
    hex_id,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
HTTP_SERVICES = ("inventory", "payments", "orders", "gateway")
CONSUMERS = ("notifications", "cashback", "receipts")
AWS_ENV = {"AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}  # moto's
FAULTS = {
    # name: (service, fault values when on, values when off)
    "payment-decline": ("payments", {"decline_rate": 0.6}, {"decline_rate": 0}),
    "payment-latency": ("payments", {"latency_ms": 2500}, {"latency_ms": 0}),
    "inventory-slow": ("inventory", {"slow_query_ms": 400}, {"slow_query_ms": 0}),
    "cashback-crash": ("cashback", {}, {}),
    "broker-outage": ("rabbitmq", {}, {}),
}


def step(text: str) -> None:
    print(f"==> {text}", file=sys.stderr, flush=True)


@dataclass
class ShopStack:
    """The running stack; a context manager. ``out``: the folder for ``stack.json`` and the raw telemetry."""

    out: Path
    backend: str = "lgtm"  # or "aws": the collector's aws overlay sending to X-Ray, CloudWatch Logs and EMF (moto)
    api_key: str = field(default_factory=lambda: f"demo-{secrets.token_hex(8)}")
    rate_limit: float | None = None  # the gateway's requests a second per key (None: SHOP_RATE_LIMIT or 50)
    urls: dict[str, str] = field(default_factory=dict)
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    _pids: set[int] = field(default_factory=set)
    _ports: set[int] = field(default_factory=set)

    def __enter__(self) -> Self:
        self.out.mkdir(parents=True, exist_ok=True)
        self._stack = ExitStack()
        try:
            self._start()
        except BaseException:
            step("a step failed; stopping what was started")
            self._stack.close()
            self._write_manifest(running=False)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        step("stopping everything")
        self._stack.close()
        self._write_manifest(running=False)

    def _start(self) -> None:
        enter = self._stack.enter_context
        if self.backend == "aws":
            step("starting moto (AWS APIs: X-Ray, CloudWatch Logs, CloudWatch) and the otel-kit collector (base + aws)")
            self.moto = enter(MotoServer())
            endpoints = {"AWS_XRAY_ENDPOINT": self.moto.endpoint_url, "AWS_LOGS_ENDPOINT": self.moto.endpoint_url}
            self.collector = enter(Collector(["aws.yaml"], {**AWS_ENV, **endpoints}))
        else:
            step("starting OTLP captures for Tempo and Loki, a PagerDuty stand-in, Alertmanager and Prometheus (Mimir)")
            self.tempo, self.loki = enter(OtlpReceiver()), enter(OtlpReceiver())
            self.pagerduty = enter(PagerDutyCapture())
            self.alertmanager = enter(Alertmanager(alertmanager_config(self.out, self.pagerduty.url)))
            self.rabbitmq = RabbitMQ()
            self.collector = Collector(["lgtm.yaml"], {
                "TEMPO_OTLP_ENDPOINT": f"127.0.0.1:{self.tempo.grpc_port}",
                "LOKI_OTLP_ENDPOINT": f"http://127.0.0.1:{self.loki.http_port}/otlp",
            })  # fmt: skip
            rules = sorted((ROOT / "alerts").glob("*.rules.yml"))
            scrape = {
                "collector": f"127.0.0.1:{self.collector.metrics_port}",
                "rabbitmq": f"127.0.0.1:{self.rabbitmq.metrics_port}/metrics/per-object",
            }
            self.mimir = enter(Prometheus(rules, self.alertmanager.url, "5s", scrape))
            self.collector._env["MIMIR_REMOTE_WRITE_URL"] = self.mimir.remote_write_url
            step("starting the otel-kit collector (base + lgtm)")
            enter(self.collector)
        self._write_manifest()
        step("starting RabbitMQ and PostgreSQL")
        self.rabbitmq = enter(getattr(self, "rabbitmq", None) or RabbitMQ())
        self.postgres = enter(PostgreSQL(["orders", "inventory", "payments"]))
        self._write_manifest()
        for name in (*HTTP_SERVICES, *CONSUMERS):
            step(f"starting {name}")
            self.start_service(name)
        self._write_manifest()

    def _env(self, name: str) -> dict[str, str]:
        env = {
            "PYTHONPATH": str(ROOT),
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.collector.endpoint,
            "OTEL_KIT_ENVIRONMENT": "demo",
            "OTEL_KIT_SERVICE_VERSION": "1.0.0",
            "OTEL_METRIC_EXPORT_INTERVAL": "2000",
            "OTEL_BSP_SCHEDULE_DELAY": "500",
            "AMQP_URL": self.rabbitmq.url,
            "SHOP_API_KEYS": self.api_key,
            **{f"{svc.upper()}_URL": url for svc, url in self.urls.items()},
        }
        if name in ("inventory", "payments", "orders"):
            env["DATABASE_URL"] = self.postgres.url(name)
        if self.rate_limit is not None:
            env["SHOP_RATE_LIMIT"] = str(self.rate_limit)
        return env

    def start_service(self, name: str) -> None:
        """Start one service (again, after ``stop_service``) and wait until it is ready."""
        env = self._env(name)
        if name in HTTP_SERVICES:
            port = int(self.urls.get(name, f":{free_port()}").rsplit(":", 1)[1])
            self.urls[name] = f"http://127.0.0.1:{port}"
            env["PORT"] = str(port)
            if name == "inventory":  # a WSGI app under gunicorn; one process so its faults are one state
                argv = [sys.executable, "-m", "gunicorn", "--workers", "1", "--threads", "8", "--bind",
                        f"127.0.0.1:{port}", "demo_services.shop.inventory:app"]  # fmt: skip
            else:
                argv = [sys.executable, "-m", f"demo_services.shop.{name}"]
        else:
            argv = [sys.executable, "-m", "demo_services.shop.consumers", name]
        process = ManagedProcess(name, argv, env, self.out / "services")
        self.processes[name] = process
        self._stack.callback(process.stop)
        self._write_manifest()
        if name in HTTP_SERVICES:
            wait_until(lambda: process.check_alive() is None and _ok(f"{self.urls[name]}/health"), 60, name)
        else:
            wait_until(lambda: process.check_alive() is None and '"consuming"' in process.output_tail(50), 60, name)

    def stop_service(self, name: str, kill: bool = False) -> None:
        process = self.processes.pop(name)
        if kill:
            process.proc.kill()
        process.stop()

    def set_fault(self, name: str, on: bool) -> None:
        """Switch a fault (a key of FAULTS) on or off."""
        service, when_on, when_off = FAULTS[name]
        if name == "cashback-crash":
            self.stop_service("cashback", kill=True) if on else self.start_service("cashback")
        elif name == "broker-outage":
            self.rabbitmq.stop_node() if on else self.rabbitmq.start_node()
        else:
            httpx.put(f"{self.urls[service]}/admin/faults", json=when_on if on else when_off).raise_for_status()

    def _write_manifest(self, running: bool = True) -> None:
        """``stack.json``: every process and port the stack has started, so anyone can check none is left behind."""
        names = ("tempo", "loki", "alertmanager", "mimir", "moto", "collector", "postgres")
        servers = [getattr(self, n, None) for n in names]
        self._pids.update(s.pid() for s in servers if s is not None and s._proc is not None)
        self._ports.update(p for s in servers if s is not None for p in s.ports)
        rabbit = getattr(self, "rabbitmq", None)
        if rabbit is not None:
            self._pids.update(p.proc.pid for p in rabbit._procs)
            self._ports.add(rabbit.port)
        self._pids.update(p.proc.pid for p in self.processes.values())
        self._ports.update(int(url.rsplit(":", 1)[1]) for url in self.urls.values())
        manifest = {"running": running, "pids": sorted(self._pids), "ports": sorted(self._ports), "urls": self.urls}
        written = self.out / "stack.json.new"
        written.write_text(json.dumps(manifest, indent=2))
        written.replace(self.out / "stack.json")  # atomic: a reader never sees half a file


def alertmanager_config(folder: Path, pagerduty_url: str, routing_key: str | None = None) -> Path:
    """The project's ``alerts/alertmanager.yml`` pointed at ``pagerduty_url`` with demo timings (group wait 2 s,
    interval 5 s instead of 30 s and 5 min); the routing key (``PAGERDUTY_ROUTING_KEY``) goes to a file beside it."""
    import os

    import yaml

    config = yaml.safe_load((ROOT / "alerts" / "alertmanager.yml").read_text())
    config["route"].update(group_wait="2s", group_interval="5s")
    for receiver in config["receivers"]:
        for pagerduty in receiver.get("pagerduty_configs", []):
            pagerduty["url"] = pagerduty_url
    key = routing_key or os.environ.get("PAGERDUTY_ROUTING_KEY", "demo-routing-key")
    key_file = folder / "pagerduty-routing-key"
    key_file.write_text(key)
    key_file.chmod(0o600)
    for receiver in config["receivers"]:
        for pagerduty in receiver.get("pagerduty_configs", []):
            pagerduty["routing_key_file"] = str(key_file.resolve())
    path = folder / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(out: Path, rate: float, duration: float, faults: list[str], seed: int | None = None,
        backend: str = "lgtm") -> int:  # fmt: skip
    """Start the stack, drive load (faults on in the middle third), print the report, stop everything."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    started = time.monotonic()
    with ShopStack(out, backend) as shop:
        step(f"stack up in {time.monotonic() - started:.0f} s; services: "
             + ", ".join(f"{k} {v}" for k, v in shop.urls.items()))  # fmt: skip
        third = duration / 3
        result = LoadResult()
        phases = [(third, []), (third, faults), (duration - 2 * third, [])] if faults else [(duration, [])]
        for seconds, active in phases:
            for fault in active:
                step(f"fault on: {fault}")
                shop.set_fault(fault, True)
            part = run_load(shop.urls["gateway"], shop.api_key, rate, seconds, seed)
            for fault in active:
                step(f"fault off: {fault}")
                shop.set_fault(fault, False)
            result.outcomes.update(part.outcomes)
            result.confirmed += part.confirmed
            result.compensated += part.compensated
        step("waiting for the telemetry to arrive")
        kind = AwsReport if backend == "aws" else Report
        report = kind(shop, result)
        report.wait_for_telemetry()
        report.read()
        print(report.text())
        report.save_raw()
        step(f"raw telemetry written to {out}")
    return 0


class Report:
    """What a person wants after a run, from what the backends received."""

    traces_from = "Tempo"
    red_window = "last 5 min"

    def __init__(self, shop: ShopStack, load: LoadResult) -> None:
        self.shop, self.load = shop, load
        self.spans: list[tuple[str, dict[str, Any]]] = []
        self.logs: list[tuple[str, dict[str, Any]]] = []

    def read(self) -> None:
        """Take what the backends hold now (after ``wait_for_telemetry``)."""
        self.logs = self.load_logs()
        self.spans = self.load_spans()

    def load_spans(self) -> list[tuple[str, dict[str, Any]]]:
        """(service, span as OTLP JSON) for every span the backend received."""
        return [(r.get("service.name", "?"), s) for r, s in self.shop.tempo.spans()]

    def load_logs(self) -> list[tuple[str, dict[str, Any]]]:
        """(service, log record as OTLP JSON) for every log record the backend received."""
        return [(r.get("service.name", "?"), rec) for r, rec in self.shop.loki.log_records()]

    def wait_for_telemetry(self) -> None:
        """Until the first sagas the load generator saw are in the traces (and Prometheus has the span metrics)."""
        wanted = set(self.load.confirmed[:3] + self.load.compensated[:3])

        def sagas_seen() -> bool:
            ids = {attributes(s.get("attributes", [])).get("order.id") for _, s in self.load_spans()}
            return wanted <= ids

        wait_until(sagas_seen, 60, "the sampled sagas' traces")
        if self.shop.backend == "lgtm":
            wait_until(lambda: bool(self.shop.mimir.query("traces_span_metrics_calls_total")), 60, "span metrics")

    def _saga_trace(self, order_id: str) -> str | None:
        for _, span in self.spans:
            if (
                span["name"] == "saga place-order"
                and attributes(span.get("attributes", [])).get("order.id") == order_id
            ):
                return hex_id(span["traceId"])
        return None

    def tree(self, trace_hex: str) -> list[str]:
        spans = [(svc, s) for svc, s in self.spans if hex_id(s["traceId"]) == trace_hex]
        ids = {hex_id(s["spanId"]) for _, s in spans}
        children: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        for svc, span in spans:
            children[hex_id(span.get("parentSpanId", ""))].append((svc, span))
        lines: list[str] = []

        def walk(svc: str, span: dict[str, Any], depth: int) -> None:
            ms = (int(span["endTimeUnixNano"]) - int(span["startTimeUnixNano"])) / 1e6
            kind = span.get("kind", "").removeprefix("SPAN_KIND_").lower()
            status = span.get("status", {})
            mark = f"  ERROR {status.get('message', '')}".rstrip() if status.get("code") == "STATUS_CODE_ERROR" else ""
            lines.append(f"  {'  ' * depth}{svc}: {span['name']} [{kind}] {ms:.1f} ms{mark}")
            for child in sorted(children[hex_id(span["spanId"])], key=lambda c: int(c[1]["startTimeUnixNano"])):
                walk(*child, depth + 1)

        for svc, root in spans:
            if hex_id(root.get("parentSpanId", "")) not in ids:
                walk(svc, root, 0)
        return lines

    def red(self) -> list[str]:
        kinds = 'span_kind=~"SPAN_KIND_SERVER|SPAN_KIND_CONSUMER"'
        calls = "traces_span_metrics_calls_total"
        rate = self.shop.mimir.query(f"sum by (service_name) (rate({calls}{{{kinds}}}[5m]))")
        errors = self.shop.mimir.query(
            f'sum by (service_name) (rate({calls}{{{kinds},status_code="STATUS_CODE_ERROR"}}[5m]))'
        )
        p95 = self.shop.mimir.query(
            "1000 * histogram_quantile(0.95, sum by (service_name, le) "
            f"(rate(traces_span_metrics_duration_seconds_bucket{{{kinds}}}[5m])))"
        )
        by = lambda rows: {r["metric"].get("service_name", "?"): float(r["value"][1]) for r in rows}  # noqa: E731
        rates, errs, p95s = by(rate), by(errors), by(p95)
        lines = [f"  {'service':<14} {'req/s':>7} {'errors':>7} {'p95 ms':>8}"]
        for svc in sorted(rates):
            share = errs.get(svc, 0.0) / rates[svc] if rates[svc] else 0.0
            lines.append(f"  {svc:<14} {rates[svc]:>7.2f} {share:>7.1%} {p95s.get(svc, float('nan')):>8.1f}")
        return lines

    def top_errors(self, n: int = 5) -> list[str]:
        errors = Counter(  # an HTTP client span of a 4xx/5xx with no exception only echoes the server's answer
            (svc, s["name"], s.get("status", {}).get("message", ""))
            for svc, s in self.spans
            if s.get("status", {}).get("code") == "STATUS_CODE_ERROR"
            and (s.get("kind") != "SPAN_KIND_CLIENT" or any(e.get("name") == "exception" for e in s.get("events", [])))
        )
        lines: list[str] = []
        for (svc, name, message), count in errors.most_common(n):
            lines.append(f"  {count:>4} x {svc}: {name}: {message or '(no message)'}")
            example = next(s for sv, s in self.spans if (sv, s["name"]) == (svc, name) and
                           s.get("status", {}).get("message", "") == message)  # fmt: skip
            trace_hex = hex_id(example["traceId"])
            for log_svc, record in self.logs:
                if hex_id(record.get("traceId", "")) == trace_hex and record.get("severityText") in (
                    "ERROR",
                    "WARNING",
                    "WARN",
                ):
                    body = record.get("body", {}).get("stringValue", "")
                    lines.append(f"         log {log_svc} {record.get('severityText')}: {body}")
        return lines or ["  none"]

    def alerts(self) -> list[str]:
        seen = {(a["labels"]["alertname"], a["state"]) for a in self.shop.mimir.alerts()}
        delivered = {a["labels"]["alertname"] for a in self.shop.alertmanager.alerts()}
        lines = [
            f"  {name}: {state}{' (at Alertmanager)' if name in delivered else ''}" for name, state in sorted(seen)
        ]
        return lines or ["  none"]

    def text(self) -> str:
        out = [
            f"load: {self.load.summary()}",
            f"{self.traces_from} received {len(self.spans)} spans; {len(self.logs)} log records were read",
        ]
        for title, ids in (("a completed saga", self.load.confirmed), ("a compensated saga", self.load.compensated)):
            trace_hex = next((t for t in map(self._saga_trace, ids) if t), None)
            if trace_hex:
                out += ["", f"{title} (trace {trace_hex}):", *self.tree(trace_hex)]
        out += ["", f"RED per service (server and consumer spans, {self.red_window}):", *self.red()]
        out += ["", "top errors, with the error log lines of one of their traces:", *self.top_errors()]
        out += ["", "alerts:", *self.alerts()]
        return "\n".join(out)

    def save_raw(self) -> None:
        shutil.copy(self.shop.tempo.out, self.shop.out / "tempo-otlp.jsonl")
        shutil.copy(self.shop.loki.out, self.shop.out / "loki-otlp.jsonl")
        series = self.shop.mimir.query('{__name__=~".+", service_name!=""}')
        (self.shop.out / "prometheus-series.json").write_text(json.dumps(series))


class AwsReport(Report):
    """The report of the aws backend, from what AWS holds (moto): the traces from X-Ray (BatchGetTraces), the log
    records from CloudWatch Logs (the services' log groups), RED per service from the EMF documents in CloudWatch
    Logs (the collector's span metrics), and the CloudWatch alarms ``otel-kit cloudwatch push --service`` defines
    on those metrics. moto keeps EMF documents as log events without extracting metrics, so RED is added up from
    the documents themselves, as CloudWatch would; EMF carries a histogram's count and sum (the span metrics have
    no minimum or maximum), so the latency column is the mean, where the lgtm report has the p95."""

    traces_from = "X-Ray"
    red_window = "the whole run"
    METRICS_GROUP = "/otel-kit/metrics"

    def _client(self, name: str) -> Any:
        import boto3

        return boto3.client(name, endpoint_url=self.shop.moto.endpoint_url, region_name=AWS_ENV["AWS_REGION"],
                            aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip

    def _events(self, group: str) -> list[dict[str, Any]]:
        logs = self._client("logs")
        events: list[dict[str, Any]] = []
        for stream in logs.describe_log_streams(logGroupName=group)["logStreams"]:
            token: str | None = None
            while True:
                kwargs: dict[str, Any] = {"logGroupName": group, "logStreamName": stream["logStreamName"],
                                          "startFromHead": True}  # fmt: skip
                if token:
                    kwargs["nextToken"] = token
                page = logs.get_log_events(**kwargs)
                events += [json.loads(e["message"]) for e in page["events"] if e["message"].startswith("{")]
                if not page["events"] or page.get("nextForwardToken") in (None, token):
                    break
                token = page["nextForwardToken"]
        return events

    def _groups(self) -> list[str]:
        found = self._client("logs").describe_log_groups(logGroupNamePrefix="/otel-kit/")["logGroups"]
        return [g["logGroupName"] for g in found]

    def load_logs(self) -> list[tuple[str, dict[str, Any]]]:
        records = []
        for group in self._groups():
            if group == self.METRICS_GROUP:
                continue
            for entry in self._events(group):
                trace_b64 = base64.b64encode(bytes.fromhex(entry["trace_id"])).decode() if entry.get("trace_id") else ""
                records.append((entry.get("service", group.rsplit("/", 1)[-1]), {
                    "traceId": trace_b64, "severityText": entry.get("level"), "body": {"stringValue": entry["message"]},
                    "xray_trace_id": entry.get("xray_trace_id"), "order_id": entry.get("order_id"),
                }))  # fmt: skip
        return records

    def read(self) -> None:
        super().read()
        self.emf = self._events(self.METRICS_GROUP)  # the EMF documents, read once for red() and save_raw()

    def wait_for_telemetry(self) -> None:
        wait_until(lambda: self.METRICS_GROUP in self._groups(), 60, "the EMF documents in CloudWatch Logs")
        wait_until(lambda: len(self._groups()) >= 2, 60, "the services' log records in CloudWatch Logs")
        # the span metrics leave the collector every 5 s, a series' first document counting none yet: RED is read
        # once the gateway's documents count every request the load generator had answered
        answered = sum(n for outcome, n in self.load.outcomes.items() if outcome.rsplit(" ", 1)[-1].isdigit())
        wait_until(lambda: self._server_calls(self._events(self.METRICS_GROUP))[0]["gateway"] >= answered, 60,
                   "every gateway request in the EMF span metrics")  # fmt: skip
        super().wait_for_telemetry()

    @staticmethod
    def _server_calls(documents: list[dict[str, Any]]) -> tuple[Counter[str], Counter[str], Counter[str], Counter[str]]:
        """Per service, from the span metrics' EMF documents of server and consumer spans: calls, failed calls, and
        the seconds and count of the duration histogram (one document per series, whatever its dimension sets)."""
        from otel_kit.cloudwatch import SPAN_CALLS, SPAN_DURATION

        calls: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        seconds: Counter[str] = Counter()
        timed: Counter[str] = Counter()
        for doc in documents:
            if doc.get("span.kind") not in ("SPAN_KIND_SERVER", "SPAN_KIND_CONSUMER"):
                continue
            service = str(doc.get("service.name", "?"))
            if SPAN_CALLS in doc:
                calls[service] += doc[SPAN_CALLS]
                if doc.get("status.code") == "STATUS_CODE_ERROR":
                    errors[service] += doc[SPAN_CALLS]
            duration = doc.get(SPAN_DURATION)
            if isinstance(duration, dict) and duration.get("Count"):
                seconds[service] += duration["Sum"]
                timed[service] += duration["Count"]
        return calls, errors, seconds, timed

    def load_spans(self) -> list[tuple[str, dict[str, Any]]]:
        """The traces of the sampled sagas and of every error log line, from X-Ray (at most 60 traces)."""
        logs = self.logs or self.load_logs()
        sampled = set(self.load.confirmed[:3] + self.load.compensated[:3])
        wanted = {r["xray_trace_id"] for _, r in logs if r["xray_trace_id"] and r["order_id"] in sampled}
        wanted |= {r["xray_trace_id"] for _, r in logs if r["xray_trace_id"] and r["severityText"] == "ERROR"}
        xray = self._client("xray")
        ids = sorted(wanted)[:60]
        documents = [
            json.loads(segment["Document"])
            for start in range(0, len(ids), 5)  # BatchGetTraces takes 5 ids a call
            for found in xray.batch_get_traces(TraceIds=ids[start : start + 5])["Traces"]
            for segment in found["Segments"]
        ]
        self.documents = documents
        return [span for doc in documents for span in xray_to_spans(doc)]

    def red(self) -> list[str]:
        calls, errors, seconds, timed = self._server_calls(self.emf)
        lines = [f"  {'service':<14} {'calls':>7} {'errors':>7} {'mean ms':>8}"]
        for service in sorted(calls):
            share = errors[service] / calls[service] if calls[service] else 0.0
            mean = 1000 * seconds[service] / timed[service] if timed[service] else float("nan")
            lines.append(f"  {service:<14} {calls[service]:>7.0f} {share:>7.1%} {mean:>8.1f}")
        return lines if calls else ["  no EMF documents of the span metrics yet"]

    def alerts(self) -> list[str]:
        from otel_kit.cloudwatch import service_alarms

        services = sorted({svc for svc, _ in self.spans})
        topic = self._client("sns").create_topic(Name="otel-kit-alarms")["TopicArn"]
        cloudwatch = self._client("cloudwatch")
        for alarm in service_alarms(services, "otel-kit", topic):  # what otel-kit cloudwatch push --service defines
            cloudwatch.put_metric_alarm(**alarm)
        found = cloudwatch.describe_alarms(AlarmNamePrefix="otel-kit-")["MetricAlarms"]
        lines = [f"  {a['AlarmName']}: {a['StateValue']} ({a['MetricName']}, {a['Threshold']:.0f} in "
                 f"{a['Period']} s)" for a in found]  # fmt: skip
        return [*lines, "  (moto does not evaluate alarms: each stays in its first state)"] if lines else ["  none"]

    def save_raw(self) -> None:
        (self.shop.out / "xray-segments.json").write_text(json.dumps(self.documents))
        (self.shop.out / "cloudwatch-emf.json").write_text(json.dumps(self.emf))


def xray_to_spans(doc: dict[str, Any], parent: str = "") -> list[tuple[str, dict[str, Any]]]:
    """An X-Ray segment document (and its nested subsegments) as (service, span in OTLP JSON form), named from the
    document's own fields as the OpenTelemetry span was: the HTTP method and route or path, the SQL operation, the
    messaging operation and queue; its kind from its type and namespace; an error described by its cause."""

    def b64(hex_text: str) -> str:
        return base64.b64encode(bytes.fromhex(hex_text)).decode() if hex_text else ""

    annotations = doc.get("annotations", {})
    service = str(annotations.get("service", doc.get("name", "?")))
    metadata = {**doc.get("metadata", {}).get("default", {}), **annotations}
    # X-Ray flags every 4xx answer as an error; OpenTelemetry, and the lgtm report, only a failure with a cause (the
    # span's status description or exception) or a fault (5xx)
    failed = doc.get("fault") or bool(_xray_cause(doc, with_status=False))
    span = {
        "name": _xray_name(doc, metadata),
        "traceId": b64(doc["trace_id"].replace("1-", "", 1).replace("-", "")),
        "spanId": b64(doc["id"]),
        "parentSpanId": b64(doc.get("parent_id", parent)),
        "kind": _xray_kind(doc, metadata, nested=bool(parent)),
        "startTimeUnixNano": int(doc["start_time"] * 1e9),
        "endTimeUnixNano": int(doc.get("end_time", doc["start_time"]) * 1e9),
        "status": {"code": "STATUS_CODE_ERROR", "message": _xray_cause(doc)} if failed else {},
        "attributes": [{"key": k, "value": {"stringValue": str(v)}} for k, v in metadata.items()],
    }
    spans = [(service, span)]
    for sub in doc.get("subsegments", []):
        spans += xray_to_spans({**sub, "trace_id": doc["trace_id"], "annotations": {"service": service,
                               **sub.get("annotations", {})}}, doc["id"])  # fmt: skip
    return spans


def _xray_name(doc: dict[str, Any], metadata: dict[str, Any]) -> str:
    sql = doc.get("sql")
    if isinstance(sql, dict):
        query = str(sql.get("sanitized_query", "")).strip()
        return query.split(None, 1)[0].upper() if query else str(metadata.get("db.operation.name", "SQL"))
    operation = metadata.get("messaging.operation.name")
    if operation:
        return f"{operation} {metadata.get('messaging.destination.name', '')}".strip()
    request = doc.get("http", {}).get("request", {})
    method = str(request.get("method", "")).upper()
    if method:
        route = metadata.get("http.route")
        if route:
            return f"{method} {route}"
        from urllib.parse import urlsplit

        path = urlsplit(str(request.get("url", ""))).path
        return f"{method} {path}" if path else method
    return str(doc.get("name", "?"))


def _xray_kind(doc: dict[str, Any], metadata: dict[str, Any], nested: bool) -> str:
    operation = str(metadata.get("messaging.operation.type", ""))
    if doc.get("type") == "subsegment" or nested:
        if operation in ("publish", "send", "create"):
            return "SPAN_KIND_PRODUCER"
        return "SPAN_KIND_CLIENT" if doc.get("namespace") in ("remote", "aws") else "SPAN_KIND_INTERNAL"
    return "SPAN_KIND_CONSUMER" if operation in ("process", "receive") else "SPAN_KIND_SERVER"


def _xray_cause(doc: dict[str, Any], with_status: bool = True) -> str:
    exceptions = doc.get("cause", {}).get("exceptions", []) if isinstance(doc.get("cause"), dict) else []
    if exceptions:
        first = exceptions[0]
        kind, message = first.get("type", ""), first.get("message", "")
        return f"{kind}: {message}" if kind and message else kind or message
    status = doc.get("http", {}).get("response", {}).get("status") if with_status else None
    return f"HTTP status {status}" if status else ""
