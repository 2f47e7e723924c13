"""The Resource every span, log record and metric point carries."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk import resources
from opentelemetry.sdk.resources import Resource

import otel_kit
from otel_kit import testing

log = logging.getLogger("app")


def test_export_renders_the_resource_once_not_once_per_span_or_log_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """The OTLP encoders hash the resource for every item; SDK 1.45 renders it as JSON for each hash."""
    renders = []

    def counting_dumps(obj: Any, **kwargs: Any) -> str:
        renders.append(1)
        return json.dumps(obj, **kwargs)

    with testing.capture("svc") as tel:
        for n in range(50):
            with otel_kit.correlation_scope(f"c-{n}"):
                otel_kit.traced(lambda: log.info("hello"))()
        monkeypatch.setattr(resources, "dumps", counting_dumps)
        encode_spans(tel.spans())
        encode_logs(tel.log_records())
    assert len(tel.spans()) == 50 and len(tel.log_records()) >= 50
    assert len(renders) == 1  # the first hash renders it, every later one reuses that


def test_merged_resource_keeps_its_attributes_and_equals_a_plain_one() -> None:
    """The fork hooks merge a new pid and instance id into the providers' resource."""
    with testing.capture("svc") as tel:
        provider = tel.handle.tracer_provider
        before = provider.resource
        provider._update_resource(Resource({"process.pid": 4242}))
        after = provider.resource
    assert after.attributes["process.pid"] == 4242
    assert after.attributes["service.name"] == "svc"
    plain = Resource(after.attributes, after.schema_url)
    assert after == plain and hash(after) == hash(plain)
    assert after != before and hash(after) != hash(before)
