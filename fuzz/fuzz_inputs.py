"""Coverage-guided fuzzing (atheris) of where outside input enters otel_kit.

Three targets, chosen by the first byte of each input:
- the propagators: arbitrary header names and values (X-Ray, W3C trace context and baggage, correlation headers);
- the correlation id parser;
- the JSON log formatter: an arbitrary message, arguments and extra fields.

Each must hold: no exception escapes, no invalid id is adopted, the output is one JSON document on one line
(no raw ``\\n``, ``\\r`` or other line break that ``str.splitlines()`` would split on).

Run:    ./run fuzz [seconds]        (default 60; libFuzzer flags after ``--``, e.g. ``./run fuzz 600 -- -jobs=2``)
Direct: .venv/bin/python fuzz/fuzz_inputs.py -max_total_time=600 fuzz/corpus
A crash writes ``crash-<hash>`` with the input; replay it with ``python fuzz/fuzz_inputs.py crash-<hash>``.
"""

from __future__ import annotations

import json
import logging
import sys

import atheris

with atheris.instrument_imports():  # otel_kit and the OpenTelemetry and json-logger code it calls
    from opentelemetry import trace

    from otel_kit._internal.correlation import _VALID, get_correlation_id, valid_correlation_id
    from otel_kit._internal.logs import json_formatter
    from otel_kit._internal.propagation import build_propagator, lower_case_getter

PROPAGATOR = build_propagator()
FORMATTER = json_formatter()
HEADER_NAMES = ["traceparent", "tracestate", "baggage", "x-amzn-trace-id", "x-correlation-id", "x-request-id"]


def check_headers(data: atheris.FuzzedDataProvider) -> None:
    carrier: dict[str, str] = {}
    for _ in range(data.ConsumeIntInRange(0, 6)):
        name = (
            HEADER_NAMES[data.ConsumeIntInRange(0, len(HEADER_NAMES) - 1)]
            if data.ConsumeBool()
            else (data.ConsumeUnicodeNoSurrogates(20).lower())
        )
        carrier[name] = data.ConsumeUnicodeNoSurrogates(300)
    ctx = PROPAGATOR.extract(carrier, getter=lower_case_getter)
    span_context = trace.get_current_span(ctx).get_span_context()
    if span_context.is_valid:
        assert span_context.trace_id != 0 and span_context.span_id != 0
    cid = get_correlation_id(ctx)
    assert cid is None or _VALID.fullmatch(cid), f"adopted an invalid correlation id {cid!r}"


def check_correlation_id(data: atheris.FuzzedDataProvider) -> None:
    raw = data.ConsumeUnicodeNoSurrogates(200) if data.ConsumeBool() else data.ConsumeBytes(200)
    cid = valid_correlation_id(raw)
    assert cid is None or _VALID.fullmatch(cid), f"accepted {raw!r} as {cid!r}"


def check_log_line(data: atheris.FuzzedDataProvider) -> None:
    message = data.ConsumeUnicodeNoSurrogates(300)
    args = tuple(data.ConsumeUnicodeNoSurrogates(50) for _ in range(data.ConsumeIntInRange(0, 2)))
    record = logging.LogRecord("fuzz", logging.INFO, __file__, 1, message, args, None)
    for _ in range(data.ConsumeIntInRange(0, 3)):
        key = "x_" + data.ConsumeUnicodeNoSurrogates(10)
        setattr(record, key, data.ConsumeUnicodeNoSurrogates(50))
    try:
        expected = record.getMessage()
    except (TypeError, ValueError):
        return  # a bad %-format is logging's own error path (it reports and drops the record), not ours
    line = FORMATTER.format(record)
    assert len(line.splitlines()) == 1, f"log line breaks into {len(line.splitlines())}: {line!r}"
    assert json.loads(line)["message"] == expected


TARGETS = (check_headers, check_correlation_id, check_log_line)


def test_one_input(raw: bytes) -> None:
    data = atheris.FuzzedDataProvider(raw)
    TARGETS[data.ConsumeIntInRange(0, len(TARGETS) - 1)](data)


if __name__ == "__main__":
    logging.disable(logging.CRITICAL)  # the propagators' own warnings would flood the fuzzer's output
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
