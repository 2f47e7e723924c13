"""The dashboards and Grafana provisioning: rendered files up to date, every panel explained, every uid resolvable."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards.build import DASHBOARDS, render

ROOT = Path(__file__).resolve().parents[1]
JSON = ROOT / "dashboards" / "json"
PROVISIONING = ROOT / "dashboards" / "provisioning"


def _boards() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(JSON.glob("*.json"))]


def _datasources() -> list[dict[str, Any]]:
    return list(yaml.safe_load((PROVISIONING / "datasources" / "otel-kit.yaml").read_text())["datasources"])


@pytest.mark.parametrize("uid", list(DASHBOARDS))
def test_committed_json_is_what_the_builder_renders(uid: str) -> None:
    assert (JSON / f"{uid}.json").read_text() == render(uid), "run: python -m dashboards"


def test_no_stale_dashboard_files() -> None:
    assert sorted(p.stem for p in JSON.glob("*.json")) == sorted(DASHBOARDS)


@pytest.mark.parametrize("board", _boards(), ids=lambda b: b["uid"])
def test_every_panel_has_a_title_a_description_and_a_unit(board: dict[str, Any]) -> None:
    assert board["title"] and board["description"]
    for panel in board["panels"]:
        assert panel.get("title"), panel
        assert panel.get("description"), f"{panel['title']} has no description"
        if panel["type"] in ("timeseries", "stat"):
            assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']} has no unit"
        assert panel["targets"], f"{panel['title']} queries nothing"


@pytest.mark.parametrize("board", _boards(), ids=lambda b: b["uid"])
def test_service_dashboards_have_environment_and_service_variables(board: dict[str, Any]) -> None:
    if board["uid"] == "otel-kit-collector":  # the pipeline, not a service: no service to choose
        return
    assert {"env", "service"} <= {v["name"] for v in board["templating"]["list"]}


def test_every_datasource_uid_named_anywhere_is_provisioned() -> None:
    uids = {d["uid"] for d in _datasources()}
    assert uids == {"mimir", "loki", "tempo"}
    used = {
        target["datasource"]["uid"]
        for board in _boards()
        for panel in board["panels"]
        for target in [panel, *panel["targets"]]
        if "datasource" in target
    }
    assert used <= uids
    # the links between datasources
    by_uid = {d["uid"]: d["jsonData"] for d in _datasources()}
    linked = {
        by_uid["mimir"]["exemplarTraceIdDestinations"][0]["datasourceUid"],
        by_uid["loki"]["derivedFields"][0]["datasourceUid"],
        by_uid["tempo"]["tracesToLogsV2"]["datasourceUid"],
        by_uid["tempo"]["tracesToMetrics"]["datasourceUid"],
        by_uid["tempo"]["serviceMap"]["datasourceUid"],
        by_uid["tempo"]["lokiSearch"]["datasourceUid"],
    }
    assert linked <= uids


def test_links_between_dashboards_and_from_alerts_resolve() -> None:
    uids = set(DASHBOARDS)
    for board in _boards():
        for link in board["links"]:
            assert link["url"].removeprefix("/d/") in uids
    alert_links = [
        rule["annotations"]["dashboard_url"]
        for path in sorted((ROOT / "alerts").glob("*.rules.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    for url in alert_links:
        match = re.search(r"/d/([^/?]+)", url)
        assert match and match.group(1) in uids, url


def test_the_dashboard_provider_points_at_a_folder_of_these_files() -> None:
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "otel-kit.yaml").read_text())["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"].endswith("/otel-kit")


def test_the_logs_level_filter_offers_the_severity_texts_the_otlp_records_carry() -> None:
    """Loki keeps an OTLP record's severity_text; otel_kit's records carry OpenTelemetry's names (WARN, FATAL), so a
    filter offering WARNING matched nothing."""
    import logging

    from otel_kit import testing

    with testing.capture("svc") as tel:
        for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
            logging.getLogger("app").log(level, "a line")
        sent = [r.log_record.severity_text for r in tel.log_records()]
    logs_board = json.loads(render("otel-kit-logs"))
    (level,) = [v for v in logs_board["templating"]["list"] if v["name"] == "level"]
    offered = level["query"].split(",")
    assert sent == offered[:4] and offered[4:] == ["DEBUG"]
