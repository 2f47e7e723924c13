"""A Flask service traced by aws-xray-sdk (otel_kit's X-Ray SDK mode, no OpenTelemetry tracing) that calls a
downstream service; for tests/test_xray_sdk.py. ``python -m tests.apps.xray_app PORT``."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import requests
from flask import Flask

from otel_kit.xray_sdk import init_xray_sdk, xray_flask

init_xray_sdk("pricing", metrics_exporter="none", logs_exporter="none")
app = xray_flask(Flask("pricing"))
log = logging.getLogger("pricing")


@app.get("/price/<sku>")
def price(sku: str) -> Any:
    downstream = requests.get(f"{os.environ['DOWNSTREAM_URL']}/ping", timeout=5)
    log.info("price looked up", extra={"sku": sku})
    return {"sku": sku, "price": 42, "downstream": downstream.status_code}


if __name__ == "__main__":
    from werkzeug.serving import make_server

    make_server("127.0.0.1", int(sys.argv[1]), app, threaded=True).serve_forever()
