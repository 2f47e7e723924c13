"""Integrations: one ``instrument_<lib>()`` per library, each importing its dependency only when called.

Clients (requests, httpx, pika, aio-pika, botocore, psycopg) are instrumented by ``init()`` when their library is
installed, unless named in the standard ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``. Servers need the application
object: call ``instrument_fastapi(app)``, ``instrument_flask(app)``, or wrap any ASGI/WSGI app with
``instrument_asgi``/``instrument_wsgi``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, TypeVar

from otel_kit._internal.serverlogs import drop_server_duplicates
from otel_kit.integrations.wsgi import CorrelationWSGIMiddleware

__all__ = [
    "MissingDependencyError",
    "instrument_aio_pika",
    "instrument_asgi",
    "instrument_botocore",
    "instrument_fastapi",
    "instrument_flask",
    "instrument_httpx",
    "instrument_pika",
    "instrument_psycopg",
    "instrument_requests",
    "instrument_wsgi",
]

_log = logging.getLogger("otel_kit.integrations")
A = TypeVar("A")


class MissingDependencyError(ImportError):
    """An integration was asked for but its packages are not installed; the message says what to install."""


def install_hint(extra: str, module: str) -> str:
    """What to install for something that needs ``module``, which comes with ``extra``."""
    return f"this needs {module}, which comes with the {extra} extra: pip install 'otel-kit[{extra}]'"


def _require(module: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(install_hint(extra, module))


def _providers() -> dict[str, Any]:
    from otel_kit._internal.running import current_handle

    handle = current_handle()
    if handle is None:
        return {}
    return {"tracer_provider": handle.tracer_provider, "meter_provider": handle.meter_provider}


def _remember(instrumentor: Any) -> None:
    from otel_kit._internal.running import current_handle

    handle = current_handle()
    if handle is not None:
        handle.instrumented.append(instrumentor)


# --- servers ---------------------------------------------------------------------------------------------------


def instrument_fastapi(app: A, *, excluded_paths: Iterable[str] = ()) -> A:
    """Trace and measure a FastAPI (or Starlette) app and give each request a correlation id; returns ``app``.

    Uses the toolkit's lean ASGI middleware (``integrations.asgi``), outermost, so error responses are traced and
    carry the id too. ``excluded_paths``: path prefixes served without a span, such as ``/health``. FastAPI's own
    telemetry (FastAPI 0.16x traces itself once a global provider exists: a server span plus spans for
    dependencies, the endpoint and serialisation, about 150 us a request) is switched off for this app so each
    request is traced once.
    """
    from otel_kit.integrations.asgi import OtelKitASGIMiddleware

    if getattr(app, "_otel_kit_instrumented", False):
        return app
    native = getattr(app, "_telemetry", None)
    if isinstance(native, dict):
        native.update(tracing=False, metrics=False, logs=False, operation_spans=False)
    inner = app.build_middleware_stack  # type: ignore[attr-defined]

    def build_middleware_stack() -> Any:
        return OtelKitASGIMiddleware(inner(), excluded_paths)

    app.build_middleware_stack = build_middleware_stack  # type: ignore[attr-defined]
    app.middleware_stack = None  # type: ignore[attr-defined]  # rebuilt on first request
    app._otel_kit_instrumented = True  # type: ignore[attr-defined]
    return app


def instrument_flask(app: A, **kwargs: Any) -> A:
    """Trace and measure a Flask app (contrib instrumentation), give each request a correlation id, and log a
    route's unhandled exception once (the app logger's own record of it is dropped)."""
    _require("opentelemetry.instrumentation.flask", "flask")
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    if getattr(app, "_otel_kit_instrumented", False):
        return app
    FlaskInstrumentor.instrument_app(app, **{**_providers(), **kwargs})  # type: ignore[no-untyped-call]  # untyped upstream
    app.wsgi_app = CorrelationWSGIMiddleware(app.wsgi_app)  # type: ignore[attr-defined]
    # Flask logs a route's exception ("Exception on /path [GET]") while the request's span is open; the span
    # records it as it ends, and the toolkit logs it then, once, with its stack
    drop_server_duplicates(app.logger)  # type: ignore[attr-defined]
    app._otel_kit_instrumented = True  # type: ignore[attr-defined]
    return app


def instrument_asgi(app: Any, *, excluded_paths: Iterable[str] = ()) -> Any:
    """Wrap any ASGI app: a server span, the request duration histogram and the correlation id per request."""
    from otel_kit.integrations.asgi import OtelKitASGIMiddleware

    return OtelKitASGIMiddleware(app, excluded_paths)


def instrument_wsgi(app: Any) -> Any:
    """Wrap any WSGI app: server spans and metrics (contrib ``OpenTelemetryMiddleware``) plus correlation ids."""
    _require("opentelemetry.instrumentation.wsgi", "flask")
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

    return CorrelationWSGIMiddleware(OpenTelemetryMiddleware(app, **_providers()))


# --- clients ---------------------------------------------------------------------------------------------------


def _contrib(module: str, cls: str, extra: str) -> Any:
    _require(module, extra)
    instrumentor = getattr(importlib.import_module(module), cls)()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(**_providers())
        _remember(instrumentor)
    return instrumentor


def instrument_requests() -> Any:
    """Client spans, metrics and context headers (trace, baggage, X-Ray, correlation id) for ``requests``."""
    return _contrib("opentelemetry.instrumentation.requests", "RequestsInstrumentor", "requests")


def instrument_httpx() -> Any:
    """Client spans, metrics and context headers for ``httpx`` (sync and async clients)."""
    return _contrib("opentelemetry.instrumentation.httpx", "HTTPXClientInstrumentor", "httpx")


def instrument_botocore() -> Any:
    """Client spans for AWS calls through botocore/boto3, with the X-Ray header on each request."""
    return _contrib("opentelemetry.instrumentation.botocore", "BotocoreInstrumentor", "aws")


def instrument_psycopg() -> Any:
    """Client spans for PostgreSQL through psycopg 3 (``db.system.name``, ``db.namespace``, the statement text with
    its placeholders, never the bound values)."""
    return _contrib("opentelemetry.instrumentation.psycopg", "PsycopgInstrumentor", "postgres")


def instrument_pika() -> Any:
    """Producer and consumer spans, with context in message headers, for pika's ``BlockingChannel``."""
    _require("pika", "pika")
    from otel_kit.integrations.rabbitmq import PikaInstrumentation

    instrumentation = PikaInstrumentation().instrument()
    _remember(instrumentation)
    return instrumentation


def instrument_aio_pika() -> Any:
    """Producer and consumer spans, with context in message headers, for aio-pika."""
    _require("aio_pika", "aio-pika")
    from otel_kit.integrations.rabbitmq import AioPikaInstrumentation

    instrumentation = AioPikaInstrumentation().instrument()
    _remember(instrumentation)
    return instrumentation


# name in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS -> (module that must be importable, instrument function)
_AUTO = {
    "requests": ("requests", instrument_requests),
    "httpx": ("httpx", instrument_httpx),
    "botocore": ("botocore", instrument_botocore),
    "pika": ("pika", instrument_pika),
    "aio-pika": ("aio_pika", instrument_aio_pika),
    "psycopg": ("psycopg", instrument_psycopg),
}


def _auto_instrument() -> None:
    """Arm an instrumentation for every installed client library not disabled: at once for a library the application
    has already imported, else the moment it imports it (wrapt's post-import hook). So ``init()`` imports no client
    library and no instrumentation the application does not use, which a cold start pays for."""
    import wrapt

    from otel_kit._internal.running import current_handle

    disabled = {
        n.strip().lower().replace("_", "-")
        for n in os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")
        if n.strip()
    }
    handle = current_handle()
    for name, (module, instrument) in _AUTO.items():
        if name in disabled or importlib.util.find_spec(module) is None:
            continue
        wrapt.register_post_import_hook(partial(_arm, name, instrument, handle), module)


def _arm(name: str, instrument: Callable[[], Any], armed_by: Any, _module: object) -> None:
    """Instrument ``name`` for the ``init()`` that asked, if it still runs (a shutdown before the import, or a
    later ``init()`` with hooks of its own, leaves it alone); a failure is logged and skipped."""
    from otel_kit._internal.running import current_handle

    if armed_by is None or current_handle() is not armed_by:
        return
    try:
        instrument()
    except MissingDependencyError as err:
        _log.info("not instrumenting %s: %s", name, err)
    except Exception:
        _log.warning("could not instrument %s; continuing without it", name, exc_info=True)
