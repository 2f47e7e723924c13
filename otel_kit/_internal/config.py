"""Settings: the standard ``OTEL_*`` variables, the toolkit's ``OTEL_KIT_*`` ones, and ``init()`` overrides.

Every option is declared once in ``OPTIONS`` (name, variable, parser, default). A bad value never stops the
application: it becomes a :class:`ConfigProblem` naming the variable, the value and what is allowed, and the
default is used instead. ``init()`` logs each problem once.

The SDK reads some standard variables itself and raises on values it cannot use: the attribute and span limits as it
is imported, the batch, metric export and OTLP exporter settings as ``init()`` builds the providers. One bad value
there would stop the application's import of otel_kit, or cost it every signal. Those variables are checked too
(``SDK_VARIABLES``), as ``otel_kit`` is imported and again by ``init()``: a bad value is taken out of the
environment, so the default applies, and reported like any other.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["OPTIONS", "ConfigProblem", "Settings", "forget_set_aside", "load_settings", "set_aside_bad_sdk_values"]


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


def _number(raw: str) -> float:
    """``raw`` as a float, NaN when it is not a number (every range check rejects NaN)."""
    try:
        return float(raw)
    except ValueError:
        return float("nan")


def _ratio(raw: str) -> float:
    value = _number(raw)
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


def _limit(raw: str) -> str:
    value = raw.strip()
    if value and not (value.isascii() and value.isdigit()):  # empty: no limit (SDK 1.45)
        raise _Invalid("an integer from 0 up, or empty for no limit")
    return value


def _positive_integer(raw: str) -> str:
    value = raw.strip()
    if not (value.isascii() and value.isdigit()) or int(value) == 0:
        raise _Invalid("an integer from 1 up")
    return value


def _positive_number(raw: str) -> str:
    if not _number(raw) > 0:  # also rejects NaN
        raise _Invalid("a number above 0")
    return raw


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


# --- the SDK's own variables -------------------------------------------------------------------------------------

_BATCH_DEFAULTS = {"OTEL_BSP": (2048, 512), "OTEL_BLRP": (2048, 512)}  # queue size, batch size (SDK 1.45)
SDK_VARIABLES: dict[str, Callable[[str], str]] = {
    **{
        f"OTEL_{name}": _limit
        for name in (
            "ATTRIBUTE_COUNT_LIMIT",
            "ATTRIBUTE_VALUE_LENGTH_LIMIT",
            "SPAN_ATTRIBUTE_COUNT_LIMIT",
            "SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
            "SPAN_EVENT_COUNT_LIMIT",
            "SPAN_LINK_COUNT_LIMIT",
            "EVENT_ATTRIBUTE_COUNT_LIMIT",
            "LINK_ATTRIBUTE_COUNT_LIMIT",
            "LOGRECORD_ATTRIBUTE_COUNT_LIMIT",
            "LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT",
        )
    },
    **{
        f"{prefix}_{name}": _positive_integer
        for prefix in _BATCH_DEFAULTS
        for name in ("SCHEDULE_DELAY", "EXPORT_TIMEOUT", "MAX_QUEUE_SIZE", "MAX_EXPORT_BATCH_SIZE")
    },
    "OTEL_METRIC_EXPORT_INTERVAL": _positive_number,  # milliseconds
    "OTEL_METRIC_EXPORT_TIMEOUT": _positive_number,
    **{
        f"OTEL_EXPORTER_OTLP{signal}_{name}": parse
        for signal in ("", "_TRACES", "_METRICS", "_LOGS")
        for name, parse in (("TIMEOUT", _positive_number), ("COMPRESSION", _choice(("gzip", "deflate", "none"))))
    },  # the timeout in seconds (SDK 1.45)
}


def _check_sdk_variables(env: Mapping[str, str]) -> tuple[list[ConfigProblem], dict[str, str | None]]:
    """The SDK variables of ``env`` that are not valid, and what each should become: None to be removed (the
    SDK's default, or the one ``init()`` sets), or a value. A batch larger than its queue (which the SDK refuses)
    becomes the queue's size."""
    problems: list[ConfigProblem] = []
    fixes: dict[str, str | None] = {}
    for variable, parse in SDK_VARIABLES.items():
        raw = env.get(variable)
        if raw is None:
            continue
        try:
            parse(raw)
        except _Invalid as err:
            problems.append(ConfigProblem(variable, raw, str(err), "the default"))  # the SDK's or init()'s
            fixes[variable] = None

    def given(variable: str) -> str | None:  # a valid value the environment sets
        return env[variable] if variable in env and variable not in fixes else None

    for prefix, (default_queue, default_batch) in _BATCH_DEFAULTS.items():
        queue_variable, batch_variable = f"{prefix}_MAX_QUEUE_SIZE", f"{prefix}_MAX_EXPORT_BATCH_SIZE"
        queue_raw, batch_raw = given(queue_variable), given(batch_variable)
        queue = int(queue_raw) if queue_raw is not None else default_queue
        batch = int(batch_raw) if batch_raw is not None else default_batch
        if batch > queue:
            shown = batch_raw if batch_raw is not None else f"{batch} (the SDK default)"
            allowed = f"at most {queue_variable} ({queue})"
            problems.append(ConfigProblem(batch_variable, shown, allowed, str(queue)))
            fixes[batch_variable] = str(queue)
    return problems, fixes


_SET_ASIDE: list[ConfigProblem] = []  # set aside as otel_kit was imported: reported until an ``init()`` logs them


def set_aside_bad_sdk_values(report_later: bool = False) -> list[ConfigProblem]:
    """Take the SDK variables that are not valid out of ``os.environ`` (a batch larger than its queue is set to
    the queue's size); returns the problems, and with ``report_later`` keeps them for ``load_settings`` to report
    (the values are gone from the environment) until ``forget_set_aside()``."""
    problems, fixes = _check_sdk_variables(os.environ)
    for variable, value in fixes.items():
        if value is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = value
    if report_later:
        _SET_ASIDE.extend(problems)
    return problems


def forget_set_aside() -> None:
    """Stop reporting what was set aside as otel_kit was imported: an ``init()`` has logged it."""
    _SET_ASIDE.clear()


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

    if environ is None:
        problems.extend(_SET_ASIDE)
    problems.extend(_check_sdk_variables(env)[0])
    return Settings(**values), problems
