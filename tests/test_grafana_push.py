"""``otel-kit grafana push``: creates what is missing, is idempotent, shows a diff on a dry run, fails clearly."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_kit.grafana import GrafanaPushError, desired_objects, push
from tests.grafana_api import GrafanaAPI

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "glsa_test_token_0123456789"


@pytest.fixture
def grafana() -> Iterator[GrafanaAPI]:
    with GrafanaAPI(TOKEN) as api:
        yield api


def test_a_dry_run_lists_everything_to_create_and_changes_nothing(grafana: GrafanaAPI) -> None:
    said: list[str] = []
    changes = push(ROOT, dry_run=True, url=grafana.url, token=TOKEN, say=said.append)
    wanted = desired_objects(ROOT)
    assert {c.action for c in changes} == {"create"}
    assert len(changes) == 1 + sum(len(objects) for objects in wanted.values())
    assert grafana.writes == []
    assert said[-1].startswith("dry run, nothing changed:")


def test_push_creates_then_a_second_push_changes_nothing(grafana: GrafanaAPI) -> None:
    first = push(ROOT, url=grafana.url, token=TOKEN, say=lambda _: None)
    assert {c.action for c in first} == {"create"}
    assert set(grafana.dashboards) == set(desired_objects(ROOT)["dashboard"])
    assert set(grafana.datasources) == {"mimir", "loki", "tempo"}
    assert grafana.rules["otel-kit-shopoutboxbacklog"]["labels"]["severity"] == "critical"
    writes = len(grafana.writes)
    second = push(ROOT, url=grafana.url, token=TOKEN, say=lambda _: None)
    assert {c.action for c in second} == {"unchanged"}
    assert len(grafana.writes) == writes  # idempotent: nothing written the second time


def test_a_dashboard_changed_in_grafana_is_shown_as_a_diff_and_put_back(grafana: GrafanaAPI) -> None:
    push(ROOT, url=grafana.url, token=TOKEN, say=lambda _: None)
    grafana.dashboards["otel-kit-saga"]["title"] = "edited by hand"
    said: list[str] = []
    changes = push(ROOT, dry_run=True, url=grafana.url, token=TOKEN, say=said.append)
    assert [(c.kind, c.uid) for c in changes if c.action == "update"] == [("dashboard", "otel-kit-saga")]
    diff = next(c.diff for c in changes if c.action == "update")
    assert '-  "title": "edited by hand"' in diff and '+  "title": "Order saga"' in diff
    push(ROOT, url=grafana.url, token=TOKEN, say=lambda _: None)
    assert grafana.dashboards["otel-kit-saga"]["title"] == "Order saga"


def test_a_wrong_token_is_a_clear_error_and_never_printed(grafana: GrafanaAPI) -> None:
    with pytest.raises(GrafanaPushError, match="refused the token") as err:
        push(ROOT, url=grafana.url, token="wrong-token", say=lambda _: None)
    assert "wrong-token" not in str(err.value)


def test_the_command_reads_url_and_token_from_the_environment(grafana: GrafanaAPI) -> None:
    command = [sys.executable, "-m", "otel_kit.cli", "grafana", "push", "--dry-run", "--dir", str(ROOT)]
    missing = subprocess.run(command, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert missing.returncode == 2 and "set GRAFANA_URL" in missing.stderr
    env = {"PATH": "/usr/bin:/bin", "GRAFANA_URL": grafana.url, "GRAFANA_TOKEN": TOKEN}
    ok = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "create    dashboard otel-kit-overview" in ok.stdout
    assert TOKEN not in ok.stdout + ok.stderr
