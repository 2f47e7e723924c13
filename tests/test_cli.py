"""The otel-kit command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

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
    result = subprocess.run(
        [sys.executable, "-m", "otel_kit.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.startswith("otel-kit ")
