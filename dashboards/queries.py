"""The queries every dashboard panel and recording rule runs, as the backend would get them (variables expanded)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# what Grafana substitutes: every environment, service, level and correlation id selected, the rate interval of a
# 15 s scrape
EXPANSIONS = {"$__rate_interval": "1m", "$env": ".*", "$service": ".*", "$level": ".*", "$correlation_id": ".*"}


def expand(expr: str) -> str:
    for variable, value in EXPANSIONS.items():
        expr = expr.replace(variable, value)
    return expr


def _targets(datasource_uid: str) -> dict[str, str]:
    found = {}
    for path in sorted((ROOT / "dashboards" / "json").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                if target.get("datasource", {}).get("uid") == datasource_uid:
                    found[f"{board['uid']} / {panel['title']} / {target['refId']}"] = expand(target["expr"])
    return found


def dashboard_queries() -> dict[str, str]:
    """``"<dashboard uid> / <panel title> / <refId>"`` -> PromQL, for every target on the Mimir datasource."""
    return _targets("mimir")


def log_queries() -> dict[str, str]:
    """``"<dashboard uid> / <panel title> / <refId>"`` -> LogQL, for every target on the Loki datasource."""
    return _targets("loki")


def recording_rules() -> dict[str, str]:
    """Recorded series name -> the PromQL that records it, from ``alerts/*.rules.yml``."""
    return {
        rule["record"]: rule["expr"]
        for path in sorted((ROOT / "alerts").glob("*.rules.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
