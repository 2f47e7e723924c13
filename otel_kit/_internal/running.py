"""The running ``init()``: its ``Handle`` (what it set up, and how to flush and stop it) and the lock that guards it.

The lifecycle (``lifecycle.py``) sets the handle; the integrations and the testing helpers read it here, so none of
them imports the lifecycle, which imports them.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.resources import Resource

from otel_kit._internal import logs
from otel_kit._internal.config import ConfigProblem, Settings

if TYPE_CHECKING:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    from otel_kit._internal.metrics import PrometheusEndpoint

__all__ = ["RUNNING", "Handle", "current_handle"]

_log = logging.getLogger("otel_kit")


@dataclass
class Handle:
    """What ``init()`` set up. ``problems`` lists every rejected setting; ``shutdown()`` flushes and stops."""

    settings: Settings
    problems: list[ConfigProblem]
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    logger_provider: LoggerProvider | None = None
    prometheus: PrometheusEndpoint | None = None
    service_name: str = "unknown_service"
    instrumented: list[Any] = field(default_factory=list)
    closed: bool = False
    pid: int = field(default_factory=os.getpid)
    log_handlers: list[logging.Handler] = field(default_factory=list)
    _stopper: threading.Thread | None = field(default=None, repr=False)

    @property
    def prometheus_port(self) -> int | None:
        """The port ``/metrics`` is served on, or None when the Prometheus endpoint is off."""
        return self.prometheus.port if self.prometheus else None

    def force_flush(self, timeout_ms: int | None = None) -> bool:
        """Export everything buffered now; True when every signal finished within the time."""
        timeout = timeout_ms if timeout_ms is not None else self.settings.shutdown_timeout_ms
        done = True
        self.flush_log_lines()  # first: the queued lines go to stdout and to the logger provider flushed below
        for provider in (self.tracer_provider, self.logger_provider, self.meter_provider):
            if provider is not None:
                try:
                    done = bool(provider.force_flush(timeout)) and done
                except Exception:
                    _log.debug("force_flush failed", exc_info=True)
                    done = False
        return done

    def flush_log_lines(self) -> None:
        """Write and hand to the logger provider every log record the background writer still holds."""
        for handler in self.log_handlers:
            if isinstance(handler, logs.BackgroundLogHandler):
                handler.flush()

    def shutdown(self, timeout_ms: int | None = None) -> bool:
        """Flush and stop, returning within ``timeout_ms`` (default ``OTEL_KIT_SHUTDOWN_TIMEOUT_MS``) in all cases.

        Returns False when the time ran out; what was still buffered is then lost and a warning says so.
        """
        if self.closed:
            return True
        self.closed = True
        timeout = timeout_ms if timeout_ms is not None else self.settings.shutdown_timeout_ms
        worker = threading.Thread(target=self._stop, args=(timeout,), name="otel-kit-shutdown", daemon=True)
        self._stopper = worker
        worker.start()
        worker.join(timeout / 1000)
        if worker.is_alive():
            _log.warning("telemetry shutdown did not finish within %d ms; unsent telemetry was dropped", timeout)
            return False
        return True

    def wait_stopped(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a shutdown that overran its bound to end its exports in the background
        (each gives up after the exporter's timeout). True when nothing of this handle is still running."""
        if self._stopper is not None:
            self._stopper.join(timeout_s)
            return not self._stopper.is_alive()
        return True

    def _stop(self, timeout_ms: int) -> None:
        for instrumentor in reversed(self.instrumented):
            try:
                instrumentor.uninstrument()
            except Exception:
                _log.debug("uninstrument failed", exc_info=True)
        self.instrumented.clear()
        self.force_flush(timeout_ms)
        for provider in (self.tracer_provider, self.logger_provider):
            if provider is not None:
                provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown(timeout_millis=timeout_ms)
        if self.prometheus is not None:
            self.prometheus.close()
        # only this init's handlers: a late-finishing shutdown must not take off those of an init made since
        logs.remove_handlers(self.log_handlers)

    def after_fork(self) -> None:
        """In a forked child: become a process of its own, keeping the providers (and the instrumentations that
        hold them).

        The SDK's fork hooks (SDK 1.45) have already emptied the span and log queues, restarted the export threads
        and given the providers' resource a new ``service.instance.id`` (two workers under one instance would
        overwrite each other's cumulative series in Prometheus/Mimir). Here the ``process.pid`` the toolkit records
        follows, through the same provider hook the SDK uses, and the parent's ``/metrics`` socket is let go. (The
        OTLP exporters need nothing: a test exports over gRPC and HTTP from forked workers of a parent that had
        already exported.)
        """
        self.pid = os.getpid()
        own_pid = Resource({"process.pid": self.pid})
        for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
            if provider is not None:
                provider._update_resource(own_pid)  # SDK 1.45 fork hook, tested
        if self.prometheus is not None:
            port = self.prometheus.port
            self.prometheus.close_inherited()
            self.prometheus = None
            _log.warning(
                "this forked worker serves no /metrics endpoint: port %d stays with the parent process. With several "
                "worker processes export metrics by OTLP (each worker is its own service.instance.id, so the sums "
                "across workers are right)",
                port,
            )


class _Running:
    """The handle of the running ``init()`` and the lock that guards it, one per process (a forked child replaces
    the lock: another thread of the parent may have held it at the fork)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.handle: Handle | None = None


RUNNING = _Running()


def current_handle() -> Handle | None:
    """The handle of the running ``init()``, if any."""
    handle = RUNNING.handle
    return handle if handle is not None and not handle.closed else None
