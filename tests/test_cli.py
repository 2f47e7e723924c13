"""The otel-kit command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from demo_services.stack.servers import OtlpReceiver
from otel_kit.cli import main


def test_settings_prints_effective_configuration(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "orders")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    assert main(["settings"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["settings"]["service_name"] == "orders"
    assert out["settings"]["endpoints"]["logs"] == "http://localhost:4318/v1/logs"
    assert out["problems"] == []


def test_settings_exits_1_and_names_a_bad_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "2")
    assert main(["settings"]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert problems == ["OTEL_TRACES_SAMPLER_ARG='2' is not valid: allowed a number from 0 to 1; using 1.0 instead"]


def test_console_script_is_installed() -> None:
    """The ``otel-kit`` command pip installed beside this Python, as a user runs it."""
    from importlib.metadata import entry_points, version

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "otel-kit"]
    assert script.value == "otel_kit.cli:main"
    command = Path(sys.executable).parent / "otel-kit"
    result = subprocess.run([str(command), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"otel-kit {version('otel-kit')}"


@pytest.mark.e2e
def test_doctor_passes_against_an_answering_collector_and_masks_headers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], otlp_receiver: OtlpReceiver
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{otlp_receiver.http_port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer s3cret-token,x-team=payments")
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "s3cret-token" not in out and "payments" not in out
    assert '"OTEL_EXPORTER_OTLP_HEADERS": "authorization=***,x-team=***"' in out
    assert "ok: the collector at" in out and "no problems found" in out


def test_doctor_names_each_problem_with_its_fix(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: refused
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_TRACES_SAMPLER", "sometimes")
        assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert f"problem: the collector at http://127.0.0.1:{port} does not answer" in out
    assert "fix: start the collector (the otel-kit collector image, or any OpenTelemetry Collector" in out
    assert "point OTEL_EXPORTER_OTLP_ENDPOINT at the one you run" in out
    assert "problem: OTEL_TRACES_SAMPLER='sometimes' is not valid" in out


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "x"}, "no AWS region"),
        ({"AWS_REGION": "eu-west-1"}, "no AWS credentials"),
    ],
)
def test_doctor_aws_names_a_missing_region_or_credentials(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    env: dict[str, str],
    problem: str,
) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "none")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["doctor", "--aws"]) == 1
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("problem: ")]
    assert line.startswith(f"problem: {problem}")
    assert "x" not in out.split("configuration:")[0]  # nothing secret printed
