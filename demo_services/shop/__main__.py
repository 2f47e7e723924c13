"""``python -m demo_services.shop``: start the shop and its stack, drive load with faults, print the report."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from demo_services.shop.stack import FAULTS, run
from demo_services.stack.servers import ServerError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./run demo", description=__doc__.split(": ", 1)[1])
    parser.add_argument("--rate", type=float, default=5.0, help="requests a second from the load generator (default 5)")
    parser.add_argument("--duration", type=float, default=45.0, help="seconds of load (default 45)")
    parser.add_argument("--fault", action="append", default=[], choices=sorted(FAULTS),
                        help="switch a fault on for the middle third of the run (repeatable)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="folder for the raw telemetry (default: a new temporary folder)")
    parser.add_argument("--seed", type=int, help="seed of the load mix, for a repeatable run")
    parser.add_argument("--backend", choices=["lgtm", "aws"], default="lgtm",
                        help="lgtm: Tempo, Loki, Mimir stand-ins (default); aws: the collector's aws overlay to X-Ray "
                        "in moto")  # fmt: skip
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0:
        parser.error("--rate and --duration must be positive")
    out = args.out or Path(tempfile.mkdtemp(prefix=f"otel-kit-shop-{time.strftime('%Y%m%d-%H%M%S')}-"))
    try:
        return run(out, args.rate, args.duration, args.fault, args.seed, args.backend)
    except KeyboardInterrupt:
        print("interrupted; everything was stopped", file=sys.stderr)
        return 130
    except (ServerError, TimeoutError) as err:
        print(f"the stack did not start: {err}\neverything started was stopped; logs are in {out}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
