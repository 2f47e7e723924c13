"""The head sampler: what OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG decide for root and child spans."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import sampling
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from otel_kit._internal.config import Settings
from otel_kit._internal.tracing import build_sampler

# trace ids whose low 64 bits are spread evenly: the ratio sampler keeps those below ratio * 2**64
TRACE_IDS = [(i << 64) | (i * (2**64 // 1000)) for i in range(1, 1001)]


def _sampled(sampler: sampling.Sampler, parent_sampled: bool | None = None) -> int:
    context = None
    if parent_sampled is not None:
        flags = TraceFlags(TraceFlags.SAMPLED if parent_sampled else TraceFlags.DEFAULT)
        parent = SpanContext(trace_id=1, span_id=1, is_remote=True, trace_flags=flags)
        context = trace.set_span_in_context(NonRecordingSpan(parent))
    return sum(sampler.should_sample(context, tid, "op").decision.is_sampled() for tid in TRACE_IDS)


@pytest.mark.parametrize(
    ("name", "ratio", "roots", "under_sampled_parent", "under_dropped_parent"),
    [
        ("parentbased_traceidratio", 1.0, 1000, 1000, 0),  # the default
        ("parentbased_traceidratio", 0.25, 250, 1000, 0),
        ("parentbased_traceidratio", 0.0, 0, 1000, 0),
        ("traceidratio", 1.0, 1000, 1000, 1000),
        ("traceidratio", 0.5, 500, 500, 500),
        ("traceidratio", 0.0, 0, 0, 0),
        ("always_on", 0.0, 1000, 1000, 1000),
        ("always_off", 1.0, 0, 0, 0),
        ("parentbased_always_on", 0.0, 1000, 1000, 0),
        ("parentbased_always_off", 1.0, 0, 1000, 0),
    ],
)
def test_sampler_keeps_the_share_it_is_set_to(
    name: str, ratio: float, roots: int, under_sampled_parent: int, under_dropped_parent: int
) -> None:
    sampler = build_sampler(Settings(sampler=name, sampler_arg=ratio))
    assert _sampled(sampler) == pytest.approx(roots, abs=1)
    assert _sampled(sampler, parent_sampled=True) == pytest.approx(under_sampled_parent, abs=1)
    assert _sampled(sampler, parent_sampled=False) == pytest.approx(under_dropped_parent, abs=1)
