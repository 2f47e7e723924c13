"""Under the real servers, started as users start them: every line on stdout is one JSON object, the servers' own
lines included, an unhandled error is logged once, with its stack and its trace, and a header sent in several
lines is read whole (uvicorn hands them to the ASGI middleware one by one; gunicorn joins them for WSGI)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from demo_services.stack.servers import free_port, port_open, wait_until

pytestmark = pytest.mark.e2e

FASTAPI_APP = """
import otel_kit
from fastapi import FastAPI

otel_kit.init("orders", traces_exporter="none", metrics_exporter="none", logs_exporter="none")
app = otel_kit.instrument_fastapi(FastAPI())


@app.get("/orders/{n}")
async def get_order(n: int):
    return {"n": n}


@app.get("/boom")
async def boom():
    raise RuntimeError("ledger down")


@app.get("/onward")
async def onward():
    from opentelemetry import propagate

    headers = {}
    propagate.inject(headers)
    return headers
"""

FLASK_APP = """
import otel_kit
from flask import Flask

otel_kit.init("inventory", traces_exporter="none", metrics_exporter="none", logs_exporter="none")
app = otel_kit.instrument_flask(Flask(__name__))


@app.get("/orders/<int:n>")
def get_order(n):
    app.logger.info("order looked up")
    return {"n": n}


@app.get("/boom")
def boom():
    raise RuntimeError("ledger down")


@app.get("/onward")
def onward():
    from opentelemetry import propagate

    headers = {}
    propagate.inject(headers)
    return headers
"""

TRACE_ID = "12345678901234567890123456789012"


def _onward(port: int) -> dict[str, str]:
    """What the app sends on when a request comes with ``tracestate`` in two header lines."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", "/onward")
        conn.putheader("traceparent", f"00-{TRACE_ID}-1234567890123456-01")
        conn.putheader("tracestate", "foo=1")
        conn.putheader("tracestate", "bar=2")
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 200
        onward: dict[str, str] = json.loads(response.read())
    finally:
        conn.close()
    return onward


def _serve(tmp_path: Path, source: str, argv: list[str], port: int) -> tuple[str, str]:
    """Start ``argv`` in ``tmp_path`` with the app module ``main``, send a good request and a failing one with
    correlation ids, check that a header sent in two lines is read whole, stop the server with SIGTERM; return its
    stdout and stderr."""
    (tmp_path / "main.py").write_text(textwrap.dedent(source))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OTEL_KIT_LOG_BACKGROUND": "true"}
    env.pop("OTEL_SERVICE_NAME", None)
    server = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        wait_until(lambda: port_open(port) or server.poll() is not None, 60, "the server to listen")
        assert server.poll() is None, server.communicate(timeout=10)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/orders/7", headers={"X-Correlation-ID": "ok-1"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        request = urllib.request.Request(f"http://127.0.0.1:{port}/boom", headers={"X-Correlation-ID": "err-1"})
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(request, timeout=10)
        assert failed.value.code == 500
        failed.value.close()
        onward = _onward(port)
        assert onward["traceparent"].split("-")[1] == TRACE_ID and onward["tracestate"] == "foo=1,bar=2"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        stdout, stderr = server.communicate(timeout=60)
    return stdout, stderr


def _check(stdout: str, stderr: str, access_logger: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in stdout.splitlines()]  # one JSON object a line, or this raises
    assert all(isinstance(line, dict) for line in lines)
    access = [line for line in lines if line["logger"] == access_logger]
    assert len(access) == 3
    assert all("GET /" in str(line["message"]) for line in access)
    assert len([line for line in access if "GET /onward" in str(line["message"])]) == 1
    errors = [line for line in lines if line["level"] == "ERROR"]
    assert len(errors) == 1, errors  # once: the toolkit's, with the trace
    (error,) = errors
    assert error["logger"] == "otel_kit.errors" and error["correlation_id"] == "err-1" and error["trace_id"]
    assert 'raise RuntimeError("ledger down")' in str(error["stack"])
    assert "ledger down" not in stderr  # no second traceback on stderr either
    assert not any("color_message" in line for line in lines)
    return lines


def test_uvicorn_access_and_error_lines_are_json_and_an_error_is_logged_once(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "main:app", "--host", "127.0.0.1", "--port", str(port)]
    stdout, stderr = _serve(tmp_path, FASTAPI_APP, argv, port)
    lines = _check(stdout, stderr, "uvicorn.access")
    messages = [line["message"] for line in lines if line["logger"] == "uvicorn.error"]
    assert "Application startup complete." in messages and "Application shutdown complete." in messages


def test_uvicorn_run_from_code_still_writes_json(tmp_path: Path) -> None:
    """``uvicorn.run()`` configures its loggers after the app module is imported; the app's lifespan takes them
    over again."""
    port = free_port()
    source = FASTAPI_APP + f"\n\nif __name__ == '__main__':\n    import uvicorn\n    uvicorn.run(app, port={port})\n"
    stdout, stderr = _serve(tmp_path, source, [sys.executable, "main.py"], port)
    _check(stdout, stderr, "uvicorn.access")


def test_gunicorn_and_flask_lines_are_json_and_an_error_is_logged_once(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "-w", "2", "--access-logfile", "-"]
    stdout, stderr = _serve(tmp_path, FLASK_APP, [*argv, "main:app"], port)
    lines = _check(stdout, stderr, "gunicorn.access")
    looked_up = [line for line in lines if line["message"] == "order looked up"]
    assert len(looked_up) == 1 and looked_up[0]["correlation_id"] == "ok-1"
    assert "Exception on /boom" not in stdout + stderr
