"""What Loki 3.4.2 stores for an OTLP log request, and the field names a LogQL query asks for: a stand-in for Loki,
which cannot run here (AGPL), written from its source at that tag (pkg/loghttp/push/otlp.go and otlp_config.go).

- Stream labels: the resource attributes Loki indexes by default (``DEFAULT_INDEX_LABELS``) plus those the Loki
  config's ``limits_config.otlp_config.resource_attributes.attributes_config`` marks ``index_label``; a stream
  without ``service.name`` gets ``service_name="unknown_service"``.
- Structured metadata: every other resource attribute, the scope's attributes and name (``scope_name``), the
  record's attributes, ``severity_text``, ``severity_number``, ``trace_id`` and ``span_id`` (hex),
  ``observed_timestamp``, ``flags``.
- The line: the record's body as a string.

Names go through Prometheus's label normalisation (``prometheus.NormalizeLabel``): every character other than a
letter, a digit or ``_`` becomes ``_``, and a name starting with a digit gets a ``key_`` prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from demo_services.stack.servers import attributes, hex_id

# otlp_config.go, GlobalOTLPConfig.RegisterFlags, at v3.4.2
DEFAULT_INDEX_LABELS = (
    "service.name", "service.namespace", "service.instance.id", "deployment.environment",
    "deployment.environment.name", "cloud.region", "cloud.availability_zone", "k8s.cluster.name",
    "k8s.namespace.name", "k8s.pod.name", "k8s.container.name", "container.name", "k8s.replicaset.name",
    "k8s.deployment.name", "k8s.statefulset.name", "k8s.daemonset.name", "k8s.cronjob.name", "k8s.job.name",
)  # fmt: skip


def normalize(name: str) -> str:
    name = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    return f"key_{name}" if name[:1].isdigit() else name


@dataclass
class Entry:
    labels: dict[str, str]
    metadata: dict[str, str]
    line: str


# the record's fields Loki keeps as structured metadata, and their OTLP JSON names
_RECORD_FIELDS = (
    ("severity_text", "severityText"), ("trace_id", "traceId"), ("span_id", "spanId"),
    ("observed_timestamp", "observedTimeUnixNano"), ("flags", "flags"),
)  # fmt: skip


def index_labels(loki_config: dict[str, Any]) -> set[str]:
    """The resource attributes this Loki config indexes as stream labels."""
    found = set(DEFAULT_INDEX_LABELS)
    otlp = (loki_config.get("limits_config") or {}).get("otlp_config") or {}
    for rule in (otlp.get("resource_attributes") or {}).get("attributes_config") or []:
        if rule.get("action") == "index_label":
            found.update(rule.get("attributes") or [])
    return found


def entries(requests: list[dict[str, Any]], loki_config: dict[str, Any]) -> list[Entry]:
    """The entries Loki would store for OTLP log export requests (OTLP JSON bodies)."""
    indexed = index_labels(loki_config)
    found = []
    for body in requests:
        for group in body.get("resourceLogs", []):
            resource = attributes(group.get("resource", {}).get("attributes", []))
            labels = {normalize(k): str(v) for k, v in resource.items() if k in indexed}
            labels.setdefault("service_name", "unknown_service")
            resource_metadata = {normalize(k): str(v) for k, v in resource.items() if k not in indexed}
            for scope_logs in group.get("scopeLogs", []):
                scope = scope_logs.get("scope", {})
                scope_metadata = {normalize(k): str(v) for k, v in attributes(scope.get("attributes", [])).items()}
                if scope.get("name"):
                    scope_metadata["scope_name"] = scope["name"]
                for record in scope_logs.get("logRecords", []):
                    metadata = {**resource_metadata, **scope_metadata}
                    metadata |= {normalize(k): str(v) for k, v in attributes(record.get("attributes", [])).items()}
                    for field, key in _RECORD_FIELDS:
                        if record.get(key):
                            metadata[field] = hex_id(record[key]) if field.endswith("_id") else str(record[key])
                    if record.get("severityNumber"):
                        metadata["severity_number"] = str(_severity_number(record["severityNumber"]))
                    body_value = record.get("body", {})
                    found.append(Entry(labels, metadata, str(next(iter(body_value.values()), ""))))
    return found


def _severity_number(value: str | int) -> int:
    """OTLP JSON spells the enum by name (SEVERITY_NUMBER_INFO) or by number."""
    from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber

    return value if isinstance(value, int) else int(SeverityNumber.Value(value))


# --- LogQL ----------------------------------------------------------------------------------------------------


@dataclass
class LogQuery:
    """A log query's stream selector and label filters: ``{name op "value", ...} | name op "value" | ...``."""

    selector: list[tuple[str, str, str]]
    filters: list[tuple[str, str, str]]


_MATCHER = r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"'


def parse(logql: str) -> LogQuery:
    """The selector and label filters of a LogQL log query, alone or inside a metric query's range
    (``sum by (x) (count_over_time({...} | ... [1m]))``). A line filter or a parser stage is not read: a query with
    one fails here, so this reading grows with the queries."""
    start = logql.index("{")
    query = re.sub(r"\s*\[\$?\w+\]\s*\)*\s*$", "", logql[start:])  # the range and the closing brackets
    selector_text, _, pipeline = query[1:].partition("}")
    selector = re.findall(_MATCHER, selector_text)
    stages = re.findall(r"\|\s*" + _MATCHER, pipeline)
    rest = re.sub(r"\|\s*" + _MATCHER, "", pipeline).strip()
    assert not rest, f"a stage this reading does not know: {rest!r} in {logql!r}"
    return LogQuery(selector, stages)


def _matches(value: str | None, op: str, pattern: str) -> bool:
    value = value or ""
    if op == "=":
        return value == pattern
    if op == "!=":
        return value != pattern
    full = re.fullmatch(pattern, value) is not None
    return full if op == "=~" else not full


def select(query: LogQuery, stored: list[Entry]) -> list[Entry]:
    """The entries the query returns: the selector on stream labels, then each filter on labels and metadata."""
    return [
        e
        for e in stored
        if all(_matches(e.labels.get(n), op, v) for n, op, v in query.selector)
        and all(_matches({**e.labels, **e.metadata}.get(n), op, v) for n, op, v in query.filters)
    ]


def unknown_fields(query: LogQuery, stored: list[Entry]) -> list[str]:
    """Names the query asks for that no stored entry has where the query looks: a selector label that is not a
    stream label, a filter field that is neither a label nor structured metadata. (A regex like ``.*`` matches a
    missing field, so such a query returns data and is wrong all the same.)"""
    labels = {k for e in stored for k in e.labels}
    fields = labels | {k for e in stored for k in e.metadata}
    wrong = [f"stream label {n}" for n, _, _ in query.selector if n not in labels]
    return wrong + [f"field {n}" for n, _, _ in query.filters if n not in fields]
