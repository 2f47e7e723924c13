"""The README's main command: the quickstart demo runs end to end and reports what each backend received."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_demo_reports_traces_logs_and_metrics() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "demo_services.quickstart", "--requests", "6", "--fail-every", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = result.stdout
    assert "orders: 6 sent, 4 x HTTP 200, 2 x HTTP 503" in report
    assert "notifier handled 4 order events from RabbitMQ" in report
    assert "in 6 traces (2 with an error)" in report
    assert "a placed order: trace " in report and "process orders  [consumer]" in report
    assert "a failed order: trace " in report and "GET /stock/<sku> failed: RuntimeError" in report
    assert "client=quickstart-shop, server=quickstart-shop" in report
    assert "orders placed: 6/6" in result.stderr  # progress is shown while it runs
