"""The ``otel-kit`` command line.

otel-kit settings     the effective configuration from the environment, and every rejected setting
otel-kit doctor       the configuration, the collector endpoint and the clock, each problem with its fix
otel-kit grafana push [--dry-run] [--dir PATH]
                      the project's folder, datasources, dashboards and alert rules into the Grafana at
                      GRAFANA_URL (token from GRAFANA_TOKEN); --dry-run prints the diff and changes nothing
otel-kit cloudwatch push --log-group G [--function F] [--dry-run] [--dir PATH]
                      saved Logs Insights queries, an SNS topic toward PagerDuty, Lambda alarms and a dashboard
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


def _masked_headers(raw: str) -> str:
    """``key=value,...`` with every value replaced: OTLP headers usually carry credentials."""
    keys = [part.split("=", 1)[0].strip() for part in raw.split(",") if part.strip()]
    return ",".join(f"{key}=***" for key in keys)


def _check_endpoint(url: str) -> tuple[bool, str, float | None]:
    """Whether ``url``'s host and port accept a connection, and the server clock's offset when it speaks HTTP."""
    import socket
    import urllib.error
    import urllib.request
    from email.utils import parsedate_to_datetime
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=2):
            pass
    except OSError as err:
        return False, f"{host}:{port}: {err.strerror or err}", None
    offset = None
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            date = response.headers.get("Date")
    except urllib.error.HTTPError as err:  # a 404 or 405 still carries the server's clock
        date = err.headers.get("Date")
    except (OSError, ValueError):
        date = None
    if date:
        import time

        offset = time.time() - parsedate_to_datetime(date).timestamp()
    return True, f"{host}:{port}", offset


def _aws_problems() -> list[tuple[str, str]]:
    """What the collector's aws overlay would lack in this environment: a region and credentials, found the way the
    AWS SDKs find them (variables, profile files, web identity, the ECS task role), without asking the EC2
    instance metadata service."""
    import os

    try:
        import botocore.session
    except ImportError:
        return [("botocore is not installed, so the AWS checks cannot run", "pip install 'otel-kit[aws]'")]
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")  # this process only: no call off this machine
    session = botocore.session.get_session()
    found: list[tuple[str, str]] = []
    # the collector's Go SDK reads AWS_REGION, botocore AWS_DEFAULT_REGION; both read the profile
    region = os.environ.get("AWS_REGION") or session.get_config_variable("region")
    if not region:
        found.append(("no AWS region: AWS_REGION is not set and no profile names one",
                      "set AWS_REGION for the collector (the aws overlay stops at start without one)"))  # fmt: skip
    else:
        print(f"ok: AWS region {region}")
    try:
        credentials = session.get_credentials()
    except Exception as err:  # a broken profile file or web identity token
        found.append((f"the AWS credentials cannot be read: {type(err).__name__}", "fix the profile or the token"))
        return found
    if credentials is None:
        found.append(("no AWS credentials in the environment, a profile, web identity or the ECS task role",
                      "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE; on EC2 the instance role "
                      "is used and not checked here"))  # fmt: skip
    else:
        print(f"ok: AWS credentials from {credentials.method}")
    return found


def _doctor(args: argparse.Namespace) -> int:
    import os
    import time

    settings, problems = load_settings()
    shown = dataclasses.asdict(settings)
    for name in (
        "OTEL_EXPORTER_OTLP_HEADERS",
        *(f"OTEL_EXPORTER_OTLP_{s}_HEADERS" for s in ("TRACES", "METRICS", "LOGS")),
    ):
        if os.environ.get(name):
            shown[name] = _masked_headers(os.environ[name])
    print("configuration:")
    print(json.dumps(shown, indent=2, default=list))
    found: list[tuple[str, str]] = [
        (p.message(), "set the variable to an allowed value, or unset it") for p in problems
    ]

    signals = [s for s, exporters in (("traces", settings.traces_exporter), ("metrics", settings.metrics_exporter),
                                      ("logs", settings.logs_exporter)) if "otlp" in exporters]  # fmt: skip
    for endpoint in dict.fromkeys(settings.otlp_endpoint(s) for s in signals):
        ok, where, offset = _check_endpoint(endpoint)
        if not ok:
            found.append((f"the collector at {endpoint} does not answer ({where})",
                          "start the collector (the otel-kit collector image, or any OpenTelemetry Collector with an "
                          "OTLP receiver) or point OTEL_EXPORTER_OTLP_ENDPOINT at the one you run"))  # fmt: skip
            continue
        print(f"ok: the collector at {endpoint} answers")
        if offset is not None and abs(offset) > 300:
            found.append((f"this clock is {offset:+.0f} s off the collector's",
                          "synchronise the clock (NTP): X-Ray rejects trace ids whose time is far off"))  # fmt: skip
    if time.time() < 1_700_000_000:
        found.append(("the system clock is before November 2023", "set the clock: trace ids embed the time (X-Ray)"))
    if args.aws:
        found += _aws_problems()
    for problem, fix in found:
        print(f"problem: {problem}\n    fix: {fix}")
    if not found:
        print("no problems found")
    return 1 if found else 0


def _grafana_push(args: argparse.Namespace) -> int:
    from otel_kit._internal.assets import assets_root
    from otel_kit.grafana import GrafanaPushError, push
    from otel_kit.integrations import install_hint

    try:
        push(assets_root(args.dir), dry_run=args.dry_run)
    except ModuleNotFoundError as err:
        print(f"otel-kit grafana push: {install_hint('grafana', str(err.name))}", file=sys.stderr)
        return 2
    except GrafanaPushError as err:
        print(f"otel-kit grafana push: {err}", file=sys.stderr)
        return 2
    return 0


def _cloudwatch_push(args: argparse.Namespace) -> int:
    import os

    from otel_kit._internal.assets import assets_root
    from otel_kit.cloudwatch import push
    from otel_kit.integrations import install_hint

    namespace = args.namespace or os.environ.get("CW_NAMESPACE") or "otel-kit"
    try:
        push(assets_root(args.dir), args.log_group, args.function, dry_run=args.dry_run, services=args.service,
             namespace=namespace)  # fmt: skip
    except ModuleNotFoundError as err:
        print(f"otel-kit cloudwatch push: {install_hint('aws', str(err.name))}", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"otel-kit cloudwatch push: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # botocore: no credentials, no region, access denied, ...
        print(f"otel-kit cloudwatch push: AWS refused or could not be reached: {err}", file=sys.stderr)
        return 2
    return 0


ASSETS_DIR_HELP = (
    "a folder laid out as the otel-kit repository (dashboards/, alerts/, cloudwatch/queries/) to push from "
    "instead of the copies installed with otel-kit"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="otel-kit", description="otel-kit: OpenTelemetry for Python services")
    parser.add_argument("--version", action="version", version=f"otel-kit {_distro_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    settings = commands.add_parser("settings", help="print the effective settings; exit 1 if any is rejected")
    settings.set_defaults(run=_settings)
    doctor = commands.add_parser("doctor", help="check the configuration, the collector and the clock")
    doctor.add_argument("--aws", action="store_true", help="also check the AWS region and credentials (aws overlay)")
    doctor.set_defaults(run=_doctor)
    grafana = commands.add_parser("grafana", help="work with a Grafana of your own").add_subparsers(
        dest="grafana_command", required=True
    )
    grafana_push = grafana.add_parser("push", help="create or update the folder, datasources, dashboards, alert rules")
    grafana_push.add_argument("--dry-run", action="store_true", help="print what would change, with a diff")
    grafana_push.add_argument("--dir", default=None, help=ASSETS_DIR_HELP)
    grafana_push.set_defaults(run=_grafana_push)
    cloudwatch = commands.add_parser("cloudwatch", help="work with AWS CloudWatch").add_subparsers(
        dest="cloudwatch_command", required=True
    )
    cloudwatch_push = cloudwatch.add_parser("push", help="saved queries, alarms, SNS topic and dashboard")
    cloudwatch_push.add_argument("--log-group", action="append", default=[], help="a log group to query (repeat)")
    cloudwatch_push.add_argument("--function", action="append", default=[], help="a Lambda function to alarm on")
    cloudwatch_push.add_argument(
        "--service",
        action="append",
        default=[],
        help="a service to alarm on (its failed requests, from the collector's EMF metrics)",
    )
    cloudwatch_push.add_argument(
        "--namespace", default=None, help="the EMF namespace (default: $CW_NAMESPACE or otel-kit)"
    )
    cloudwatch_push.add_argument("--dry-run", action="store_true", help="print what would be created or updated")
    cloudwatch_push.add_argument("--dir", default=None, help=ASSETS_DIR_HELP)
    cloudwatch_push.set_defaults(run=_cloudwatch_push)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
