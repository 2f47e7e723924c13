"""otel_kit: OpenTelemetry traces, metrics and JSON logs joined by one correlation id.

Two lines in a service::

    import otel_kit
    otel_kit.init("orders")

then ``otel_kit.instrument_fastapi(app)`` or ``otel_kit.instrument_flask(app)`` for the server. HTTP clients,
RabbitMQ and AWS calls are instrumented by ``init()`` when their libraries are installed.
"""

from otel_kit._internal.config import ConfigProblem, Settings
from otel_kit._internal.correlation import (
    correlation_scope,
    get_correlation_id,
    new_correlation_id,
)
from otel_kit._internal.decorators import traced
from otel_kit._internal.lifecycle import Handle, current_handle, init, shutdown
from otel_kit.integrations import (
    MissingDependencyError,
    instrument_aio_pika,
    instrument_asgi,
    instrument_botocore,
    instrument_fastapi,
    instrument_flask,
    instrument_httpx,
    instrument_pika,
    instrument_psycopg,
    instrument_requests,
    instrument_wsgi,
)
from otel_kit.integrations.aws_lambda import lambda_handler

__all__ = [
    "ConfigProblem",
    "Handle",
    "MissingDependencyError",
    "Settings",
    "correlation_scope",
    "current_handle",
    "get_correlation_id",
    "init",
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
    "lambda_handler",
    "new_correlation_id",
    "shutdown",
    "traced",
]
