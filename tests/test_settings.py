"""Bad settings: one clear message naming the variable, its value and what is allowed; the app still starts."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from opentelemetry import metrics

import otel_kit
from demo_services.stack.servers import OtlpReceiver, wait_until
from otel_kit import testing
from otel_kit._internal.config import load_settings


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("OTEL_TRACES_SAMPLER_ARG", "1.5", "a number from 0 to 1"),
        ("OTEL_TRACES_SAMPLER_ARG", "-0.1", "a number from 0 to 1"),
        ("OTEL_TRACES_SAMPLER_ARG", "nan", "a number from 0 to 1"),
        ("OTEL_TRACES_SAMPLER", "xray", "one of always_on, always_off, traceidratio"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317", "an http:// or https:// URL with a host"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://:4317", "an http:// or https:// URL with a host"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:99999", "an http:// or https:// URL with a host"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "one of grpc, http/protobuf"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://collector", "an http:// or https:// URL with a host"),
        ("OTEL_KIT_METRIC_SERIES_LIMIT", "lots", "an integer from 10 to 1000000"),
        ("OTEL_KIT_LOG_LEVEL", "LOUD", "one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ],
)
def test_bad_setting_logs_one_message_naming_variable_value_and_allowed(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, allowed: str
) -> None:
    monkeypatch.setenv(variable, value)
    with testing.capture("svc") as tel:
        problems = tel.handle.problems
        # the application still runs and is traced
        with otel_kit.correlation_scope():
            logging.getLogger("app").info("still running")
    _assert_one_clear_message(tel, problems, variable, value, allowed)
    assert any(line["message"] == "still running" for line in tel.log_lines())


def _assert_one_clear_message(
    tel: testing.Capture, problems: list[otel_kit.ConfigProblem], variable: str, value: str, allowed: str
) -> None:
    assert [p.variable for p in problems] == [variable]
    # a setting's warning carries the variable's name as a field; other toolkit warnings (a shutdown that overran its
    # bound on a loaded machine) are not about settings
    warnings = [line for line in tel.log_lines() if line["level"] == "WARNING" and "variable" in line]
    assert len(warnings) == 1, tel.log_lines()
    assert warnings[0]["logger"] == "otel_kit"
    assert warnings[0]["variable"] == variable
    message = warnings[0]["message"]
    assert message.startswith(f"{variable}={value!r} is not valid: allowed {allowed}")
    assert "; using " in message


def _exported(tel: testing.Capture, receiver: OtlpReceiver, signals: set[str]) -> None:
    """Make a span, a measurement and a log line, and wait until ``receiver`` has each of ``signals``."""
    with otel_kit.correlation_scope():
        otel_kit.traced(lambda: None)()
        metrics.get_meter("svc").create_counter("svc.calls").add(1)
        logging.getLogger("app").info("still running")
    assert tel.handle.force_flush(5000)
    wait_until(lambda: signals <= {r["signal"] for r in receiver.records()}, 10, f"{sorted(signals)} exported")


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("OTEL_TRACES_EXPORTER", "zipkin", "a comma-separated list of otlp, console, none"),
        ("OTEL_METRICS_EXPORTER", "otlp,statsd", "a comma-separated list of otlp, prometheus, emf, console, none"),
    ],
)
def test_unknown_exporter_is_reported_and_otlp_used_instead(
    monkeypatch: pytest.MonkeyPatch, otlp_receiver: OtlpReceiver, variable: str, value: str, allowed: str
) -> None:
    monkeypatch.setenv(variable, value)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{otlp_receiver.grpc_port}")
    signal = "traces" if "TRACES" in variable else "metrics"
    with testing.capture("svc", **{f"{signal}_exporter": None}) as tel:
        _exported(tel, otlp_receiver, {signal})
    _assert_one_clear_message(tel, tel.handle.problems, variable, value, allowed)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("OTEL_BSP_MAX_QUEUE_SIZE", "0", "an integer from 1 up"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "5000", "at most OTEL_BSP_MAX_QUEUE_SIZE (2048)"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "-1", "an integer from 1 up"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "0", "a number above 0"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "ten", "a number above 0"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd", "one of gzip, deflate, none"),
        ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "-1", "an integer from 0 up, or empty for no limit"),
        ("OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT", "many", "an integer from 0 up, or empty for no limit"),
    ],
)
def test_a_bad_sdk_setting_is_reported_and_every_signal_still_exported(
    monkeypatch: pytest.MonkeyPatch, otlp_receiver: OtlpReceiver, variable: str, value: str, allowed: str
) -> None:
    """The SDK raises on these as it builds a provider or a batch processor: every signal was lost to one value."""
    monkeypatch.setenv(variable, value)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{otlp_receiver.grpc_port}")
    with testing.capture("svc", traces_exporter=None, metrics_exporter=None, logs_exporter=None) as tel:
        _exported(tel, otlp_receiver, {"traces", "metrics", "logs"})
    _assert_one_clear_message(tel, tel.handle.problems, variable, value, allowed)


def test_a_span_limit_the_sdk_cannot_read_does_not_stop_the_import() -> None:
    """SDK 1.45 reads the span limits as it is imported, and raised out of ``import otel_kit`` on this one."""
    script = (
        "import otel_kit\n"
        "handle = otel_kit.init('svc', traces_exporter='none', metrics_exporter='none', logs_exporter='none')\n"
        "assert handle.tracer_provider is not None\n"
        "print([p.message() for p in handle.problems])\n"
    )
    env = {**os.environ, "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "lots", "OTEL_KIT_LOG_STDOUT": "false"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    expected = (
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT='lots' is not valid: allowed an integer from 0 up, or empty for no limit"
    )
    assert expected in done.stdout


def test_bad_ratio_falls_back_to_sampling_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "7")
    with testing.capture("svc") as tel:

        @otel_kit.traced
        def work() -> None:
            pass

        for _ in range(20):
            work()
    assert len(tel.spans()) == 20


def test_valid_ratio_is_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    with testing.capture("svc") as tel:
        otel_kit.traced(lambda: None)()
    assert tel.handle.problems == []
    assert tel.spans() == []


def test_unknown_init_keyword_is_reported_not_raised() -> None:
    with testing.capture("svc", sample_rate=0.5) as tel:
        pass
    assert [p.variable for p in tel.handle.problems] == ["init(sample_rate=...)"]


def test_credentials_in_a_bad_endpoint_are_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://alice:s3cr3t@collector:4317")
    with testing.capture("svc") as tel:
        pass
    text = tel.stream.getvalue()
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in text
    assert "s3cr3t" not in text


def test_http_protocol_appends_signal_path_and_signal_endpoint_wins() -> None:
    settings, problems = load_settings(
        environ={
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://logs:9999/custom",
        }
    )
    env = {"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://logs:9999/custom"}
    assert problems == []
    assert settings.otlp_endpoint("traces", env) == "http://collector:4318/v1/traces"
    assert settings.otlp_endpoint("logs", env) == "http://logs:9999/custom"


def test_init_is_idempotent() -> None:
    with testing.capture("first") as tel:
        again = otel_kit.init("second")
        assert again is tel.handle
        assert tel.handle.service_name == "first"


def test_init_arguments_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=payments,service.version=0.0.1")
    testing.reset()
    handle = otel_kit.init(
        "from-code",
        service_version="2.3.4",
        environment="staging",
        traces_exporter="none",
        metrics_exporter="none",
        logs_exporter="none",
        log_stdout=False,
    )
    assert handle.tracer_provider is not None
    attrs = handle.tracer_provider.resource.attributes
    assert attrs["service.name"] == "from-code"
    assert attrs["service.version"] == "2.3.4"
    assert attrs["deployment.environment.name"] == "staging"
    assert attrs["team"] == "payments"
    assert attrs["telemetry.distro.name"] == "otel-kit"
