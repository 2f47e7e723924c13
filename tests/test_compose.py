"""compose-lgtm.yml, checked without a Docker engine: the Compose specification's schema, pinned images, loopback
ports, existing bind mounts, health-checked start order, no secret in the file, and configs that agree with it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.compose_net import compose_config_binary, example_env, load

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose-lgtm.yml"


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def _services() -> dict[str, dict[str, Any]]:
    return dict(_compose()["services"])


def test_the_file_follows_the_compose_specification_schema() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", list(_services()))
def test_every_image_is_pinned(name: str) -> None:
    service = _services()[name]
    image = service.get("image", "")
    if "build" in service or image.endswith(":local"):  # built from this repository
        assert "build" in service or any("build" in s and s.get("image") == image for s in _services().values())
        return
    assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{name}: image {image!r} has no tag"
    assert not image.endswith(":latest")


@pytest.mark.parametrize("name", list(_services()))
def test_ports_are_published_on_loopback_only(name: str) -> None:
    for port in _services()[name].get("ports", []):
        assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


def test_every_bind_mounted_path_exists() -> None:
    for name, service in _services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in _compose()["volumes"], f"{name}: named volume {source} is not declared"


def test_start_order_waits_on_health_checks() -> None:
    services = _services()
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no health check to wait on"
    # the three backends are health-checked from outside, by one waiter the others depend on
    waiter = " ".join(services["backends-ready"]["command"])
    for backend in ("loki", "tempo", "mimir"):
        assert f"http://{backend}:" in waiter and "/ready" in waiter
    for name in ("grafana", "collector"):
        assert services[name]["depends_on"]["backends-ready"]["condition"] == "service_healthy"


def test_no_secret_has_a_value_in_the_file() -> None:
    text = COMPOSE.read_text()
    for variable in ("GRAFANA_ADMIN_PASSWORD", "POSTGRES_PASSWORD", "RABBITMQ_PASSWORD", "SHOP_API_KEY"):
        uses = re.findall(rf"\$\{{{variable}([^}}]*)\}}", text)
        assert uses, f"{variable} is not read from the environment"
        assert all(use.startswith(":?") for use in uses), f"{variable} has a default: {uses}"
    example = (ROOT / ".env.example").read_text()
    assert re.search(r"^GRAFANA_ADMIN_PASSWORD=$", example, re.M)


def test_every_datasource_names_a_compose_service_on_its_configured_port() -> None:
    services = _services()
    datasources = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/otel-kit.yaml").read_text())
    ports = {
        "mimir": yaml.safe_load((ROOT / "backends/mimir/mimir.yaml").read_text())["server"]["http_listen_port"],
        "loki": yaml.safe_load((ROOT / "backends/loki/loki.yaml").read_text())["server"]["http_listen_port"],
        "tempo": yaml.safe_load((ROOT / "backends/tempo/tempo.yaml").read_text())["server"]["http_listen_port"],
    }
    for ds in datasources["datasources"]:
        url = urlsplit(ds["url"])
        assert url.hostname in services, f"{ds['name']}: no service {url.hostname}"
        assert url.port == ports[url.hostname]


def test_the_collector_sends_to_the_backends_where_they_listen() -> None:
    env = _services()["collector"]["environment"]
    tempo = yaml.safe_load((ROOT / "backends/tempo/tempo.yaml").read_text())
    tempo_grpc = tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].rsplit(":", 1)[1]
    assert env["TEMPO_OTLP_ENDPOINT"] == f"tempo:{tempo_grpc}"
    assert env["LOKI_OTLP_ENDPOINT"] == "http://loki:3100/otlp"
    assert env["MIMIR_REMOTE_WRITE_URL"] == "http://mimir:9009/api/v1/push"
    # the configs it runs are the ones the collector tests validate with the real binary
    for config in _services()["collector"]["command"][1::2]:
        assert (ROOT / "collector" / "config" / Path(config).name).exists()


def test_tempo_does_not_generate_the_metrics_the_collector_already_makes() -> None:
    tempo = yaml.safe_load((ROOT / "backends/tempo/tempo.yaml").read_text())
    assert "metrics_generator" not in tempo and "overrides" not in tempo


def test_mimir_evaluates_every_rule_file_and_alerts_through_the_alertmanager_service() -> None:
    mounted = {Path(v.split(":")[0]).name for v in _services()["mimir"]["volumes"] if v.startswith("./alerts/")}
    assert mounted == {p.name for p in (ROOT / "alerts").glob("*.rules.yml")}
    mimir = yaml.safe_load((ROOT / "backends/mimir/mimir.yaml").read_text())
    assert urlsplit(mimir["ruler"]["alertmanager_url"]).hostname in _services()
    key_file = yaml.safe_load((ROOT / "alerts/alertmanager.yml").read_text())["receivers"][0]["pagerduty_configs"][0]
    targets = [s["target"] for s in _services()["alertmanager"]["secrets"]]
    assert key_file["routing_key_file"] in targets


@pytest.mark.parametrize("dockerfile", ["collector/Dockerfile", "demo_services/Dockerfile"])
def test_every_base_image_the_project_builds_on_is_pinned_by_version(dockerfile: str) -> None:
    for image in re.findall(r"^FROM\s+(\S+)", (ROOT / dockerfile).read_text(), re.M):
        tag = image.rpartition(":")[2]
        assert ":" in image and re.search(r"\d+\.\d+", tag), f"{dockerfile}: {image} floats (no version in its tag)"


def test_the_demo_image_installs_the_locked_dependencies() -> None:
    dockerfile = (ROOT / "demo_services" / "Dockerfile").read_text()
    assert "COPY pyproject.toml constraints.txt" in dockerfile
    assert re.search(r"pip install -c constraints\.txt", dockerfile)
    assert re.search(r"^FROM python:3\.11\.\d+-slim", dockerfile, re.M)  # the Python the tests run on


def test_services_of_a_profile_require_no_variable_the_default_start_lacks() -> None:
    """Compose interpolates every service before it drops those of inactive profiles, so a ``${VAR:?}`` in the aws
    profile stopped ``docker compose up`` without that profile (``required variable AWS_REGION is missing``)."""
    for name, service in _services().items():
        if service.get("profiles"):
            required = re.findall(r"\$\{(\w+):?\?", yaml.safe_dump(service))
            assert not required, f"{name} (profiles {service['profiles']}) requires {required}"


def test_every_shop_server_listens_beyond_the_containers_loopback() -> None:
    """gateway, orders and payments run uvicorn through demo_services.shop.common.serve_asgi, which binds
    SHOP_BIND_HOST (127.0.0.1 unless set): inside a container that refused every call from other containers."""
    from demo_services.shop import common

    assert "SHOP_BIND_HOST" in Path(common.__file__).read_text()
    for name in ("gateway", "orders", "payments"):
        service = _services()[name]
        assert "demo_services.shop." in " ".join(service["command"]), name
        assert service["environment"].get("SHOP_BIND_HOST") == "0.0.0.0", name


# --- the real Compose loader (tests/compose_config: compose-go, the loader `docker compose config` runs on) ------


@pytest.fixture(scope="session")
def compose_config() -> Path:
    return compose_config_binary()


@pytest.mark.e2e
@pytest.mark.parametrize("profiles", [(), ("aws",)])
def test_the_compose_loader_accepts_the_file_with_the_env_example_filled_in(
    compose_config: Path, tmp_path: Path, profiles: tuple[str, ...]
) -> None:
    loaded = load(compose_config, example_env(), tmp_path, *profiles)
    assert loaded.returncode == 0, loaded.stderr
    model = json.loads(loaded.stdout)
    declared = _services()
    expected = {n for n, s in declared.items() if not s.get("profiles") or set(s["profiles"]) & set(profiles)}
    assert set(model["services"]) == expected
    # what the loader makes of the anchors: every shop server listens beyond its container's loopback
    for name in ("gateway", "orders", "payments"):
        assert model["services"][name]["environment"]["SHOP_BIND_HOST"] == "0.0.0.0"
    assert model["services"]["gateway"]["environment"]["SHOP_API_KEYS"] == "shop_api_key-value-0123456789"


@pytest.mark.e2e
def test_the_compose_loader_names_a_value_left_unset(compose_config: Path, tmp_path: Path) -> None:
    loaded = load(compose_config, example_env(leave_out="SHOP_API_KEY"), tmp_path)
    assert loaded.returncode == 1
    assert "required variable SHOP_API_KEY is missing a value: set SHOP_API_KEY in .env" in loaded.stderr
