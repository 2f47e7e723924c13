"""When the application fails, or telemetry is switched off: the user still gets a correlated, logged error."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi import FastAPI
from flask import Flask
from opentelemetry.trace import SpanKind, StatusCode

import otel_kit
from otel_kit import testing
from tests.asgi import call


def test_fastapi_route_error_is_a_500_with_the_id_echoed_the_span_failed_and_logged_once(
    tel: testing.Capture,
) -> None:
    app = FastAPI()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("ledger unavailable")

    otel_kit.instrument_fastapi(app)
    with pytest.raises(RuntimeError):  # ServerErrorMiddleware answers 500, then re-raises to the server
        call(app, [(b"x-correlation-id", b"err-1")], path="/boom")
    server = next(s for s in tel.spans() if s.kind is SpanKind.SERVER)
    assert server.name == "GET /boom"
    assert server.status.status_code is StatusCode.ERROR
    assert server.attributes["http.response.status_code"] == 500
    assert server.attributes["error.type"] == "RuntimeError"
    assert server.attributes["correlation_id"] == "err-1"
    errors = [line for line in tel.log_lines() if line["level"] == "ERROR" and line["logger"] == "otel_kit.errors"]
    assert len(errors) == 1 and "ledger unavailable" in errors[0]["message"]
    assert errors[0]["correlation_id"] == "err-1"


def test_fastapi_excluded_path_gets_no_span_but_keeps_the_correlation_id(tel: testing.Capture) -> None:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str | None]:
        return {"cid": otel_kit.get_correlation_id()}

    otel_kit.instrument_fastapi(app, excluded_paths=["/health"])
    status, headers = call(app, [(b"x-correlation-id", b"probe-1")], path="/health")
    assert status == 200 and headers[b"x-correlation-id"] == b"probe-1"
    assert tel.spans() == []


def test_flask_route_error_is_a_500_with_the_id_echoed_and_the_span_failed(tel: testing.Capture) -> None:
    app = Flask("failing")

    @app.get("/boom")
    def boom() -> Any:
        raise ValueError("bad sku")

    otel_kit.instrument_flask(app)
    response = app.test_client().get("/boom", headers={"X-Correlation-ID": "err-2"})
    assert response.status_code == 500
    assert response.headers["X-Correlation-ID"] == "err-2"
    server = next(s for s in tel.spans() if s.kind is SpanKind.SERVER)
    assert server.status.status_code is StatusCode.ERROR
    assert server.attributes["correlation_id"] == "err-2"


def test_disabled_sdk_still_writes_json_logs_and_traced_code_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    with testing.capture("quiet") as tel:
        assert tel.handle.tracer_provider is None and tel.handle.meter_provider is None

        @otel_kit.traced
        def work() -> int:
            logging.getLogger("app").info("still logging")
            return 7

        with otel_kit.correlation_scope("off-1"):
            assert work() == 7
    line = next(line for line in tel.log_lines() if line["message"] == "still logging")
    assert line["correlation_id"] == "off-1" and line["service"] == "quiet"
    assert tel.spans() == []


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {},
        {"traceparent": b"\xff\xfe not utf-8", "X-Correlation-ID": "evil\nline"},
        {"traceparent": 12345, "baggage": ["not", "text"], "x-correlation-id": b"bytes-ok-1"},
        {"baggage": "k=" + "v" * 10_000, "X-Amzn-Trace-Id": "Root=garbage"},
    ],
)
def test_broken_message_headers_start_fresh_and_never_raise(tel: testing.Capture, headers: Any) -> None:
    from otel_kit.integrations import amqp

    with amqp.process_span(headers, exchange="orders", routing_key="order.placed") as span:
        cid = otel_kit.get_correlation_id()
    assert cid is not None and "\n" not in cid
    if headers and headers.get("x-correlation-id") == b"bytes-ok-1":
        assert cid == "bytes-ok-1"  # a valid id in bytes, as AMQP may deliver it, is kept
    consumer = tel.spans()[0]
    assert consumer.context.span_id == span.get_span_context().span_id
    assert consumer.parent is None and consumer.links == ()


def test_every_failed_span_says_why_in_its_status(tel: testing.Capture) -> None:
    """A 5xx answered without an exception used to end in error with no description: the demo report read
    ``payments: POST /charges: (no message)``. Each failed span names its exception or its status code."""
    from fastapi.responses import JSONResponse

    fast = FastAPI()

    @fast.post("/charges")
    async def charge() -> JSONResponse:
        return JSONResponse({"error": "provider down"}, status_code=503)

    @fast.get("/crash")
    async def crash() -> None:
        raise KeyError("sku-9")

    otel_kit.instrument_fastapi(fast)
    from tests.asgi import request

    async def post_scope_app(scope: Any, receive: Any, send: Any) -> None:
        await fast(dict(scope, method="POST", path="/charges", raw_path=b"/charges"), receive, send)

    assert request(post_scope_app, [], "/charges")[0] == 503
    with pytest.raises(KeyError):
        call(fast, [], "/crash")

    flask_app = Flask("described")

    @flask_app.get("/stock")
    def stock() -> Any:
        return {"error": "database busy"}, 503

    otel_kit.instrument_flask(flask_app)
    assert flask_app.test_client().get("/stock").status_code == 503

    described = {s.name: s.status.description for s in tel.spans() if s.status.status_code is StatusCode.ERROR}
    assert described == {
        "POST /charges": "503 Service Unavailable",
        "GET /crash": "KeyError: 'sku-9'",
        "GET /stock": "503 Service Unavailable",
    }
