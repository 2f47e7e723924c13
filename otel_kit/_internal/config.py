"""Settings: the standard ``OTEL_*`` variables, the toolkit's ``OTEL_KIT_*`` ones, and ``init()`` overrides.

Every option is declared once in ``OPTIONS`` (name, variable, parser, default). A bad value never stops the
application: it becomes a :class:`ConfigProblem` naming the variable, the value and what is allowed, and the
default is used instead. ``init()`` logs each problem once.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["OPTIONS", "ConfigProblem", "Settings", "load_settings"]


_USERINFO = re.compile(r"//[^/@\s]*@")


class _Invalid(ValueError):
    """Raised by a parser; its message says what is allowed."""


@dataclass(frozen=True)
class ConfigProblem:
    """One rejected setting: where it came from, what it was, what is allowed, what is used instead."""

    variable: str
    value: str
    allowed: str
    used: str

    def message(self) -> str:
        shown = _USERINFO.sub("//***@", self.value)  # never echo credentials embedded in a URL
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return f"{self.variable}={shown!r} is not valid: allowed {self.allowed}; using {self.used} instead"


# --- parsers: str -> value, raising _Invalid with the allowed values -------------------------------------------

_EXPORTERS_TRACES = ("otlp", "console", "none")
_EXPORTERS_METRICS = ("otlp", "prometheus", "emf", "console", "none")
_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
_PROTOCOLS = ("grpc", "http/protobuf")
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _choice(allowed: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in {a.lower() for a in allowed}:
            raise _Invalid("one of " + ", ".join(allowed))
        return value.upper() if allowed == _LEVELS else value

    return parse


def _exporter_list(allowed: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    def parse(raw: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(n.strip().lower() for n in raw.split(",") if n.strip()))
        if not names or any(n not in allowed for n in names):
            raise _Invalid("a comma-separated list of " + ", ".join(allowed))
        return () if "none" in names else names

    return parse


def _ratio(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise _Invalid("a number from 0 to 1")
    return value


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise _Invalid(f"an integer from {low} to {high}") from None
        if not low <= value <= high:
            raise _Invalid(f"an integer from {low} to {high}")
        return value

    return parse


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise _Invalid("true or false")


def _endpoint(raw: str) -> str:
    value = raw.strip()
    allowed = "an http:// or https:// URL with a host, e.g. http://localhost:4317"
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise _Invalid(allowed) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        raise _Invalid(allowed)
    if port == 0:
        raise _Invalid(allowed)
    return value


def _text_list(raw: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))


def _regex_list(raw: str) -> tuple[str, ...]:
    patterns = _text_list(raw)
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error:
            raise _Invalid("comma-separated regular expressions that compile") from None
    return patterns


def _text(raw: str) -> str:
    value = raw.strip()
    if not value or len(value) > 255 or not value.isprintable():
        raise _Invalid("printable text of 1 to 255 characters")
    return value


def _shown(default: Any) -> str:
    if default is None:
        return "the SDK default"
    if isinstance(default, tuple):
        return ",".join(default) or "none"
    return str(default)


# --- the options ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One setting: its ``Settings`` field, the variable it is read from, how it is parsed, its default."""

    field: str
    variable: str
    parse: Callable[[str], Any]
    default: Any
    doc: str


OPTIONS: tuple[Option, ...] = (
    Option("service_name", "OTEL_SERVICE_NAME", _text, None, "service.name (init's service_name wins)"),
    Option("service_version", "OTEL_KIT_SERVICE_VERSION", _text, None, "service.version"),
    Option("environment", "OTEL_KIT_ENVIRONMENT", _text, None, "deployment.environment.name"),
    Option("traces_exporter", "OTEL_TRACES_EXPORTER", _exporter_list(_EXPORTERS_TRACES), ("otlp",), "span export"),
    Option("metrics_exporter", "OTEL_METRICS_EXPORTER", _exporter_list(_EXPORTERS_METRICS), ("otlp",), "metric export"),
    Option("logs_exporter", "OTEL_LOGS_EXPORTER", _exporter_list(_EXPORTERS_TRACES), ("otlp",), "log export"),
    Option("protocol", "OTEL_EXPORTER_OTLP_PROTOCOL", _choice(_PROTOCOLS), "grpc", "OTLP transport"),
    Option("endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT", _endpoint, None, "OTLP collector URL"),
    Option("sampler", "OTEL_TRACES_SAMPLER", _choice(_SAMPLERS), "parentbased_traceidratio", "head sampler"),
    Option("sampler_arg", "OTEL_TRACES_SAMPLER_ARG", _ratio, 1.0, "sampling ratio"),
    Option("prometheus_host", "OTEL_EXPORTER_PROMETHEUS_HOST", _text, "localhost", "/metrics bind address"),
    Option("prometheus_port", "OTEL_EXPORTER_PROMETHEUS_PORT", _int_range(0, 65535), 9464, "/metrics port"),
    Option(
        "emf_namespace", "OTEL_KIT_EMF_NAMESPACE", _text, None, "CloudWatch namespace of EMF metrics (service name)"
    ),
    Option("log_level", "OTEL_KIT_LOG_LEVEL", _choice(_LEVELS), "INFO", "root logger level"),
    Option("log_stdout", "OTEL_KIT_LOG_STDOUT", _bool, True, "JSON log lines on stdout"),
    Option(
        "log_background", "OTEL_KIT_LOG_BACKGROUND", _bool, True, "format and send log lines on a background thread"
    ),
    Option("series_limit", "OTEL_KIT_METRIC_SERIES_LIMIT", _int_range(10, 1_000_000), 2000, "series per metric"),
    Option("shutdown_timeout_ms", "OTEL_KIT_SHUTDOWN_TIMEOUT_MS", _int_range(0, 600_000), 5000, "flush bound"),
    Option("disabled", "OTEL_SDK_DISABLED", _bool, False, "turn all telemetry off"),
    Option("scrub", "OTEL_KIT_SCRUB", _bool, True, "replace secrets in spans and logs"),
    Option("scrub_safe_keys", "OTEL_KIT_SCRUB_SAFE_KEYS", _text_list, (), "keys never scrubbed"),
    Option("scrub_extra_patterns", "OTEL_KIT_SCRUB_EXTRA_PATTERNS", _regex_list, (), "more secret regexes"),
    Option("scrub_emails", "OTEL_KIT_SCRUB_EMAILS", _bool, False, "scrub e-mail addresses too"),
)


@dataclass(frozen=True)
class Settings:
    """The effective configuration after defaults, environment and overrides."""

    service_name: str | None = None
    service_version: str | None = None
    environment: str | None = None
    traces_exporter: tuple[str, ...] = ("otlp",)
    metrics_exporter: tuple[str, ...] = ("otlp",)
    logs_exporter: tuple[str, ...] = ("otlp",)
    protocol: str = "grpc"
    endpoint: str | None = None
    sampler: str = "parentbased_traceidratio"
    sampler_arg: float = 1.0
    emf_namespace: str | None = None
    prometheus_host: str = "localhost"
    prometheus_port: int = 9464
    log_level: str = "INFO"
    log_stdout: bool = True
    log_background: bool = True
    series_limit: int = 2000
    shutdown_timeout_ms: int = 5000
    disabled: bool = False
    scrub: bool = True
    scrub_safe_keys: tuple[str, ...] = ()
    scrub_extra_patterns: tuple[str, ...] = ()
    scrub_emails: bool = False

    def otlp_protocol(self, signal: str, environ: Mapping[str, str] | None = None) -> str:
        """The transport for one signal: ``OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL`` wins over the general one."""
        env = os.environ if environ is None else environ
        raw = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
        if raw and raw.strip().lower() in _PROTOCOLS:
            return raw.strip().lower()
        return self.protocol

    def otlp_endpoint(self, signal: str, environ: Mapping[str, str] | None = None) -> str:
        """The full URL one signal's exporter sends to, following the OTLP exporter specification."""
        env = os.environ if environ is None else environ
        protocol = self.otlp_protocol(signal, env)
        specific = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
        if specific:
            try:
                return _endpoint(specific)
            except _Invalid:
                pass  # reported by load_settings; fall through to the general endpoint
        base = self.endpoint or ("http://localhost:4317" if protocol == "grpc" else "http://localhost:4318")
        if protocol == "grpc":
            return base
        return base.rstrip("/") + "/v1/" + signal


_FIELDS = {f.name for f in dataclasses.fields(Settings)}


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[Settings, list[ConfigProblem]]:
    """Read every option: override, else environment variable, else default. Never raises for a bad value."""
    env = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    problems: list[ConfigProblem] = []
    values: dict[str, Any] = {}

    for name in sorted(set(overrides) - _FIELDS):
        problems.append(
            ConfigProblem(
                f"init({name}=...)", repr(overrides.pop(name)), "one of " + ", ".join(sorted(_FIELDS)), "nothing"
            )
        )

    for option in OPTIONS:
        if option.field in overrides and overrides[option.field] is not None:
            raw: Any = overrides[option.field]
            source = f"init({option.field}=...)"
            if isinstance(raw, (list, tuple)):
                raw = ",".join(str(r) for r in raw) or "none"
            raw = str(raw)
        elif env.get(option.variable, "").strip():
            raw, source = env[option.variable], option.variable
        else:
            values[option.field] = option.default
            continue
        try:
            values[option.field] = option.parse(raw)
        except _Invalid as err:
            values[option.field] = option.default
            problems.append(ConfigProblem(source, raw, str(err), _shown(option.default)))

    for signal in ("traces", "metrics", "logs"):
        for suffix, parse in (("PROTOCOL", _choice(_PROTOCOLS)), ("ENDPOINT", _endpoint)):
            variable = f"OTEL_EXPORTER_OTLP_{signal.upper()}_{suffix}"
            raw = env.get(variable, "").strip()
            if raw:
                try:
                    parse(raw)
                except _Invalid as err:
                    problems.append(ConfigProblem(variable, raw, str(err), "the general OTLP setting"))

    return Settings(**values), problems
