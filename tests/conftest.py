"""Fixtures: in-memory telemetry for every test that asks, real servers for the e2e tier."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from demo_services.stack.servers import OtlpReceiver, RabbitMQ
from otel_kit import testing


@pytest.fixture
def tel() -> Iterator[testing.Capture]:
    """otel_kit initialised with in-memory exporters; JSON lines captured."""
    with testing.capture("test-service") as captured:
        yield captured


@pytest.fixture(autouse=True)
def _clean_otel_state() -> Iterator[None]:
    yield
    testing.reset()


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[RabbitMQ]:
    """A real RabbitMQ node on a free loopback port, for the whole session."""
    with RabbitMQ() as node:
        yield node


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """A separate process receiving OTLP over gRPC and HTTP."""
    with OtlpReceiver() as receiver:
        yield receiver
