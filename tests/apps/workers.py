"""The same small service as a WSGI app (for gunicorn) and an ASGI app (for uvicorn), for the multi-worker tests.

``otel_kit.init()`` runs at import, as most services do: under ``gunicorn --preload`` that is in the parent,
before the workers are forked; under ``uvicorn --workers`` each worker process imports the module itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time

from fastapi import FastAPI
from flask import Flask, jsonify

import otel_kit

otel_kit.init()
log = logging.getLogger("workers")


def _answer(seen_at_start: str | None) -> dict[str, object]:
    seen_at_end = otel_kit.get_correlation_id()
    log.info("handled", extra={"seen_at_start": seen_at_start})
    return {"correlation_id": seen_at_end, "seen_at_start": seen_at_start, "pid": os.getpid()}


flask_app = otel_kit.instrument_flask(Flask("workers"))


@flask_app.get("/work")
def work_wsgi() -> object:
    start = otel_kit.get_correlation_id()
    time.sleep(random.uniform(0.002, 0.01))  # requests overlap across the workers' threads
    return jsonify(_answer(start))


fastapi_app = otel_kit.instrument_fastapi(FastAPI())


@fastapi_app.get("/work")
async def work_asgi() -> dict[str, object]:
    start = otel_kit.get_correlation_id()
    await asyncio.sleep(random.uniform(0.002, 0.01))  # other tasks of this worker run meanwhile
    return _answer(start)
