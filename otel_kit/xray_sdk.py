"""X-Ray without a collector: aws-xray-sdk drives the tracing, otel_kit keeps the correlation id and the JSON logs.

For Lambda functions and services that already use the X-Ray SDK. ``init_xray_sdk("inventory")``:

- configures ``aws_xray_sdk``'s recorder: segments go over UDP to the daemon at ``AWS_XRAY_DAEMON_ADDRESS``
  (default ``127.0.0.1:2000``); sampling by local rules (``OTEL_KIT_XRAY_SAMPLING_RULES``, a JSON file in the
  X-Ray rules format; default: X-Ray's own default of the first request each second and 5 % of the rest); a missing
  context is ignored instead of raising (``context_missing=IGNORE_ERROR``);
- patches the installed clients (requests, httpx, botocore, psycopg) so each outgoing call is a subsegment and
  carries ``X-Amzn-Trace-Id``, and adds ``X-Correlation-ID`` to outgoing requests; otel_kit's own OpenTelemetry
  client instrumentation of those libraries stays off, so one request never carries two trace contexts;
- initialises otel_kit for logs and metrics (traces off), and makes each JSON log line carry the X-Ray segment's
  trace id (as ``trace_id`` and ``xray_trace_id``, the same format the OpenTelemetry path writes).

``xray_flask(app)`` then traces a Flask app: a segment per request (the SDK's middleware, which continues an
incoming ``X-Amzn-Trace-Id``, so a request from an OpenTelemetry service stays in its trace), the correlation id
taken from ``X-Correlation-ID`` (validated like everywhere in otel_kit) as the indexed annotation
``correlation_id``, and echoed in the response.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from typing import Any, TypeVar

__all__ = ["init_xray_sdk", "xray_flask"]

A = TypeVar("A")
_log = logging.getLogger("otel_kit.xray_sdk")
_CLIENTS = {"requests": "requests", "httpx": "httpx", "botocore": "botocore", "psycopg": "psycopg"}
_requests_patched = False
DEFAULT_RULES = {"version": 2, "default": {"fixed_target": 1, "rate": 0.05}, "rules": []}


def _rules() -> dict[str, Any]:
    path = os.environ.get("OTEL_KIT_XRAY_SAMPLING_RULES")
    if not path:
        return DEFAULT_RULES
    try:
        with open(path) as f:
            rules: dict[str, Any] = json.load(f)
        if not isinstance(rules.get("default"), dict):
            raise ValueError("no 'default' rule")
        return rules
    except (OSError, ValueError) as err:
        _log.warning("OTEL_KIT_XRAY_SAMPLING_RULES=%s is not usable (%s); X-Ray's default sampling is used", path, err)
        return DEFAULT_RULES


def _trace_ids() -> tuple[str, str] | None:
    """(trace id in X-Ray form, the current entity's id) of the X-Ray segment running here, if any."""
    from aws_xray_sdk.core import xray_recorder

    entity = xray_recorder.get_trace_entity()
    trace_id = getattr(entity, "trace_id", None)
    return (trace_id, str(entity.id)) if isinstance(trace_id, str) else None


def init_xray_sdk(service_name: str, **otel_kit_settings: Any) -> Any:
    """Set up aws-xray-sdk and otel_kit's logs for ``service_name``; returns the X-Ray recorder."""
    try:
        from aws_xray_sdk.core import patch, xray_recorder
        from aws_xray_sdk.core.sampling.local.sampler import LocalSampler
    except ModuleNotFoundError as err:
        from otel_kit.integrations import MissingDependencyError, install_hint

        raise MissingDependencyError(install_hint("xray", "aws-xray-sdk")) from err

    import otel_kit
    from otel_kit._internal import logs

    installed = [name for name, module in _CLIENTS.items() if importlib.util.find_spec(module)]
    disabled = {n.strip() for n in os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",") if n.strip()}
    os.environ["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = ",".join(sorted(disabled | set(installed)))
    xray_recorder.configure(
        service=service_name,
        daemon_address=os.environ.get("AWS_XRAY_DAEMON_ADDRESS", "127.0.0.1:2000"),
        context_missing="IGNORE_ERROR",
        sampler=LocalSampler(_rules()),
        plugins=(),
    )
    patch(installed)
    if "requests" in installed:
        _send_correlation_id_with_requests()
    logs.XRAY_SDK_IDS = _trace_ids
    otel_kit.init(service_name, **{"traces_exporter": "none", **otel_kit_settings})
    return xray_recorder


def _send_correlation_id_with_requests() -> None:
    import requests
    import wrapt

    from otel_kit._internal import correlation

    def with_correlation_id(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Any:
        cid = correlation.get_correlation_id()
        if cid:
            request = args[0] if args else kwargs.get("request")
            if request is not None and correlation.HEADER not in request.headers:
                request.headers[correlation.HEADER] = cid
        return wrapped(*args, **kwargs)

    global _requests_patched
    if not _requests_patched:
        wrapt.wrap_function_wrapper(requests.Session, "send", with_correlation_id)
        _requests_patched = True


def xray_flask(app: A) -> A:
    """Trace a Flask app with aws-xray-sdk and give each request a correlation id (annotated, logged, echoed)."""
    from aws_xray_sdk.core import xray_recorder
    from aws_xray_sdk.ext.flask.middleware import XRayMiddleware
    from flask import g, request

    from otel_kit._internal import correlation

    flask_app: Any = app
    XRayMiddleware(flask_app, xray_recorder)

    def adopt_correlation_id() -> None:
        cid = correlation.valid_correlation_id(request.headers.get(correlation.HEADER)) or \
            correlation.valid_correlation_id(request.headers.get(correlation.REQUEST_ID_HEADER)) or \
            correlation.new_correlation_id()  # fmt: skip
        g.otel_kit_correlation = correlation.correlation_scope(cid)
        g.otel_kit_correlation.__enter__()
        segment = xray_recorder.current_segment()
        if segment is not None:
            segment.put_annotation("correlation_id", cid)

    def echo_correlation_id(response: Any) -> Any:
        cid = correlation.get_correlation_id()
        if cid:
            response.headers[correlation.HEADER] = cid
        return response

    def leave_correlation_scope(_error: BaseException | None) -> None:
        scope = g.pop("otel_kit_correlation", None)
        if scope is not None:
            scope.__exit__(None, None, None)

    flask_app.before_request(adopt_correlation_id)
    flask_app.after_request(echo_correlation_id)
    flask_app.teardown_request(leave_correlation_scope)
    return app
