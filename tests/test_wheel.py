"""otel-kit as a user installs it: the sdist and the wheel built from this repository, the wheel installed with no
extras into a fresh virtualenv outside the repository, and used from there. The tools that push dashboards, rules
and queries read the copies the wheel carries; without their extra they name it."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from demo_services.stack.servers import OtlpReceiver, wait_until
from tests.grafana_api import GrafanaAPI

ROOT = Path(__file__).resolve().parents[1]
# what `import otel_kit` must not import: the integrations' libraries and every optional dependency
OPTIONAL = {"fastapi", "starlette", "flask", "werkzeug", "requests", "httpx", "pika", "aio_pika", "boto3",
            "botocore", "aws_xray_sdk", "psycopg", "psycopg_pool", "grafana_client", "grafana_foundation_sdk",
            "yaml", "uvicorn", "gunicorn"}  # fmt: skip


@dataclass
class Built:
    sdist: Path
    wheel: Path
    home: Path  # a folder outside the repository, where the commands run

    def venv(self, name: str, *extras: str) -> Path:
        """A fresh virtualenv with the wheel (and ``extras``) installed from the locked versions."""
        venv = self.home / name
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        wanted = f"{self.wheel}[{','.join(extras)}]" if extras else str(self.wheel)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-c", str(ROOT / "constraints.txt"), wanted],
                       check=True, timeout=600, cwd=self.home)  # fmt: skip
        return venv


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    out = tmp_path_factory.mktemp("dist")
    # the sdist first, then the wheel built from the sdist: what the sdist lacks, the wheel lacks too
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], check=True, timeout=600,
                   capture_output=True)  # fmt: skip
    (sdist,), (wheel,) = out.glob("*.tar.gz"), out.glob("*.whl")
    return Built(sdist, wheel, tmp_path_factory.mktemp("user"))


@pytest.fixture(scope="module")
def bare(built: Built) -> Path:
    return built.venv("bare")


def _run(venv: Path, *argv: str, env: dict[str, str] | None = None, cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(cwd), **(env or {})}
    return subprocess.run(argv, capture_output=True, text=True, env=clean, cwd=cwd, timeout=120)


def test_import_otel_kit_imports_no_integration_or_optional_dependency() -> None:
    """In the development virtualenv, where every optional dependency is installed."""
    probe = "import json, sys, otel_kit; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    loaded = set(json.loads(subprocess.check_output([sys.executable, "-c", probe], text=True, timeout=60)))
    assert not loaded & OPTIONAL, sorted(loaded & OPTIONAL)


@pytest.mark.e2e
def test_the_wheel_carries_the_assets_the_tools_push(built: Built) -> None:
    expected = {
        f"otel_kit/assets/{folder}/{p.name}"
        for folder, pattern in {
            "dashboards/json": "*.json",
            "dashboards/provisioning/datasources": "*.yaml",
            "alerts": "*.rules.yml",
            "cloudwatch/queries": "*.query",
        }.items()
        for p in (ROOT / folder).glob(pattern)
    }
    with zipfile.ZipFile(built.wheel) as wheel:
        names = set(wheel.namelist())
        assert expected <= names, sorted(expected - names)
        assert not [n for n in names if n.startswith(("tests/", "demo_services/", "bench/"))]
    with tarfile.open(built.sdist) as sdist:
        assert any(n.endswith("/setup.py") for n in sdist.getnames())


@pytest.mark.e2e
def test_init_and_a_traced_call_reach_a_real_otlp_receiver(built: Built, bare: Path) -> None:
    script = (
        "import logging, otel_kit\n"
        "handle = otel_kit.init('wheel-user')\n"
        "otel_kit.traced(lambda: logging.getLogger('app').warning('inside'), name='from the wheel')()\n"
        "handle.shutdown()\n"
    )
    with OtlpReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.grpc_port}"}
        ran = _run(bare, str(bare / "bin" / "python"), "-c", script, env=env, cwd=built.home)
        assert ran.returncode == 0, ran.stderr
        wait_until(lambda: any(s["name"] == "from the wheel" for _, s in receiver.spans()), 30, "the span")
        (resource,) = {json.dumps(r, sort_keys=True) for r, s in receiver.spans() if s["name"] == "from the wheel"}
        assert json.loads(resource)["service.name"] == "wheel-user"
    # the JSON line of the log call inside the span, joined to it by its trace id
    (line,) = [json.loads(x) for x in ran.stdout.splitlines() if '"inside"' in x]
    assert line["service"] == "wheel-user" and line["trace_id"]


@pytest.mark.e2e
def test_settings_and_doctor_from_the_wheel(built: Built, bare: Path) -> None:
    settings = _run(bare, "otel-kit", "settings", cwd=built.home)
    assert settings.returncode == 0, settings.stderr
    with OtlpReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.http_port}",
               "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}  # fmt: skip
        doctor = _run(bare, "otel-kit", "doctor", env=env, cwd=built.home)
    assert doctor.returncode == 0 and "no problems found" in doctor.stdout, doctor.stdout + doctor.stderr
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:9"  # discard: nothing answers
    failing = _run(bare, "otel-kit", "doctor", "--aws", env=env, cwd=built.home)
    assert failing.returncode == 1
    assert "fix: start the collector" in failing.stdout and "./run" not in failing.stdout
    assert "fix: pip install 'otel-kit[aws]'" in failing.stdout  # botocore is an extra's


@pytest.mark.e2e
def test_each_push_without_its_extra_names_the_extra(built: Built, bare: Path) -> None:
    grafana = _run(bare, "otel-kit", "grafana", "push", "--dry-run", cwd=built.home)
    assert grafana.returncode == 2
    assert "pip install 'otel-kit[grafana]'" in grafana.stderr and "Traceback" not in grafana.stderr
    cloudwatch = _run(bare, "otel-kit", "cloudwatch", "push", "--log-group", "g", "--dry-run", cwd=built.home)
    assert cloudwatch.returncode == 2
    assert "pip install 'otel-kit[aws]'" in cloudwatch.stderr and "Traceback" not in cloudwatch.stderr
    xray = _run(bare, str(bare / "bin" / "python"), "-c", "from otel_kit.xray_sdk import init_xray_sdk; "
                "init_xray_sdk('x')", cwd=built.home)  # fmt: skip
    assert "pip install 'otel-kit[xray]'" in xray.stderr


@pytest.fixture
def grafana() -> Iterator[GrafanaAPI]:
    with GrafanaAPI("glsa_wheel_token_0123456789") as api:
        yield api


@pytest.mark.e2e
def test_grafana_push_from_the_wheel_pushes_the_dashboards_it_carries(built: Built, grafana: GrafanaAPI) -> None:
    venv = built.venv("with-grafana", "grafana")
    env = {"GRAFANA_URL": grafana.url, "GRAFANA_TOKEN": grafana.token}
    pushed = _run(venv, "otel-kit", "grafana", "push", cwd=built.home, env=env)
    assert pushed.returncode == 0, pushed.stderr
    boards = {p.stem for p in (ROOT / "dashboards" / "json").glob("*.json")}
    assert len(grafana.dashboards) == len(boards) > 0
    assert all(f"dashboard {uid}" in pushed.stdout for uid in grafana.dashboards)
