"""The ``otel-kit`` command line.

otel-kit settings     the effective configuration from the environment, and every rejected setting
otel-kit --version
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from otel_kit._internal.config import load_settings
from otel_kit._internal.resource import _distro_version

__all__ = ["main"]


def _settings(_args: argparse.Namespace) -> int:
    settings, problems = load_settings()
    effective = dataclasses.asdict(settings)
    effective["endpoints"] = {signal: settings.otlp_endpoint(signal) for signal in ("traces", "metrics", "logs")}
    print(json.dumps({"settings": effective, "problems": [p.message() for p in problems]}, indent=2, default=list))
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="otel-kit", description="otel-kit: OpenTelemetry for Python services")
    parser.add_argument("--version", action="version", version=f"otel-kit {_distro_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    settings = commands.add_parser("settings", help="print the effective settings; exit 1 if any is rejected")
    settings.set_defaults(run=_settings)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
