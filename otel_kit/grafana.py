"""``otel-kit grafana push``: put the project's folder, datasources, dashboards and alert rules into a Grafana.

For teams with a Grafana of their own (the compose stack provisions the same objects from files). Every object has
a fixed uid, so a push creates what is missing, updates what differs and leaves the rest alone: running it twice
changes nothing the second time. ``--dry-run`` prints what would change, with a diff, and changes nothing.

The URL and a service account token come from ``GRAFANA_URL`` and ``GRAFANA_TOKEN``; the token is never printed.
Alert rules (Prometheus rule files) become Grafana-managed rules on the ``mimir`` datasource: the rule's PromQL is
the condition, so a series it returns is a firing alert, with the same labels and annotations.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

__all__ = ["GrafanaPushError", "desired_objects", "push"]

FOLDER_UID = "otel-kit"
DATASOURCE_FIELDS = ("name", "uid", "type", "access", "url", "isDefault", "jsonData")
RULE_FIELDS = ("uid", "title", "folderUID", "ruleGroup", "condition", "data", "for", "labels", "annotations",
               "noDataState", "execErrState")  # fmt: skip


class GrafanaPushError(Exception):
    """A push that cannot go on: the message says what to fix."""


@dataclass
class Change:
    kind: str  # folder, datasource, dashboard, alert rule
    uid: str
    action: str  # create, update, unchanged
    diff: str = ""


def _yaml(path: Path) -> Any:
    import yaml

    return yaml.safe_load(path.read_text())


def desired_objects(root: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """What Grafana should hold, read from ``root`` (the installed assets or a repository): kind -> uid -> object."""
    datasources = {
        ds["uid"]: {key: ds[key] for key in DATASOURCE_FIELDS if key in ds}
        for path in sorted((root / "dashboards" / "provisioning" / "datasources").glob("*.yaml"))
        for ds in _yaml(path).get("datasources", [])
    }
    dashboards = {}
    for path in sorted((root / "dashboards" / "json").glob("*.json")):
        board = json.loads(path.read_text())
        dashboards[board["uid"]] = board
    rules = {}
    for path in sorted((root / "alerts").glob("*.rules.yml")):
        for group in _yaml(path)["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    converted = _grafana_rule(rule, group["name"])
                    rules[converted["uid"]] = converted
    if not dashboards:
        raise GrafanaPushError(
            f"no dashboards under {root / 'dashboards' / 'json'}: --dir names a folder laid out as "
            "the otel-kit repository, or leave it out to push the dashboards installed with otel-kit"
        )
    return {"datasource": datasources, "dashboard": dashboards, "alert rule": rules}


def _grafana_rule(rule: dict[str, Any], group: str) -> dict[str, Any]:
    query = {"refId": "A", "expr": rule["expr"], "instant": True, "datasource": {"type": "prometheus", "uid": "mimir"}}
    return {
        "uid": f"otel-kit-{rule['alert'].lower()}"[:40],
        "title": rule["alert"],
        "folderUID": FOLDER_UID,
        "ruleGroup": group,
        "condition": "A",
        "data": [{"refId": "A", "datasourceUid": "mimir", "relativeTimeRange": {"from": 600, "to": 0}, "model": query}],
        "for": rule.get("for", "0s"),
        "labels": rule.get("labels", {}),
        "annotations": rule.get("annotations", {}),
        "noDataState": "OK",
        "execErrState": "Error",
    }


def _diff(current: Any, wanted: Any) -> str:
    before = json.dumps(current, indent=2, sort_keys=True).splitlines()
    after = json.dumps(wanted, indent=2, sort_keys=True).splitlines()
    return "\n".join(difflib.unified_diff(before, after, "in Grafana", "otel-kit", lineterm="", n=2))


def _plan(
    kind: str, uid: str, current: dict[str, Any] | None, wanted: dict[str, Any], fields: tuple[str, ...]
) -> Change:
    if current is None:
        return Change(kind, uid, "create")
    compared = {key: current.get(key) for key in fields if key in wanted}
    if compared == {key: wanted[key] for key in fields if key in wanted}:
        return Change(kind, uid, "unchanged")
    return Change(kind, uid, "update", _diff(compared, {key: wanted[key] for key in fields if key in wanted}))


def push(root: Path, dry_run: bool = False, url: str | None = None, token: str | None = None,
         say: Callable[[str], None] = print) -> list[Change]:  # fmt: skip
    """Bring the Grafana at ``url`` (default ``GRAFANA_URL``) in line with ``root``; the changes, in order."""
    from grafana_client.api import GrafanaApi
    from grafana_client.client import GrafanaClientError, GrafanaException

    url = url or os.environ.get("GRAFANA_URL")
    token = token or os.environ.get("GRAFANA_TOKEN")
    if not url or not token:
        raise GrafanaPushError("set GRAFANA_URL (e.g. https://grafana.example.com) and GRAFANA_TOKEN (a service "
                               "account token with the Editor role, or Admin for datasources)")  # fmt: skip
    wanted = desired_objects(root)
    api = GrafanaApi.from_url(url, credential=token)

    def fetch(get: Callable[[], Any]) -> Any:
        try:
            return get()
        except GrafanaClientError as err:
            if err.status_code == 404:
                return None
            if err.status_code in (401, 403):
                raise GrafanaPushError(f"Grafana at {url} refused the token (HTTP {err.status_code})") from None
            raise GrafanaPushError(f"Grafana at {url} answered HTTP {err.status_code}: {err.message}") from None
        except GrafanaException as err:
            raise GrafanaPushError(f"Grafana at {url}: {err}") from None
        except OSError as err:
            raise GrafanaPushError(f"cannot reach Grafana at {url}: {err}") from None

    changes: list[Change] = []

    def apply(change: Change, action: Callable[[], Any]) -> None:
        changes.append(change)
        say(f"{change.action:<9} {change.kind} {change.uid}" + (f"\n{change.diff}" if change.diff else ""))
        if change.action != "unchanged" and not dry_run:
            fetch(action)

    folder = fetch(partial(api.folder.get_folder, FOLDER_UID))
    apply(Change("folder", FOLDER_UID, "unchanged" if folder else "create"),
          partial(api.folder.create_folder, "otel-kit", uid=FOLDER_UID))  # fmt: skip

    for uid, ds in wanted["datasource"].items():
        current = fetch(partial(api.datasource.get_datasource_by_uid, uid))
        write = partial(api.datasource.create_datasource, ds) if current is None else partial(
            api.datasource.update_datasource_by_uid, uid, ds)  # fmt: skip
        apply(_plan("datasource", uid, current, ds, DATASOURCE_FIELDS), write)

    for uid, board in wanted["dashboard"].items():
        found = fetch(partial(api.dashboard.get_dashboard, uid))
        current = {k: v for k, v in found["dashboard"].items() if k not in ("id", "version")} if found else None
        body = {"dashboard": board, "folderUid": FOLDER_UID, "overwrite": True, "message": "otel-kit grafana push"}
        apply(_plan("dashboard", uid, current, board, tuple(board)), partial(api.dashboard.update_dashboard, body))

    for uid, rule in wanted["alert rule"].items():
        current = fetch(partial(api.alertingprovisioning.get_alertrule, uid))
        write = partial(api.alertingprovisioning.create_alertrule, rule) if current is None else partial(
            api.alertingprovisioning.update_alertrule, uid, rule)  # fmt: skip
        apply(_plan("alert rule", uid, current, rule, RULE_FIELDS), write)

    counts = {a: sum(c.action == a for c in changes) for a in ("create", "update", "unchanged")}
    summary = ", ".join(f"{n} to {a}" if a != "unchanged" else f"{n} unchanged" for a, n in counts.items())
    say(("dry run, nothing changed: " if dry_run else "done: ") + summary)
    return changes
