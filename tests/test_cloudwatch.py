"""CloudWatch: Logs Insights queries checked against the log schema, pushed with the dashboard, alarms and SNS topic
to moto and read back; the saved-query calls (which moto lacks) checked against botocore's own service model."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from otel_kit import testing
from otel_kit.cloudwatch import LAMBDA_FIELDS, LOG_FIELDS, TOPIC, load_queries, push, query_fields

ROOT = Path(__file__).resolve().parents[1]
# fields the demo shop logs as extras (checked against its code below)
DEMO_FIELDS = ("order_id", "reason")
AWS = {"region_name": "eu-west-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.mark.parametrize("name", list(load_queries(ROOT)))
def test_every_query_names_only_fields_that_exist(name: str) -> None:
    description, text = load_queries(ROOT)[name]
    assert description, f"{name} has no description comment"
    unknown = query_fields(text) - set(LOG_FIELDS) - set(LAMBDA_FIELDS) - set(DEMO_FIELDS)
    assert not unknown, f"{name} uses fields no log line has: {sorted(unknown)}"


def test_the_schema_is_what_a_log_line_carries() -> None:
    import logging

    with testing.capture("svc") as tel:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("app").exception("failed")
    line = tel.log_lines()[-1]
    assert set(LOG_FIELDS) - {"request_id"} <= set(line)  # request_id: only inside a Lambda invocation


def test_the_demo_fields_are_logged_by_the_demo() -> None:
    code = "\n".join(p.read_text() for p in (ROOT / "demo_services" / "shop").glob("*.py"))
    for field in DEMO_FIELDS:
        assert re.search(rf'extra=\{{[^}}]*"{field}"', code), f"the shop never logs {field}"


def test_query_fields_sees_through_functions_keywords_aliases_and_literals() -> None:
    query = 'fields a, @b | filter c = "d e" and f like /g h/ | stats count(*) as n, pct(@i, 95) by j, bin(5m)'
    assert query_fields(query) == {"a", "@b", "c", "f", "@i", "j"}


@pytest.fixture
def aws() -> Iterator[str]:
    from demo_services.stack.servers import MotoServer

    with MotoServer() as moto:
        yield moto.endpoint_url


def _clients(endpoint: str, logs: Any) -> Any:
    return lambda name: logs if name == "logs" else boto3.client(name, endpoint_url=endpoint, **AWS)


@pytest.mark.e2e
def test_push_creates_dashboard_alarms_topic_and_saved_queries_then_updates_them(
    aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAGERDUTY_CLOUDWATCH_ENDPOINT", "https://events.pagerduty.com/integration/abc123/enqueue")
    queries = load_queries(ROOT)
    logs = boto3.client("logs", **AWS)
    said: list[str] = []
    with Stubber(logs) as stub:  # botocore validates every request against the Logs service model
        stub.add_response("describe_query_definitions", {"queryDefinitions": []},
                          {"queryDefinitionNamePrefix": "otel-kit/"})  # fmt: skip
        for name, (_, text) in queries.items():
            expected = {"name": f"otel-kit/{name}", "queryString": text, "logGroupNames": ["/aws/lambda/receipts"]}
            stub.add_response("put_query_definition", {"queryDefinitionId": f"id-{name}"}, expected)
        push(ROOT, ["/aws/lambda/receipts"], ["receipts"], client=_clients(aws, logs), say=said.append)
        stub.assert_no_pending_responses()

        # a second push updates the saved queries it finds by name instead of adding copies
        stub.add_response("describe_query_definitions", {"queryDefinitions": [
            {"name": f"otel-kit/{name}", "queryDefinitionId": f"id-{name}"} for name in queries]},
            {"queryDefinitionNamePrefix": "otel-kit/"})  # fmt: skip
        for name, (_, text) in queries.items():
            stub.add_response("put_query_definition", {"queryDefinitionId": f"id-{name}"},
                              {"name": f"otel-kit/{name}", "queryString": text, "queryDefinitionId": f"id-{name}",
                               "logGroupNames": ["/aws/lambda/receipts"]})  # fmt: skip
        push(ROOT, ["/aws/lambda/receipts"], ["receipts"], client=_clients(aws, logs), say=lambda _: None)
        stub.assert_no_pending_responses()

    cloudwatch = boto3.client("cloudwatch", endpoint_url=aws, **AWS)
    sns = boto3.client("sns", endpoint_url=aws, **AWS)
    [topic] = [t["TopicArn"] for t in sns.list_topics()["Topics"] if t["TopicArn"].endswith(f":{TOPIC}")]
    subscriptions = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert [s["Protocol"] for s in subscriptions] == ["https"]  # subscribed once, though pushed twice
    alarms = {a["AlarmName"]: a for a in cloudwatch.describe_alarms()["MetricAlarms"]}
    assert set(alarms) == {"otel-kit-receipts-errors", "otel-kit-receipts-throttles", "otel-kit-receipts-duration"}
    for alarm in alarms.values():
        assert alarm["AlarmActions"] == [topic] and alarm["OKActions"] == [topic]
        assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": "receipts"}]
    body = json.loads(cloudwatch.get_dashboard(DashboardName="otel-kit")["DashboardBody"])
    log_widgets = [w for w in body["widgets"] if w["type"] == "log"]
    assert [w["properties"]["title"] for w in log_widgets] == list(queries)
    assert all(w["properties"]["query"].startswith("SOURCE '/aws/lambda/receipts' | ") for w in log_widgets)
    assert not any("abc123" in line for line in said)  # the PagerDuty URL carries the key: never printed


def test_without_a_log_group_the_command_says_what_is_missing() -> None:
    import subprocess
    import sys

    command = [sys.executable, "-m", "otel_kit.cli", "cloudwatch", "push", "--dir", str(ROOT)]
    env = {**os.environ, "AWS_REGION": "eu-west-1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2
    assert "name at least one log group (--log-group)" in result.stderr
