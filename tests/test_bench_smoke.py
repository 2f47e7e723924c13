"""A short run of every benchmark: the harness works and its output is well formed (not how fast anything is)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def _output(tmp_path: Path, name: str) -> dict[str, object]:
    assert (tmp_path / f"{name}.png").stat().st_size > 1000
    data = json.loads((tmp_path / f"{name}.json").read_text())
    assert data["benchmark"] == name and data["smoke"] is True and data["machine"]["cpus"] >= 1
    return data  # type: ignore[no-any-return]


def test_hot_paths_smoke(tmp_path: Path) -> None:
    from bench import hot_paths

    hot_paths.main(["--smoke", "--out", str(tmp_path)])
    data = _output(tmp_path, "hot_paths")
    assert set(data["ratios"]) == {name for name, *_ in hot_paths.RATIOS}  # type: ignore[arg-type]
    assert all(r["ratio"] > 0 for r in data["ratios"].values())  # type: ignore[attr-defined]
    timed = {variant for _, a, b, _ in hot_paths.RATIOS for variant in (a, b)}
    assert timed <= set(data["session_median_ns"])  # type: ignore[arg-type]
    methods = {name: r["method"] for name, r in data["ratios"].items()}  # type: ignore[attr-defined]
    assert methods.pop("histogram: otel_kit / raw SDK") == "pytest-benchmark sessions"
    assert set(methods.values()) == {"alternating blocks"}


def test_request_overhead_smoke(tmp_path: Path) -> None:
    from bench import request_overhead

    request_overhead.main(["--smoke", "--out", str(tmp_path)])
    data = _output(tmp_path, "request_overhead")
    for route in ("/work", "/trivial"):
        instrumented = {"otel_kit", "otel_kit_caller_logs", "otel_kit_no_logs", "agent"}
        assert set(data["summary"][route]) == instrumented  # type: ignore[index]
        for variant in ("bare", *instrumented):
            run = data["medians"][route][variant]  # type: ignore[index]
            assert run["rps"] > 0 and run["errors"] == 0
            # the service's CPU per request, of which its main thread's is a part; the kernel counts each in clock
            # ticks, rounded apart, so the part can exceed the whole by one tick at each end of the window
            ticks = 2 / os.sysconf("SC_CLK_TCK") * 1e6 / run["requests"]
            assert 0 < run["main_thread_cpu_us_per_request"] <= run["cpu_us_per_request"] + ticks
            assert run["main_thread_waits_per_request"] >= 0


def test_outage_isolation_smoke(tmp_path: Path) -> None:
    from bench import outage_isolation

    outage_isolation.main(["--smoke", "--out", str(tmp_path)])
    data = _output(tmp_path, "outage_isolation")
    assert data["application_errors"] == 0
    spans = data["spans"]
    assert spans["sent"] > 0 and spans["sent"] <= spans["received"] + spans["reported_dropped"]  # type: ignore[index]
    # a span both received and reported dropped was in an export that timed out while the collector was frozen
    assert spans["counted_twice"] <= spans["reported_dropped_in_timed_out_exports"]  # type: ignore[index]
    assert len(data["rss_kib"]["after_each_outage"]) == data["repetitions"]  # type: ignore[index,arg-type]


def test_collector_throughput_smoke(tmp_path: Path) -> None:
    from bench import collector_throughput

    collector_throughput.main(["--smoke", "--out", str(tmp_path)])
    data = _output(tmp_path, "collector_throughput")
    assert data["no_loss"] is True
    assert data["medians"]["spans_per_cpu_second"] > 0  # type: ignore[index]


def test_cold_start_smoke(tmp_path: Path) -> None:
    from bench import cold_start

    cold_start.main(["--smoke", "--out", str(tmp_path)])
    data = _output(tmp_path, "cold_start")
    assert set(data["ratios"]) == {name for name, *_ in cold_start.RATIOS}  # type: ignore[arg-type]
    assert set(data["median_ms"]) == set(cold_start.VARIANTS)  # type: ignore[arg-type]
    for figures in data["median_ms"].values():  # type: ignore[attr-defined]
        assert all(figures[f"{phase}_ms"] > 0 for phase in cold_start.PHASES)
