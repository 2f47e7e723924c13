"""The service the request benchmarks load: ``/work`` spends 2 ms of CPU and logs a line, ``/trivial`` does nothing.

``bare_app`` has no telemetry (the zero-code agent variant runs this one under ``opentelemetry-instrument``);
``kit_app`` is the same app after ``otel_kit.init()`` and ``instrument_fastapi``.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from fastapi import FastAPI

log = logging.getLogger("bench.app")
WORK_SECONDS = 0.002


def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/work")
    async def work() -> dict[str, int]:
        deadline = time.perf_counter() + WORK_SECONDS
        n = 0
        while time.perf_counter() < deadline:
            n += 1
        log.info("work done")
        return {"n": n}

    @app.get("/trivial")
    async def trivial() -> dict[str, bool]:
        return {"ok": True}

    return app


def _bare() -> FastAPI:
    if os.environ.get("BENCH_VARIANT") != "agent":  # the agent configures logging itself
        logging.basicConfig(level=logging.INFO, stream=sys.stdout)
    return create_app()


def _kit() -> FastAPI:
    import otel_kit

    otel_kit.init("bench-service")
    return otel_kit.instrument_fastapi(create_app())


variant = os.environ.get("BENCH_VARIANT", "bare")
app = _kit() if variant == "kit" else _bare()
