"""``init()`` and ``shutdown()``: the one front door. Everything here is wiring; each concern has its module."""

from __future__ import annotations

import atexit
import logging
import multiprocessing.util
import os
import threading
from collections.abc import Sequence
from typing import IO, Any

from opentelemetry import metrics as metrics_api
from opentelemetry import propagate
from opentelemetry import trace as trace_api
from opentelemetry._logs import get_logger_provider, set_logger_provider
from opentelemetry.sdk._logs import LogRecordProcessor
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.trace import SpanProcessor

from otel_kit._internal import logs, selfmetrics
from otel_kit._internal.config import (
    forget_set_aside,
    load_settings,
    set_aside_bad_sdk_values,
)
from otel_kit._internal.metrics import build_meter_provider
from otel_kit._internal.propagation import build_propagator, install_log_guards
from otel_kit._internal.redaction import default_scrubber
from otel_kit._internal.resource import build_resource
from otel_kit._internal.running import RUNNING, Handle, current_handle
from otel_kit._internal.tracing import build_tracer_provider

__all__ = ["Handle", "current_handle", "init", "shutdown"]

_log = logging.getLogger("otel_kit")
_atexit_registered = False
_fork_hook_registered = False

# Defaults the toolkit sets for the SDK and the contrib instrumentations (a value already set wins):
_SDK_DEFAULTS = {
    # stable HTTP semantic conventions: http.server.request.duration in seconds, http.request.method, ...
    "OTEL_SEMCONV_STABILITY_OPT_IN": "http",
    # no attribute value longer than 4 KiB (the SDK's default is unlimited): a dumped body cannot bloat a span
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "4096",
}


def init(
    service_name: str | None = None,
    *,
    service_version: str | None = None,
    environment: str | None = None,
    span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
    log_processors: Sequence[LogRecordProcessor] = (),
    log_stream: IO[str] | None = None,
    **overrides: Any,
) -> Handle:
    """Set up traces, metrics and JSON logs for this process; safe to call more than once.

    Arguments fall back to variables: ``service_name`` to ``OTEL_SERVICE_NAME``, ``service_version`` to
    ``OTEL_KIT_SERVICE_VERSION``, ``environment`` to ``OTEL_KIT_ENVIRONMENT``; ``overrides`` are ``Settings``
    fields (``traces_exporter="none"``, ``sampler_arg=0.1``, ...) and win over their variables.
    ``span_processors``, ``metric_readers`` and ``log_processors`` are added beside the configured exporters
    (``otel_kit.testing`` uses them). JSON lines go to ``log_stream`` (default: standard output).

    Never raises: a bad setting is logged once with the variable, its value and what is allowed, and its default
    is used; a failure while wiring leaves the application running without telemetry.
    """
    global _atexit_registered
    with RUNNING.lock:
        if RUNNING.handle is not None and not RUNNING.handle.closed:
            return RUNNING.handle
        requested = dict(overrides, service_name=service_name, service_version=service_version)
        requested["environment"] = environment
        try:
            RUNNING.handle = _build(requested, span_processors, metric_readers, log_processors, log_stream)
            if not RUNNING.handle.settings.disabled:
                from otel_kit.integrations import _auto_instrument

                _auto_instrument()
        except Exception:
            _log.exception("otel_kit.init failed; the application continues without telemetry")
            settings, problems = load_settings(requested)
            RUNNING.handle = Handle(settings=settings, problems=problems)
        _register_fork_hook()
        if not _atexit_registered:
            # the providers are built with shutdown_on_exit=False: this hook alone stops them, within the bound
            atexit.register(shutdown)
            _flush_at_multiprocessing_exit()
            multiprocessing.util.register_after_fork(shutdown, lambda _: _flush_at_multiprocessing_exit())
            _install_sigterm_flush()
            _atexit_registered = True
        return RUNNING.handle


def _build(
    requested: dict[str, Any],
    span_processors: Sequence[SpanProcessor],
    metric_readers: Sequence[MetricReader],
    log_processors: Sequence[LogRecordProcessor],
    log_stream: IO[str] | None,
) -> Handle:
    settings, problems = load_settings(requested)  # with the SDK values set aside as otel_kit was imported
    forget_set_aside()  # logged below, by this init()
    set_aside_bad_sdk_values()  # the SDK reads them as the providers are built: its defaults stand in
    for name, value in _SDK_DEFAULTS.items():
        os.environ.setdefault(name, value)
    resource = build_resource(settings)
    scrubber = default_scrubber(
        settings.scrub, settings.scrub_safe_keys, settings.scrub_extra_patterns, settings.scrub_emails
    )
    service = str(resource.attributes.get("service.name", "unknown_service"))
    handle = Handle(settings=settings, problems=problems, service_name=service)

    taken: list[str] = []
    if not settings.disabled:
        handle.meter_provider, handle.prometheus = build_meter_provider(settings, resource, metric_readers, problems)
        metrics_api.set_meter_provider(handle.meter_provider)
        selfmetrics.register(handle.meter_provider.get_meter("otel_kit"))
        handle.tracer_provider = build_tracer_provider(
            settings, resource, handle.meter_provider, span_processors, scrubber
        )
        trace_api.set_tracer_provider(handle.tracer_provider)
        if settings.logs_exporter or log_processors:
            handle.logger_provider = logs.build_logger_provider(
                settings, resource, handle.meter_provider, log_processors
            )
            set_logger_provider(handle.logger_provider)
        taken = _providers_set_before(handle)
        propagate.set_global_textmap(build_propagator())
        install_log_guards()
        selfmetrics.count_queue_drops()

    handle.log_handlers = logs.install_handlers(settings, service, handle.logger_provider, log_stream, scrubber)
    for problem in problems:
        _log.warning(problem.message(), extra={"variable": problem.variable})
    if taken:
        several = len(taken) > 1
        refused = f"{', '.join(taken[:-1])} and {taken[-1]} providers were" if several else f"{taken[0]} provider was"
        _log.warning(
            "OpenTelemetry's global %s set before this init() (by an init() since shut down, or by other code "
            "such as opentelemetry-instrument) and a process can set each only once: what the OpenTelemetry API "
            "records goes there, not to this init()'s exporters; restart the process to change it (in tests: "
            "otel_kit.testing.reset())",
            refused,
        )
    if problems or taken:
        handle.flush_log_lines()  # a setting's warning is on stdout before the service goes on
    return handle


def _providers_set_before(handle: Handle) -> list[str]:
    """Which of ``handle``'s providers OpenTelemetry refused as the global one: "tracer", "meter", "logger"."""
    return [
        name
        for name, global_provider, ours in (
            ("tracer", trace_api.get_tracer_provider(), handle.tracer_provider),
            ("meter", metrics_api.get_meter_provider(), handle.meter_provider),
            ("logger", get_logger_provider(), handle.logger_provider),
        )
        if ours is not None and global_provider is not ours
    ]


def _flush_at_multiprocessing_exit() -> None:
    """A forked ``multiprocessing`` child (a ``Pool`` worker) ends with ``os._exit``, skipping ``atexit``, and starts
    with the parent's exit finalizers cleared; this finalizer runs at its exit (registered again in each child)."""
    multiprocessing.util.Finalize(None, shutdown, exitpriority=0)


def _register_fork_hook() -> None:
    """Make every forked child (gunicorn ``--preload``, ``multiprocessing`` with fork) a telemetry source of its own.

    Registered after the providers were built, so it runs after the SDK's own fork hooks.
    """
    global _fork_hook_registered
    if not _fork_hook_registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_reinit_after_fork)
        _fork_hook_registered = True


def _reinit_after_fork() -> None:
    RUNNING.lock = threading.RLock()  # another thread of the parent may have held it at the fork
    handle = RUNNING.handle
    if handle is None or handle.closed or handle.pid == os.getpid():
        return
    try:
        handle.after_fork()
    except Exception:
        _log.exception("otel_kit could not adapt to the fork; this worker's telemetry may carry the parent's identity")


def _install_sigterm_flush() -> None:
    """On SIGTERM, flush (bounded by ``OTEL_KIT_SHUTDOWN_TIMEOUT_MS``) before the process ends.

    Only when SIGTERM still has its default action (which would end the process without running ``atexit``) and
    ``init()`` runs in the main thread; a server that handles SIGTERM itself (uvicorn, gunicorn) exits normally and
    ``atexit`` flushes. After the flush the default action runs, so the exit status is still "killed by SIGTERM".
    """
    import signal

    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def flush_then_terminate(signum: int, _frame: object) -> None:
        shutdown()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, flush_then_terminate)


def shutdown(timeout_ms: int | None = None) -> bool:
    """Flush and stop the running ``init()`` within a bounded time (registered at exit). True when complete."""
    with RUNNING.lock:
        handle = RUNNING.handle
    if handle is None:
        return True
    return handle.shutdown(timeout_ms)
