"""Benchmark 4: spans per second per core that the project's collector (base + lgtm) accepts with no loss.

    python -m bench.collector_throughput [--spans 100000] [--repetitions 5] [--smoke]

The collector runs the shipped base + lgtm configuration, span_metrics and service_graph on; a second collector
stands in for Tempo and Loki (accepting and discarding) and Prometheus for Mimir. A Python sender process pushes
``--spans`` spans per repetition as fast as it can. Throughput is accepted spans over the collector's own CPU
seconds (so the sender sharing the machine does not distort it); "no loss" means the stand-in Tempo accepted
every span sent. Memory is the collector's resident size after each repetition.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.harness import arguments, interleaved, medians, save
from bench.load import cpu_seconds, rss_kib
from demo_services.stack.servers import Collector, Prometheus, wait_until

HERE = Path(__file__).resolve().parent


def _counter(port: int, metric: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(metric))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = arguments(__doc__, argv, spans=(int, 100_000, "spans sent per repetition"))
    spans, reps = (2_000, 1) if args.smoke else (args.spans, max(args.repetitions, 5))

    with ExitStack() as stack:
        sink = stack.enter_context(Collector([HERE / "collector-sink.yaml"]))
        mimir = stack.enter_context(Prometheus())
        env = {
            "TEMPO_OTLP_ENDPOINT": f"127.0.0.1:{sink.grpc_port}",
            "LOKI_OTLP_ENDPOINT": f"http://127.0.0.1:{sink.http_port}",
            "MIMIR_REMOTE_WRITE_URL": mimir.remote_write_url,
        }
        collector = stack.enter_context(Collector(["lgtm.yaml"], env))
        pid = collector.pid()
        accepted_metric = "otelcol_receiver_accepted_spans"

        def run() -> dict[str, float]:
            before = (_counter(collector.metrics_port, accepted_metric), _counter(sink.metrics_port, accepted_metric))
            refused_before = _counter(collector.metrics_port, "otelcol_receiver_refused_spans")
            cpu0, wall0 = cpu_seconds(pid), time.monotonic()
            argv = [sys.executable, "-m", "bench.span_sender", "--endpoint", collector.endpoint, "--spans", str(spans)]
            sent = float(subprocess.run(argv, check=True, capture_output=True, text=True, timeout=900,
                                        cwd=HERE.parent).stdout.strip())  # fmt: skip
            wait_until(lambda: _counter(sink.metrics_port, accepted_metric) - before[1] >= sent, 120,
                       "the stand-in Tempo to accept every span")  # fmt: skip
            cpu, wall = cpu_seconds(pid) - cpu0, time.monotonic() - wall0
            accepted = _counter(collector.metrics_port, accepted_metric) - before[0]
            delivered = _counter(sink.metrics_port, accepted_metric) - before[1]
            return {
                "sent": sent,
                "accepted": accepted,
                "delivered": delivered,
                "refused": _counter(collector.metrics_port, "otelcol_receiver_refused_spans") - refused_before,
                "collector_cpu_s": cpu,
                "wall_s": wall,
                "spans_per_cpu_second": accepted / cpu if cpu else 0.0,
                "spans_per_wall_second": accepted / wall,
                "rss_mib": rss_kib(pid) / 1024,
            }

        runs = interleaved({"base+lgtm": run}, reps, "collector throughput")
    m = medians(runs)["base+lgtm"]
    lossless = all(r["delivered"] >= r["sent"] and r["refused"] == 0 for r in runs["base+lgtm"])
    result = {"spans_per_repetition": spans, "repetitions": reps, "medians": m, "runs": runs["base+lgtm"],
              "no_loss": lossless, "smoke": args.smoke}  # fmt: skip

    def plot(ax: Any) -> None:
        ax.bar(range(len(runs["base+lgtm"])), [r["spans_per_cpu_second"] for r in runs["base+lgtm"]])
        ax.set_xlabel("repetition")
        ax.set_ylabel("spans per collector CPU second")

    save("collector_throughput", result, plot, args.out)
    print(f"collector (base+lgtm): {m['spans_per_cpu_second']:.0f} spans per CPU second (per core), "
          f"{m['spans_per_wall_second']:.0f} spans/s wall with the sender on the same 2 cores, "
          f"RSS {m['rss_mib']:.0f} MiB, no loss: {lossless}")  # fmt: skip
    return result


if __name__ == "__main__":
    main()
