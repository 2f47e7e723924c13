"""Alert rules, their unit tests and the Alertmanager config, checked by the tools that run them.

promtool and amtool come with Debian's prometheus and prometheus-alertmanager packages (``./run setup``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ALERTS = Path(__file__).resolve().parents[1] / "alerts"
RULE_FILES = sorted(ALERTS.glob("*.rules.yml"))
TEST_FILES = sorted((ALERTS / "tests").glob("*.test.yml"))


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed; run ./run setup"
    return path


def _alerts() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


@pytest.mark.e2e  # Debian's promtool and amtool
def test_rule_files_pass_promtool_check() -> None:
    command = [_tool("promtool"), "check", "rules", *map(str, RULE_FILES)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.e2e  # Debian's promtool and amtool
def test_every_alert_passes_its_promtool_unit_tests() -> None:
    result = subprocess.run(
        [_tool("promtool"), "test", "rules", *map(str, TEST_FILES)], capture_output=True, text=True, cwd=ALERTS
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TEST_FILES)


@pytest.mark.parametrize("alert", _alerts(), ids=lambda a: a["alert"])
def test_every_alert_has_severity_summary_description_runbook_and_dashboard(alert: dict[str, Any]) -> None:
    assert alert["labels"]["severity"] in ("critical", "warning")
    for annotation in ("summary", "description", "runbook_url", "dashboard_url"):
        assert alert["annotations"].get(annotation), f"{alert['alert']} has no {annotation}"
    anchor = alert["annotations"]["runbook_url"].split("#", 1)[1]
    assert f'<a id="{anchor}"></a>' in (ALERTS / "runbooks.md").read_text(), f"no runbook section {anchor}"


@pytest.mark.parametrize("alert", _alerts(), ids=lambda a: a["alert"])
def test_every_alert_is_unit_tested_firing_and_silent(alert: dict[str, Any]) -> None:
    cases = [
        case
        for path in TEST_FILES
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case["alertname"] == alert["alert"]
    ]
    assert any(case["exp_alerts"] for case in cases), f"no test where {alert['alert']} fires"
    assert any(not case["exp_alerts"] for case in cases), f"no test where {alert['alert']} stays silent"
    for case in cases:
        for expected in case["exp_alerts"]:
            assert set(expected["exp_annotations"]) == set(alert["annotations"]), "every annotation is asserted"


@pytest.mark.e2e  # Debian's promtool and amtool
def test_alertmanager_config_passes_amtool() -> None:
    result = subprocess.run(
        [_tool("amtool"), "check-config", str(ALERTS / "alertmanager.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_pagerduty_routing_key_is_read_from_an_absolute_file_path() -> None:
    """Alertmanager 0.25 resolves routing_key_file against its working directory: a relative path breaks."""
    config = yaml.safe_load((ALERTS / "alertmanager.yml").read_text())
    configs = [pd for receiver in config["receivers"] for pd in receiver.get("pagerduty_configs", [])]
    assert configs
    for pagerduty in configs:
        assert "routing_key" not in pagerduty, "no key in the file"
        assert Path(pagerduty["routing_key_file"]).is_absolute()
