"""Faults: the collector is killed with SIGKILL and restarted mid-stream while Tempo is down.

Nothing the service sent may be lost (duplicates are allowed): spans acknowledged by the collector sit in its
file_storage queue across the crash, and spans sent while the collector is gone are retried by the SDK.
The traffic is bounded: a fixed number of spans before the crash, while it is down, and during the outage, which
lasts until the restarted collector has retried Tempo twice.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry import trace

from demo_services.stack.servers import Collector, OtlpReceiver, free_port, wait_until
from otel_kit import testing

pytestmark = pytest.mark.e2e


def _retries(collector: Collector) -> int:
    """How often the running collector process has logged a failed export that it will retry."""
    return collector.output().count("Will retry the request after interval")


def test_nothing_is_lost_across_a_collector_crash_and_a_backend_outage(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tempo_port = free_port()  # Tempo is down: nothing listens here until the outage ends
    with OtlpReceiver() as loki:
        env = {
            "TEMPO_OTLP_ENDPOINT": f"127.0.0.1:{tempo_port}",
            "LOKI_OTLP_ENDPOINT": f"http://127.0.0.1:{loki.http_port}/otlp",
            "MIMIR_REMOTE_WRITE_URL": f"http://127.0.0.1:{free_port()}/api/v1/push",
        }
        with Collector(["lgtm.yaml"], env, storage=tmp_path / "queue") as collector:
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "60")  # the SDK keeps retrying across the restart
            sent: list[str] = []
            with testing.capture("faulty", traces_exporter="otlp", shutdown_timeout_ms=1000) as tel:
                tracer = trace.get_tracer("load")

                def send(phase: str, count: int) -> None:
                    for n in range(count):
                        name = f"{phase}-{n}"
                        with tracer.start_as_current_span(name):
                            sent.append(name)

                send("before-crash", 100)
                assert tel.handle.force_flush(10_000)  # acknowledged by the collector, queued on its disk
                collector.kill()
                send("while-down", 100)  # the application does not block on the dead collector
                collector.restart()
                assert tel.handle.force_flush(60_000)  # the SDK's retries reach the restarted collector
                send("outage", 100)  # traffic goes on while Tempo is still down
                assert tel.handle.force_flush(10_000)
                # the restarted collector holds every span and keeps retrying Tempo: wait for it to have retried
                wait_until(lambda: _retries(collector) >= 2, 60, "the restarted collector to retry Tempo twice")
                with OtlpReceiver(grpc_port=tempo_port) as tempo:
                    wanted = set(sent)
                    wait_until(lambda: wanted <= {s["name"] for _, s in tempo.spans()}, 60, "every span at Tempo")
                    received = [s["name"] for _, s in tempo.spans()]
    assert len(sent) >= 300
    assert set(received) == set(sent)
    print(f"sent {len(sent)} spans, Tempo received {len(received)} ({len(received) - len(set(received))} duplicates)")
