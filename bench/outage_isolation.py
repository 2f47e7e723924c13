"""Benchmark 3: the service under load while its collector is unreachable.

    python -m bench.outage_isolation [--seconds 12] [--repetitions 5] [--smoke]

The otel_kit service runs under wrk load (``/work``); segments with the collector healthy alternate with segments
where it is frozen (SIGSTOP: connections hang, the worst kind of outage), ``--repetitions`` of each, so the full run
keeps the collector away for 60 s in all. Reports the p99 latency ratio outage / healthy (goal <= 1.05), application
errors (goal 0), resident memory growth (goal: it levels off once the queues are full), and checks that the drops
the service reports equal what it sent minus what the collector received, but for one kind of span: a batch whose
export timed out while the collector was frozen sat in the collector's socket, and the collector may take it when it
thaws. Those spans are counted as failed and, by the service, as timed out (``otel_kit.export.timed_out``): the
check is that the spans counted both ways are no more than those. After each outage the next segment waits until the
service's backlog is out, so no healthy segment measures the recovery; how long that took is reported.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.harness import arguments, interleaved, medians, paired, save, spread
from bench.load import rss_kib, service, wrk
from demo_services.stack.servers import Collector, free_port, wait_until

HERE = Path(__file__).resolve().parent
# RSS moves by this much without any leak (allocator arenas, the interpreter's own caches)
_RSS_NOISE_KIB = 4096


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def _sum(text: str, metric: str, label_filter: str = "") -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(metric) and label_filter in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = arguments(__doc__, argv, seconds=(float, 12.0, "length of one healthy or outage segment"))
    seconds, reps = (1.0, 1) if args.smoke else (args.seconds, max(args.repetitions, 5))

    with ExitStack() as stack:
        collector = stack.enter_context(Collector([HERE / "collector-sink.yaml"]))
        metrics_port = free_port()
        env = {
            "OTEL_SERVICE_NAME": "bench-service",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            "OTEL_METRICS_EXPORTER": "otlp,prometheus",
            "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
            "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port),
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2",
        }
        url, proc = stack.enter_context(service("kit", env))
        pid = proc.proc.pid
        wrk(url + "/work", 1)  # warm up
        rss_start = rss_kib(pid)
        collector_pid = collector.pid()
        rss_after_outage: list[int] = []  # the service's RSS at the end of each outage segment
        recovery_s: list[float] = []  # from the collector's thaw until the service's backlog is received or dropped
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        collector_url = f"http://127.0.0.1:{collector.metrics_port}/metrics"

        def accounted() -> tuple[float, float, float, float]:
            """Spans sent, received by the collector, reported dropped, and of those, in exports that timed out."""
            app = _scrape(metrics_url)
            sent = _sum(app, "http_server_request_duration_seconds_count")
            dropped = _sum(app, "otel_kit_queue_dropped_total", 'signal="traces"')
            dropped += _sum(app, "otel_kit_export_failed_total", 'signal="traces"')
            timed_out = _sum(app, "otel_kit_export_timed_out_total", 'signal="traces"')
            received = _sum(_scrape(collector_url), "otelcol_receiver_accepted_spans")
            return sent, received, dropped, timed_out

        def settled() -> None:
            # every request's span received by the collector or reported dropped; a batch whose export timed out
            # while the collector was frozen may still be accepted when it thaws (counted both ways): hence <=
            wait_until(lambda: (lambda s, r, d, _: s - r - d <= 0)(*accounted()), 90, "every span received or dropped")

        def healthy() -> dict[str, float]:
            return wrk(url + "/work", seconds)

        def outage() -> dict[str, float]:
            os.kill(collector_pid, signal.SIGSTOP)
            try:
                measured = wrk(url + "/work", seconds)
            finally:
                rss_after_outage.append(rss_kib(pid))
                os.kill(collector_pid, signal.SIGCONT)
            # the next segment starts once the backlog is out: a healthy segment must not measure the recovery
            thawed = time.monotonic()
            settled()
            recovery_s.append(round(time.monotonic() - thawed, 2))
            return measured

        runs = interleaved({"healthy": healthy, "outage": outage}, reps, "outage isolation")
        m = medians(runs)
        errors = sum(r["errors"] for rs in runs.values() for r in rs)
        settled()
        sent, received, dropped, timed_out = accounted()

    # an outage fills the span and log queues; from then on each new record pushes out the oldest, so memory bounded
    # by the queue sizes levels off: the later half of the outages does not raise the peak of the earlier half
    # (a leak would add about the same with every outage)
    split = len(rss_after_outage) - reps // 2
    earlier, later = rss_after_outage[:split], rss_after_outage[split:]
    growth = max(earlier) - rss_start
    later_growth = max(later, default=max(earlier)) - max(earlier)
    memory_bounded = later_growth <= _RSS_NOISE_KIB
    p99 = paired(runs, "outage", "healthy", "p99_us")
    ratio = p99["median"]
    result = {
        "seconds": seconds,
        "repetitions": reps,
        "outage_seconds_total": seconds * reps,
        "medians": m,
        "p99_ratio_outage_over_healthy": ratio,
        "p99_ratio_per_repetition": p99["per_repetition"],
        "p50_ratio_outage_over_healthy": paired(runs, "outage", "healthy", "p50_us")["median"],
        "application_errors": errors,
        "recovery_seconds": recovery_s,
        "rss_kib": {"start": rss_start, "after_each_outage": rss_after_outage,
                    "growth_over_earlier_outages": growth, "growth_over_later_outages": later_growth},
        "spans": {"sent": sent, "received": received, "reported_dropped": dropped,
                  "counted_twice": received + dropped - sent, "reported_dropped_in_timed_out_exports": timed_out},
        "goals": {"p99 ratio <= 1.05": ratio <= 1.05, "zero application errors": errors == 0,
                  "dropped == sent - received, but for timed-out spans taken late":
                      0 <= received + dropped - sent <= timed_out,
                  "RSS levels off once the queues are full": memory_bounded},
        "smoke": args.smoke,
    }  # fmt: skip

    def plot(ax: Any) -> None:
        for name in ("healthy", "outage"):
            ax.plot([r["p99_us"] / 1000 for r in runs[name]], marker="o", label=f"{name} p99")
        ax.set_xlabel("repetition")
        ax.set_ylabel("ms")
        ax.legend()

    save("outage_isolation", result, plot, args.out)
    verdict = "met" if ratio <= 1.05 else "NOT met"
    print(f"p99 outage / healthy: {ratio:.2f} (goal <= 1.05: {verdict}; {spread(p99['per_repetition'])} repetitions)")
    print(f"application errors: {errors}; backlog out {statistics.median(recovery_s):.1f} s after the collector thawed")
    print(
        f"RSS: +{growth} KiB over the first {len(earlier)} outages, {later_growth:+} KiB over the last {len(later)} "
        f"(goal: levels off once the queues are full: {'met' if memory_bounded else 'NOT met'})"
    )
    accounted_for = 0 <= received + dropped - sent <= timed_out
    print(
        f"spans sent {sent:.0f}, received {received:.0f}, reported dropped {dropped:.0f} ({timed_out:.0f} of them in "
        f"exports that timed out, {received + dropped - sent:.0f} of which the collector took late; goal: every span "
        f"received or reported dropped, both only when its export timed out: {'met' if accounted_for else 'NOT met'})"
    )
    return result


if __name__ == "__main__":
    main()
