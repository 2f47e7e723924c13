"""The load generator: a realistic mix of shoppers against the gateway, at a set rate for a set time.

Mix (weights): browse the catalogue 6, place an order 3, cancel a confirmed order 1. One order in ten pays with
a card the issuer declines (``tok_decline``). Requests are started on a fixed schedule (an open model: a slow
shop does not slow the arrivals), from a bounded pool of workers; a progress bar shows the time and the outcomes.

``python -m demo_services.shop.loadgen --gateway URL --api-key KEY --rate 5 --duration 30``
"""

from __future__ import annotations

import argparse
import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

SKUS = ["book-1", "book-2", "book-3", "mug-1", "tee-1"]
MIX = {"browse": 6, "place": 3, "cancel": 1}


@dataclass
class LoadResult:
    """What the load generator saw: outcomes by action and HTTP status, and the ids of the orders it placed."""

    outcomes: Counter[str] = field(default_factory=Counter)
    confirmed: list[str] = field(default_factory=list)
    compensated: list[str] = field(default_factory=list)
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def note(self, action: str, status: int | str) -> None:
        with self.lock:
            self.outcomes[f"{action} {status}"] += 1

    def by_class(self) -> dict[str, int]:
        """Counts by outcome class: ok (2xx), refused (4xx: declined, out of stock, ...), failed (5xx, no answer)."""
        classes: Counter[str] = Counter()
        with self.lock:
            for key, n in self.outcomes.items():
                status = key.rsplit(" ", 1)[1]
                classes["ok" if status.startswith("2") else "refused" if status.startswith("4") else "failed"] += n
        return dict(classes)

    def summary(self) -> str:
        return ", ".join(f"{key}: {n}" for key, n in sorted(self.outcomes.items()))


def _act(client: httpx.Client, action: str, result: LoadResult, rng: random.Random) -> None:
    try:
        if action == "browse":
            result.note(action, client.get("/products").status_code)
            return
        if action == "cancel":
            with result.lock:
                order_id = result.confirmed.pop(rng.randrange(len(result.confirmed))) if result.confirmed else None
            if order_id is None:
                action = "place"  # nothing to cancel yet
            else:
                result.note(action, client.post(f"/orders/{order_id}/cancel").status_code)
                return
        card = "tok_decline" if rng.random() < 0.1 else "tok_visa"
        response = client.post("/orders", json={"sku": rng.choice(SKUS), "qty": rng.randint(1, 2), "card": card})
        result.note(action, response.status_code)
        body: dict[str, Any] = response.json() if response.headers.get("content-type") == "application/json" else {}
        with result.lock:
            if body.get("status") == "confirmed":
                result.confirmed.append(body["order_id"])
            elif body.get("status") == "compensated":
                result.compensated.append(body["order_id"])
    except httpx.HTTPError as err:
        result.note(action, type(err).__name__)
        with result.lock:
            result.errors += 1


def run_load(gateway: str, api_key: str, rate: float, duration: float, seed: int | None = None,
             progress: bool = True) -> LoadResult:  # fmt: skip
    """Send ``rate`` requests a second for ``duration`` seconds; return what came back."""
    from tqdm import tqdm

    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    rng = random.Random(seed)
    result = LoadResult()
    actions, weights = list(MIX), list(MIX.values())
    total = max(1, round(rate * duration))
    client = httpx.Client(base_url=gateway, headers={"X-Api-Key": api_key}, timeout=10)
    bar = tqdm(total=total, desc="load", unit="req", disable=not progress, leave=True)
    start = time.monotonic()
    with client, bar, ThreadPoolExecutor(max_workers=16) as pool:
        for n in range(total):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            future = pool.submit(_act, client, rng.choices(actions, weights)[0], result, rng)
            future.add_done_callback(lambda _f: bar.update(1))
            if n % max(1, int(rate)) == 0:
                bar.set_postfix(result.by_class(), refresh=False)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", required=True, help="the gateway's base URL")
    parser.add_argument("--api-key", default=os.environ.get("SHOP_API_KEY"),
                        help="an API key the gateway knows (default: SHOP_API_KEY)")  # fmt: skip
    parser.add_argument("--rate", type=float, default=5.0, help="requests a second (default 5)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (for logs that are not a terminal)")
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("--api-key or SHOP_API_KEY is required")
    print(run_load(args.gateway, args.api_key, args.rate, args.duration, progress=not args.no_progress).summary())


if __name__ == "__main__":
    main()
