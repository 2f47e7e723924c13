"""Several worker processes: gunicorn forking after ``init()`` (``--preload``), and uvicorn's spawned workers.

Each worker must be a telemetry source of its own (its own ``service.instance.id`` and ``process.pid``, so their
cumulative metrics add up instead of overwriting each other), every request's span must be exported exactly once,
and no correlation id may cross from one concurrent request to another.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from demo_services.stack.servers import ManagedProcess, OtlpReceiver, free_port, port_open, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
REQUESTS = 240
CONCURRENCY = 8


def _server_argv(server: str, port: int) -> list[str]:
    if server == "gunicorn":
        return [sys.executable, "-m", "gunicorn", "--preload", "--workers", "2",
                "--bind", f"127.0.0.1:{port}", "tests.apps.workers:flask_app"]  # fmt: skip
    return [sys.executable, "-m", "uvicorn", "--workers", "2", "--host", "127.0.0.1", "--port", str(port),
            "tests.apps.workers:fastapi_app"]  # fmt: skip


def _drive(port: int) -> list[tuple[str, dict[str, Any]]]:
    """REQUESTS requests, CONCURRENCY at a time, each with its own correlation id; (sent id, answer) pairs."""

    def one(_: int) -> tuple[str, dict[str, Any]]:
        sent = f"req-{uuid.uuid4().hex[:16]}"
        # a new connection each time, so that either worker may accept it
        headers = {"X-Correlation-ID": sent, "Connection": "close"}
        response = requests.get(f"http://127.0.0.1:{port}/work", headers=headers, timeout=10)
        response.raise_for_status()
        return sent, response.json()

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        return list(pool.map(one, range(REQUESTS)))


def _request_counts(receiver: OtlpReceiver) -> dict[str, int]:
    """The last cumulative count of http.server.request.duration reported by each service instance."""
    latest: dict[str, tuple[int, int]] = {}
    for resource, metric in receiver.metrics():
        if metric["name"] != "http.server.request.duration":
            continue
        instance = resource["service.instance.id"]
        for point in metric["histogram"]["dataPoints"]:
            at, count = int(point["timeUnixNano"]), int(point["count"])
            if instance not in latest or at >= latest[instance][0]:
                latest[instance] = (at, latest.get(instance, (0, 0))[1] if at == latest.get(instance, (-1,))[0] else 0)
                latest[instance] = (at, latest[instance][1] + count)
    return {instance: count for instance, (_, count) in latest.items()}


@pytest.mark.parametrize("server", ["gunicorn", "uvicorn"])
def test_each_worker_reports_as_itself_and_every_request_once(otlp_receiver: OtlpReceiver, server: str) -> None:
    port = free_port()
    env = {
        "PYTHONPATH": str(ROOT),
        "OTEL_SERVICE_NAME": f"workers-{server}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_receiver.grpc_port}",
        "OTEL_METRIC_EXPORT_INTERVAL": "60000",
        "OTEL_BSP_SCHEDULE_DELAY": "30000",  # what arrives is what the shutdown flush sent
    }
    process = ManagedProcess(server, _server_argv(server, port), env)
    try:
        wait_until(lambda: process.check_alive() is None and port_open(port), 30, f"{server} to listen")
        answers = _drive(port)
    finally:
        process.stop(grace=20)
    assert process.proc.returncode in (0, -15), process.output_tail()

    # no context crossed between concurrent requests, and both workers served
    for sent, answer in answers:
        assert answer["seen_at_start"] == answer["correlation_id"] == sent
    worker_pids = {answer["pid"] for _, answer in answers}
    assert len(worker_pids) == 2, f"expected both workers to serve, got {Counter(a['pid'] for _, a in answers)}"

    # every request's server span exported exactly once, by the worker that served it, under its own identity
    wait_until(lambda: len(_server_spans(otlp_receiver)) >= REQUESTS, 20, "every server span")
    spans = _server_spans(otlp_receiver)
    assert sorted(cid for cid, _ in spans) == sorted(sent for sent, _ in answers)
    pid_of = {sent: answer["pid"] for sent, answer in answers}
    instance_of_pid: dict[int, str] = {}
    for cid, resource in spans:
        assert int(resource["process.pid"]) == pid_of[cid]
        assert (
            instance_of_pid.setdefault(int(resource["process.pid"]), resource["service.instance.id"])
            == resource["service.instance.id"]
        )
    assert len(set(instance_of_pid.values())) == 2, "each worker needs its own service.instance.id"

    # the request counts of the two instances add up to what was sent
    per_instance = _request_counts(otlp_receiver)
    assert set(instance_of_pid.values()) <= set(per_instance)
    assert sum(per_instance[i] for i in instance_of_pid.values()) == REQUESTS, per_instance
    print(f"{server}: {REQUESTS} requests over 2 workers {dict(Counter(pid_of.values()))}; {len(spans)} spans")


def _server_spans(receiver: OtlpReceiver) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for resource, span in receiver.spans():
        if span["kind"] in (2, "SPAN_KIND_SERVER"):
            attrs = {a["key"]: next(iter(a["value"].values())) for a in span.get("attributes", [])}
            found.append((attrs["correlation_id"], resource))
    return found


POOL_SCRIPT = """
import multiprocessing, os
import otel_kit
from opentelemetry import trace

def job(n):
    with trace.get_tracer("pool").start_as_current_span("job") as span:
        span.set_attribute("job.n", n)
    return os.getpid()

if __name__ == "__main__":
    otel_kit.init("pool-service")  # in the parent, before the pool forks
    with trace.get_tracer("pool").start_as_current_span("parent-work"):
        pass
    assert otel_kit.current_handle().force_flush()  # the parent's exporter now holds an open connection
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pids = set(pool.map(job, range(20), chunksize=1))
        pool.close()
        pool.join()
    print(sorted(pids))
"""


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_forked_pool_workers_flush_their_spans_when_they_exit(otlp_receiver: OtlpReceiver, protocol: str) -> None:
    """multiprocessing ends a forked worker with os._exit: no atexit; the toolkit's exit finalizer must flush. The
    workers must not use the connection the parent's exporter opened before the fork."""
    port = otlp_receiver.grpc_port if protocol == "grpc" else otlp_receiver.http_port
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_BSP_SCHEDULE_DELAY": "30000",  # nothing leaves before the flush at exit
        "OTEL_METRICS_EXPORTER": "none",
    }
    result = subprocess.run(
        [sys.executable, "-c", POOL_SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    worker_pids = set(json.loads(result.stdout.strip().splitlines()[-1]))
    jobs = [(resource, span) for resource, span in otlp_receiver.spans() if span["name"] == "job"]
    assert len(jobs) == 20
    assert {int(resource["process.pid"]) for resource, _ in jobs} == worker_pids


def test_forked_workers_say_that_the_prometheus_endpoint_stays_with_the_parent() -> None:
    """A pull endpoint serves one process; a forked worker says so instead of silently going unscraped."""
    port, metrics_port = free_port(), free_port()
    env = {"PYTHONPATH": str(ROOT), "OTEL_METRICS_EXPORTER": "prometheus", "OTEL_TRACES_EXPORTER": "none",
           "OTEL_LOGS_EXPORTER": "none", "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics_port)}  # fmt: skip
    process = ManagedProcess("gunicorn", _server_argv("gunicorn", port), env)
    try:
        wait_until(lambda: process.check_alive() is None and port_open(port), 30, "gunicorn to listen")
        wait_until(lambda: process.output_tail(200).count("serves no /metrics endpoint") == 2, 10, "both warnings")
    finally:
        process.stop(grace=20)
    assert f"port {metrics_port} stays with the parent process" in process.output_tail(200)
