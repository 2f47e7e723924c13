"""The stack runner (``./run demo``) leaves no process and no port behind: after a normal run, a failed start and
Ctrl-C. Each run records every process and port it started in ``stack.json``; these tests check them afterwards."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from demo_services.stack.servers import port_open, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[1]


def _runner(out: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "demo_services.shop", "--out", str(out), *args],
        cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) holds no port and runs nothing
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _assert_nothing_left(out: Path) -> dict[str, object]:
    manifest = json.loads((out / "stack.json").read_text())
    assert manifest["running"] is False
    assert manifest["pids"], "the manifest lists the processes the run started"
    left = [pid for pid in manifest["pids"] if _alive(pid)]
    assert not left, f"processes left behind: {left}"
    open_ports = [port for port in manifest["ports"] if port_open(port)]
    assert not open_ports, f"ports still open: {open_ports}"
    return manifest


def test_a_normal_run_reports_and_leaves_nothing_behind(tmp_path: Path) -> None:
    runner = _runner(tmp_path, "--duration", "8", "--rate", "4", "--seed", "7")
    stdout, stderr = runner.communicate(timeout=240)
    assert runner.returncode == 0, stderr[-3000:]
    for heading in ("a completed saga", "RED per service", "top errors", "alerts:"):
        assert heading in stdout
    assert (tmp_path / "tempo-otlp.jsonl").stat().st_size > 0
    assert (tmp_path / "prometheus-series.json").exists()
    manifest = _assert_nothing_left(tmp_path)
    assert len(manifest["pids"]) >= 14  # backends, broker, database and the seven services


def test_a_failed_start_stops_what_was_started(tmp_path: Path) -> None:
    runner = _runner(tmp_path, "--duration", "5", env={"SHOP_RATE_LIMIT": "fast"})
    _, stderr = runner.communicate(timeout=240)
    assert runner.returncode == 1
    assert "the stack did not start: gateway exited" in stderr
    assert "SHOP_RATE_LIMIT must be a positive number" in stderr
    _assert_nothing_left(tmp_path)


def test_ctrl_c_stops_everything(tmp_path: Path) -> None:
    runner = _runner(tmp_path, "--duration", "120", "--rate", "2")
    try:
        wait_until(
            lambda: (
                (tmp_path / "stack.json").exists()
                and "gateway" in json.loads((tmp_path / "stack.json").read_text())["urls"]
                and runner.poll() is None
            ),
            180,
            "the stack to be up",
        )
        runner.send_signal(signal.SIGINT)
        _, stderr = runner.communicate(timeout=120)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.communicate()
    assert runner.returncode == 130, stderr[-3000:]
    assert "interrupted; everything was stopped" in stderr
    _assert_nothing_left(tmp_path)


def test_the_aws_backend_reports_from_xray_cloudwatch_logs_and_emf(tmp_path: Path) -> None:
    """The aws report tells the story the lgtm one tells, from what AWS (moto) holds: trees named like the lgtm
    report's spans, RED from the EMF documents, errors with their message and log lines, the alarms."""
    runner = _runner(tmp_path, "--backend", "aws", "--duration", "8", "--rate", "4", "--seed", "3",
                     "--fault", "payment-decline")  # fmt: skip
    stdout, stderr = runner.communicate(timeout=240)
    assert runner.returncode == 0, stderr[-3000:]
    assert "X-Ray received" in stdout
    completed = stdout.split("a completed saga", 1)[1].split("\n\n", 1)[0]
    for service in ("gateway", "orders", "inventory", "payments", "notifications", "cashback", "receipts"):
        assert f"{service}: " in completed, f"{service} missing from the X-Ray trace:\n{completed}"
    assert "gateway: POST /orders [server]" in completed, completed
    assert re.search(r"inventory: (SELECT|UPDATE|INSERT) \[client\]", completed), completed
    red = stdout.split("RED per service", 1)[1].split("\n\n", 1)[0]
    gateway = re.search(r"\n  gateway +(\d+) +[\d.]+% +[\d.]+\n", red)
    assert gateway, red
    answered = sum(int(n) for n in re.findall(r"\w+ \d{3}: (\d+)", stdout.split("\n", 1)[0]))
    assert int(gateway[1]) == answered  # every request the load generator had answered, counted once
    errors = stdout.split("top errors", 1)[1].split("\n\n", 1)[0]
    assert "(no message)" not in errors and " x " in errors, errors
    alerts = stdout.split("alerts:", 1)[1]
    assert "otel-kit-gateway-server-errors" in alerts, alerts
    assert json.loads((tmp_path / "xray-segments.json").read_text())
    assert json.loads((tmp_path / "cloudwatch-emf.json").read_text())
    _assert_nothing_left(tmp_path)
