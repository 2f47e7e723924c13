"""Drive an ASGI app directly with raw header bytes, as a server hands them over."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI

import otel_kit


def ping_app() -> Any:
    """An instrumented FastAPI app with ``GET /ping`` that logs one line and returns its correlation id."""
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str | None]:
        logging.getLogger("app").info("ping handled")
        return {"correlation_id": otel_kit.get_correlation_id()}

    return otel_kit.instrument_fastapi(app)


def call(app: Any, headers: list[tuple[bytes, bytes]], path: str = "/ping") -> tuple[int, dict[bytes, bytes]]:
    """Send one GET through the ASGI app; return status and response headers."""
    status, response_headers, _ = request(app, headers, path)
    return status, response_headers


def request(app: Any, headers: list[tuple[bytes, bytes]], path: str = "/ping") -> tuple[int, dict[bytes, bytes], bytes]:
    """Send one GET through the ASGI app, the header lines as given (repeats included); return status, response
    headers and body."""
    sent: list[dict[str, Any]] = []
    path, _, query = path.partition("?")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body
