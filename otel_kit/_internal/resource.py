"""The Resource: who is sending. Precedence: ``init()`` arguments, then ``OTEL_SERVICE_NAME`` and the
``OTEL_KIT_*`` settings, then ``OTEL_RESOURCE_ATTRIBUTES``, then SDK defaults.

Only cheap, local detection is done: host name, process id, and the Lambda function when running in Lambda. No
cloud metadata endpoint is called (it can block start-up for seconds off-cloud), and the process command line
is not recorded (it often holds secrets).
"""

from __future__ import annotations

import os
import socket

from opentelemetry.sdk.resources import Resource

from otel_kit._internal.config import Settings

__all__ = ["DISTRO_NAME", "build_resource"]

DISTRO_NAME = "otel-kit"


class _Resource(Resource):
    """A Resource that computes its hash once.

    The OTLP encoders group every exported span, log record and metric point by resource, hashing it each time,
    and SDK 1.45 renders the attributes as sorted JSON for every hash (about 4 us with this toolkit's resource, a
    span or log line's worth of export work). A Resource never changes, so its first hash is its hash; merging
    (the SDK's fork hooks renew the instance id, the toolkit the pid) keeps the class.
    """

    _hash: int | None = None

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = super().__hash__()
        return self._hash

    def merge(self, other: Resource) -> Resource:
        merged = super().merge(other)
        return _Resource(merged.attributes, merged.schema_url)


def _distro_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("otel-kit")
    except PackageNotFoundError:
        return "0+unknown"


def build_resource(settings: Settings) -> Resource:
    attributes: dict[str, str | int] = {
        "telemetry.distro.name": DISTRO_NAME,
        "telemetry.distro.version": _distro_version(),
        "host.name": socket.gethostname(),
        "process.pid": os.getpid(),
    }
    if settings.service_name:
        attributes["service.name"] = settings.service_name
    if settings.service_version:
        attributes["service.version"] = settings.service_version
    if settings.environment:
        attributes["deployment.environment.name"] = settings.environment
    resource = Resource.create(attributes)
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        from opentelemetry.sdk.extension.aws.resource import AwsLambdaResourceDetector

        resource = AwsLambdaResourceDetector().detect().merge(resource)
    return _Resource(resource.attributes, resource.schema_url)
