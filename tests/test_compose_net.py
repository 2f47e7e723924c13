"""compose-lgtm.yml run here as Compose runs it: every service the file declares that can run on this machine, each
on a host of its own (tests/compose_net.py says how, and what stands in for Loki, Tempo and Mimir), started from the
model the real Compose loader made of the file with ``.env.example`` filled in, in ``depends_on`` order.

What a user of the file sees, checked here: every health check passes; the load generator's orders cross all seven
shop services by their service names and reach Tempo as whole traces; log lines reach Loki at its OTLP path with
their trace ids; every panel, rule and datasource link has data in the stack's metrics store; every log query names
fields Loki stores; the published ports answer on 127.0.0.1 of the host only. The run prints how long the stack took
to become healthy and the memory each service used (the README's figures).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from demo_services.stack.servers import attributes, hex_id, wait_until
from tests import loki_otlp
from tests.compose_net import ROOT, ComposeRun, compose_config_binary, config_file, example_env, load
from tests.test_shop import FAILURE_ONLY

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(420),  # the stack's start (about 30 s) and the first flushes of every signal
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nsenter"),
        reason="network namespaces need root and iproute2 (CI runs as root)",
    ),
]

SHOP = ("gateway", "orders", "inventory", "payments", "notifications", "cashback", "receipts")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeRun]:
    env = example_env()
    loaded = load(compose_config_binary(), env, tmp_path_factory.mktemp("compose"))
    assert loaded.returncode == 0, loaded.stderr

    def stop(*_: object) -> None:  # a CI job cancelled: the namespaces and their processes go too
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with ComposeRun(json.loads(loaded.stdout), env, timeout=240) as run:
            run.wait_healthy()
            yield run
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Capture:
    """A capture's requests, read on from where the last read stopped (the load keeps them coming)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.requests = path, 0, list[dict[str, Any]]()

    def read(self) -> list[dict[str, Any]]:
        if self.path.exists():
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
            complete = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
            self.offset += len(complete)
            self.requests += [json.loads(line) for line in complete.splitlines() if line.strip()]
        return self.requests


_captures: dict[Path, _Capture] = {}


def _requests(run: ComposeRun, backend: str, signal: str) -> list[dict[str, Any]]:
    capture = _captures.setdefault(run.capture(backend), _Capture(run.capture(backend)))
    return [r for r in capture.read() if r["signal"] == signal]


def _spans(run: ComposeRun) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (attributes(group["resource"].get("attributes", [])), span)
        for r in _requests(run, "tempo", "traces")
        for group in r["body"].get("resourceSpans", [])
        for scope in group.get("scopeSpans", [])
        for span in scope.get("spans", [])
    ]


def _tempo_datasource() -> dict[str, Any]:
    """The Tempo datasource as provisioned for Grafana (its links to logs and metrics)."""
    provisioning = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/otel-kit.yaml").read_text())
    (tempo,) = [d for d in provisioning["datasources"] if d["type"] == "tempo"]
    return dict(tempo)


def _prometheus(run: ComposeRun, promql: str) -> list[dict[str, Any]]:
    """A query through Mimir's published port and Prometheus-compatible path, as Grafana's datasource asks."""
    host, port = run.ports[("mimir", 9009)]
    url = f"http://{host}:{port}/prometheus/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as response:
        return list(json.load(response)["data"]["result"])


def test_every_health_check_passes_in_depends_on_order(stack: ComposeRun) -> None:
    for name, c in stack.containers.items():
        for dependency, rule in (c.service.get("depends_on") or {}).items():
            other = stack.containers[dependency]
            ready_at = other.healthy_at if rule["condition"] == "service_healthy" else other.started_at
            assert c.started_at >= ready_at, f"{name} started before {dependency} was {rule['condition']}"
        if c.service.get("healthcheck"):
            assert c.healthy.is_set(), f"{name}: {c.health_output}"
    assert set(stack.skipped) == {"grafana"}, stack.skipped
    memory = stack.memory()
    stand_ins = {n for n, c in stack.containers.items() if c.service["image"].startswith("grafana/")}
    ready = max(c.healthy_at or c.started_at for c in stack.containers.values())
    own = sum(used for name, used in memory.items() if name not in stand_ins)
    print(f"\nhealthy {ready:.0f} s after the first start; resident memory {own / 2**20:.0f} MiB, not counting "
          f"the stand-ins for {', '.join(sorted(stand_ins))}:")  # fmt: skip
    for name, used in sorted(memory.items(), key=lambda item: -item[1]):
        print(f"  {name:15} {used / 2**20:6.0f} MiB{' (stand-in)' if name in stand_ins else ''}")


def test_orders_cross_all_seven_shop_services_and_reach_tempo_as_whole_traces(stack: ComposeRun) -> None:
    def services_by_trace() -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for resource, span in _spans(stack):
            found.setdefault(hex_id(span["traceId"]), set()).add(str(resource.get("service.name")))
        return found

    wait_until(lambda: any(set(SHOP) <= s for s in services_by_trace().values()), 120,
               "a trace through all seven shop services at the Tempo capture", interval=1)  # fmt: skip
    environments = {str(r.get("deployment.environment.name")) for r, _ in _spans(stack)}
    assert environments == {"compose"}
    # the span attributes Grafana's Tempo datasource reads for its links to logs and metrics are on the spans
    tempo = _tempo_datasource()
    tags = {t["key"] for link in ("tracesToLogsV2", "tracesToMetrics") for t in tempo["jsonData"][link]["tags"]}
    on_spans = {k for r, s in _spans(stack) for k in [*r, *attributes(s.get("attributes", []))]}
    assert tags and tags <= on_spans, tags - on_spans


def test_log_records_reach_loki_at_its_otlp_path_with_their_trace_ids(stack: ComposeRun) -> None:
    def traced_records() -> list[dict[str, Any]]:
        return [
            record
            for r in _requests(stack, "loki", "logs")
            for group in r["body"].get("resourceLogs", [])
            for scope in group.get("scopeLogs", [])
            for record in scope.get("logRecords", [])
            if record.get("traceId")
        ]

    wait_until(lambda: bool(traced_records()), 120, "log records with a trace id at the Loki capture", interval=1)
    assert {r.get("path") for r in _requests(stack, "loki", "logs")} == {"/otlp/v1/logs"}
    span_traces = {hex_id(s["traceId"]) for _, s in _spans(stack)}
    wait_until(lambda: any(hex_id(r["traceId"]) in span_traces for r in traced_records()), 60,
               "a log record of a trace Tempo has", interval=1)  # fmt: skip


def _queries() -> dict[str, str]:
    """Every PromQL a user of the stack runs: dashboard panels, recording and alert rules, and the Tempo
    datasource's span-to-metrics links (with the tags Grafana fills in)."""
    from dashboards.queries import dashboard_queries, recording_rules

    queries = {**dashboard_queries(), **{f"rule {n}": e for n, e in recording_rules().items()}}
    for path in sorted((ROOT / "alerts").glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                # an alert is silent while all is well: the series its condition reads exist
                for metric in set(metric_names(rule.get("expr", ""))) - FAILURE_ONLY if "alert" in rule else ():
                    queries[f"alert {rule['alert']}: {metric}"] = f'count({{__name__="{metric}"}})'
    tempo = _tempo_datasource()
    for link in tempo["jsonData"]["tracesToMetrics"]["queries"]:
        queries[f"Tempo link {link['name']}"] = link["query"].replace("$$__tags", 'service_name="gateway"')
    return queries


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool"}


def metric_names(promql: str) -> list[str]:
    """The metric names a PromQL expression reads: its identifiers that are not functions, keywords, label names
    (in braces, or in a by/without/on/ignoring list), durations or strings."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", promql)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = re.findall(r"(?<![\w.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", text)
    return [n for n in names if n not in _KEYWORDS]


def test_every_dashboard_rule_and_link_query_has_data_in_the_stacks_metrics_store(stack: ComposeRun) -> None:
    queries = _queries()

    def empty() -> list[str]:
        return [name for name, promql in queries.items() if not _prometheus(stack, promql)]

    try:
        wait_until(lambda: not empty(), 150, "data for every query", interval=2)
    except TimeoutError:
        pytest.fail("queries without data:\n" + "\n".join(f"{n}: {queries[n]}" for n in empty()))


def _log_queries() -> dict[str, str]:
    """Every LogQL a user of the stack runs: the dashboards' Loki targets and the Tempo datasource's trace-to-logs
    link, with Grafana's variables as a user leaves them (every value)."""
    from dashboards.queries import log_queries

    found = log_queries()
    tempo = _tempo_datasource()
    link = tempo["jsonData"]["tracesToLogsV2"]
    tags = ", ".join(f'{t.get("value") or t["key"]}=~".+"' for t in link["tags"])
    found["Tempo link: logs for this span"] = (
        str(link["query"]).replace("$$", "$").replace("${__tags}", tags).replace("${__trace.traceId}", "[0-9a-f]+")
    ).replace('trace_id="[0-9a-f]+"', 'trace_id=~"[0-9a-f]+"')
    return found


def test_every_log_query_names_fields_loki_stores_and_returns_lines(stack: ComposeRun) -> None:
    config = config_file(stack.model["services"]["loki"])
    wait_until(lambda: bool(_requests(stack, "loki", "logs")), 120, "log requests at the Loki capture", interval=1)
    stored = loki_otlp.entries([r["body"] for r in _requests(stack, "loki", "logs")], config)
    queries = _log_queries()
    assert len(queries) >= 3
    for name, logql in queries.items():
        query = loki_otlp.parse(logql)
        assert not loki_otlp.unknown_fields(query, stored), f"{name}: {logql}"
        assert loki_otlp.select(query, stored), f"{name} returns no line: {logql}"
    # what a user filters by: every service, both severities the shop logs at, a correlation id
    labels = {(e.labels["service_name"], e.labels.get("deployment_environment_name")) for e in stored}
    assert {s for s, _ in labels} >= set(SHOP) and {env for _, env in labels} == {"compose"}
    assert {"INFO", "WARN"} <= {e.metadata.get("severity_text") for e in stored}
    assert any(e.metadata.get("correlation_id") for e in stored)


def _answers(port: int) -> bool:
    """An HTTP answer of any status, or for OTLP's gRPC port an HTTP/2 handshake: the service itself, not only the
    forwarder, is there."""
    import http.client

    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=3)
            return True
        except grpc.FutureTimeoutError:
            pass
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status > 0
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def test_published_ports_answer_on_the_hosts_loopback_only(stack: ComposeRun) -> None:
    others = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout.split()
    addresses = {w.split("/")[0] for i, w in enumerate(others) if others[i - 1] == "inet"} - {"127.0.0.1"}
    assert stack.network.gateway in addresses
    assert stack.ports, "no published port"
    for (service, target), (host_ip, port) in stack.ports.items():
        assert host_ip == "127.0.0.1", f"{service}:{target} is published on {host_ip}"
        assert _answers(port), f"{service}:{target} does not answer on 127.0.0.1:{port}"
        for address in addresses:
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((address, port), timeout=5).close()


# the failures the shop is built to show under the load generator's mix, and the record each leaves: a declined or
# unavailable card (payments), a saga step that failed and its compensation (orders)
DESIGNED = {("otel_kit.errors", "__main__.Declined"), ("otel_kit.errors", "__main__.ProviderError"),
            ("otel_kit.errors", "__main__.StepFailed"), ("orders", "order compensated")}  # fmt: skip


def _fault(line: str) -> bool:
    """A line at ERROR or above that is not one of the shop's designed failures."""
    try:
        record = json.loads(line)
    except ValueError:  # gunicorn's, the collector's, PostgreSQL's own formats
        return bool(re.search(r"\[ERROR\]|\terror\t|\b(ERROR|FATAL|PANIC):", line))
    if not isinstance(record, dict) or record.get("level") not in ("ERROR", "CRITICAL"):
        return False
    return (record.get("logger"), record.get("error.type") or record.get("message")) not in DESIGNED


def test_no_service_logs_an_error_beyond_the_designed_failures(stack: ComposeRun) -> None:
    """Under the load generator's mix every order ends as designed (placed, declined or compensated); any other
    error in a service's output is a fault of the stack: gunicorn refused a control socket under the image's user's
    missing home, a database created without UTF-8 returned bytes for text, exports waited out name resolution."""
    wait_until(lambda: bool(_spans(stack)), 120, "the first traces", interval=1)
    faults = {}
    for name in (*SHOP, "collector", "postgres"):
        if bad := [line for line in stack.output(name, 100_000).splitlines() if _fault(line)]:
            faults[name] = bad[:3]
    assert not faults, json.dumps(faults, indent=1)
