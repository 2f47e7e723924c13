"""CloudWatch for services that log JSON lines with otel_kit: saved Logs Insights queries, a dashboard, alarms.

``otel-kit cloudwatch push --log-group G [--function F] [--dry-run]`` creates or updates, through boto3:

- the Logs Insights queries of ``cloudwatch/queries/*.query`` as saved query definitions ``otel-kit/<name>`` on the
  given log groups (found again by name, so a second push updates instead of duplicating);
- the SNS topic ``otel-kit-alarms``, subscribed to PagerDuty's CloudWatch integration when
  ``PAGERDUTY_CLOUDWATCH_ENDPOINT`` holds its URL (the URL carries the integration key: it is never printed);
- alarms on each Lambda function's errors, throttles and p99 duration, notifying the topic;
- the dashboard ``otel-kit``: one log widget per query and the functions' metrics.

Region and credentials come from the AWS SDK chain (``AWS_REGION``, ...; ``AWS_ENDPOINT_URL`` for a local AWS).
Every field a query names is one the library writes (``LOG_FIELDS``), one the Lambda runtime adds
(``LAMBDA_FIELDS``), or one the demo shop logs; a test keeps them in step.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from otel_kit._internal.logs import JSON_FIELDS

__all__ = ["LAMBDA_FIELDS", "LOG_FIELDS", "SPAN_CALLS", "SPAN_DURATION", "load_queries", "push", "query_fields",
           "service_alarms"]  # fmt: skip

# what every JSON line carries (JSON_FIELDS), with an exception's stack and a Lambda invocation's request id
LOG_FIELDS = (*JSON_FIELDS, "stack", "request_id")
# what CloudWatch Logs and the Lambda runtime's REPORT lines add
LAMBDA_FIELDS = ("@timestamp", "@message", "@logStream", "@log", "@requestId", "@type", "@duration",
                 "@billedDuration", "@initDuration", "@maxMemoryUsed", "@memorySize")  # fmt: skip
_KEYWORDS = {"fields", "filter", "stats", "sort", "by", "asc", "desc", "limit", "display", "as", "and", "or", "not",
             "like", "in", "parse", "dedup", "unmask", "bin"}  # fmt: skip
TOPIC = "otel-kit-alarms"


def load_queries(root: Path) -> dict[str, tuple[str, str]]:
    """name -> (description from the leading comments, query text without them), from ``cloudwatch/queries``."""
    queries = {}
    for path in sorted((root / "cloudwatch" / "queries").glob("*.query")):
        lines = path.read_text().splitlines()
        description = " ".join(line.lstrip("# ").strip() for line in lines if line.startswith("#"))
        queries[path.stem] = (description, "\n".join(line for line in lines if not line.startswith("#")).strip())
    return queries


def query_fields(query: str) -> set[str]:
    """The log fields a Logs Insights query names (not its functions, keywords, aliases or literals)."""
    text = re.sub(r'"[^"]*"|\'[^\']*\'|/[^/]*/', " ", query)  # string and regex literals
    aliases = set(re.findall(r"\bas\s+([A-Za-z_]\w*)", text))
    found = set()
    for match in re.finditer(r"(?<![\w@.])@?[A-Za-z_][\w.]*", text):
        name, rest = match.group(), text[match.end() :].lstrip()
        if rest.startswith("(") or name.lower() in _KEYWORDS or name in aliases:
            continue  # a function, a keyword or a name the query itself defines
        found.add(name)
    return found


def _dashboard(queries: dict[str, tuple[str, str]], log_groups: list[str], functions: list[str], region: str) -> str:
    source = " | ".join(f"SOURCE '{group}'" for group in log_groups)
    widgets: list[dict[str, Any]] = [
        {"type": "log", "width": 12, "height": 6,
         "properties": {"title": name, "region": region, "view": "table", "query": f"{source} | {text}"}}
        for name, (_, text) in queries.items()
    ]  # fmt: skip
    for metric in ("Invocations", "Errors", "Throttles", "Duration"):
        widgets.append({"type": "metric", "width": 6, "height": 6, "properties": {
            "title": f"Lambda {metric}", "region": region, "view": "timeSeries",
            "stat": "p99" if metric == "Duration" else "Sum", "period": 300,
            "metrics": [["AWS/Lambda", metric, "FunctionName", fn] for fn in functions]}})  # fmt: skip
    return json.dumps({"widgets": widgets})


def _alarms(functions: list[str], topic_arn: str) -> list[dict[str, Any]]:
    alarms = []
    for fn in functions:
        for metric, statistic, threshold, what in (
            ("Errors", "Sum", 0, "invocations failed"),
            ("Throttles", "Sum", 0, "invocations were throttled"),
            ("Duration", "p99", 10_000, "p99 duration above 10 s"),
        ):
            alarm: dict[str, Any] = {
                "AlarmName": f"otel-kit-{fn}-{metric.lower()}",
                "AlarmDescription": f"{fn}: {what} (runbook: alerts/runbooks.md; queries: otel-kit/*)",
                "Namespace": "AWS/Lambda", "MetricName": metric,
                "Dimensions": [{"Name": "FunctionName", "Value": fn}],
                "Period": 300, "EvaluationPeriods": 1, "Threshold": threshold,
                "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching",
                "AlarmActions": [topic_arn], "OKActions": [topic_arn],
            }  # fmt: skip
            if statistic == "p99":
                alarm["ExtendedStatistic"] = "p99"
            else:
                alarm["Statistic"] = statistic
            alarms.append(alarm)
    return alarms


# what the collector's aws overlay sends as EMF (collector/config/aws.yaml): the span metrics by service, span kind
# and status code, so an alarm can watch one service's failed requests
SPAN_CALLS = "traces.span.metrics.calls"
SPAN_DURATION = "traces.span.metrics.duration"


def service_alarms(services: list[str], namespace: str, topic_arn: str) -> list[dict[str, Any]]:
    """For each service, an alarm on its failed server requests in the EMF metrics of the collector's aws overlay
    (``namespace`` is its ``CW_NAMESPACE``): more than 5 in 5 minutes."""
    alarms = []
    for service in services:
        dimensions = {"service.name": service, "span.kind": "SPAN_KIND_SERVER", "status.code": "STATUS_CODE_ERROR"}
        alarm: dict[str, Any] = {
            "AlarmName": f"otel-kit-{service}-server-errors",
            "AlarmDescription": f"{service}: more than 5 failed requests in 5 minutes (runbook: alerts/runbooks.md; "
            "queries: otel-kit/errors-by-service)",
            "Namespace": namespace, "MetricName": SPAN_CALLS, "Statistic": "Sum",
            "Dimensions": [{"Name": name, "Value": value} for name, value in dimensions.items()],
            "Period": 300, "EvaluationPeriods": 1, "Threshold": 5,
            "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching",
            "AlarmActions": [topic_arn], "OKActions": [topic_arn],
        }  # fmt: skip
        alarms.append(alarm)
    return alarms


def push(root: Path, log_groups: list[str], functions: list[str], dry_run: bool = False,
         client: Callable[[str], Any] | None = None, say: Callable[[str], None] = print,
         services: list[str] | None = None, namespace: str = "otel-kit") -> None:  # fmt: skip
    """Create or update the saved queries, topic, alarms and dashboard; ``client(name)`` makes boto3 clients.
    ``services`` get an alarm each on the EMF metrics the collector's aws overlay writes under ``namespace``."""
    if not log_groups:
        raise ValueError("name at least one log group (--log-group) for the saved queries and the dashboard")
    if client is None:
        import boto3

        client = boto3.client
    logs, sns, cloudwatch = client("logs"), client("sns"), client("cloudwatch")
    region = cloudwatch.meta.region_name
    queries = load_queries(root)
    existing = {
        definition["name"]: definition["queryDefinitionId"]
        for definition in logs.describe_query_definitions(queryDefinitionNamePrefix="otel-kit/")["queryDefinitions"]
    }
    for name, (_, text) in queries.items():
        full = f"otel-kit/{name}"
        say(f"{'update' if full in existing else 'create'} saved query {full}")
        if not dry_run:
            request: dict[str, Any] = {"name": full, "queryString": text, "logGroupNames": log_groups}
            if full in existing:
                request["queryDefinitionId"] = existing[full]
            logs.put_query_definition(**request)
    say(f"create or keep SNS topic {TOPIC}")
    if dry_run:
        return
    topic_arn = sns.create_topic(Name=TOPIC)["TopicArn"]  # idempotent: the same ARN for the same name
    endpoint = os.environ.get("PAGERDUTY_CLOUDWATCH_ENDPOINT")
    if endpoint:
        subscribed = {s["Endpoint"] for s in sns.list_subscriptions_by_topic(TopicArn=topic_arn)["Subscriptions"]}
        if endpoint not in subscribed:
            sns.subscribe(TopicArn=topic_arn, Protocol="https", Endpoint=endpoint)
            say("subscribed PagerDuty's CloudWatch integration to the topic")
    for alarm in [*_alarms(functions, topic_arn), *service_alarms(services or [], namespace, topic_arn)]:
        say(f"put alarm {alarm['AlarmName']}")
        cloudwatch.put_metric_alarm(**alarm)
    say("put dashboard otel-kit")
    cloudwatch.put_dashboard(DashboardName="otel-kit", DashboardBody=_dashboard(queries, log_groups, functions, region))
