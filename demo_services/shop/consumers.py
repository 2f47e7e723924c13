"""The asynchronous side of the shop: consumers of order events from RabbitMQ, one process each.

- ``notifications``: every order event (``order.*``, a work queue with two competing consumers) becomes an email.
- ``cashback``: 2 % of each confirmed order is credited to the customer (not needed to complete an order: when
  this consumer is down, orders still complete and its queue grows).
- ``receipts``: a Lambda handler (``receipts.handler``) run locally: each message becomes the SQS event AWS would
  deliver, with the trace context in its attributes, and is handed to the same ``@otel_kit.lambda_handler``.

``python -m demo_services.shop.consumers notifications|cashback|receipts``.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
import uuid
from types import SimpleNamespace
from typing import Any

from opentelemetry import metrics, propagate

import otel_kit
from demo_services.shop.common import PoisonMessage, consume, setting
from demo_services.shop.receipts import handler as receipts_handler

log = logging.getLogger("shop.consumers")


def notifications(event: dict[str, Any], routing_key: str) -> None:
    time.sleep(0.005)  # the mail relay
    log.info("email sent", extra={"order_id": event["order_id"], "event": routing_key, "status": event.get("status")})


_credited = metrics.get_meter("shop.cashback").create_counter(
    "shop.cashback.credited", unit="{order}", description="Confirmed orders credited with cashback."
)


def cashback(event: dict[str, Any], _routing_key: str) -> None:
    if not isinstance(event.get("amount"), (int, float)) or not isinstance(event.get("customer_id"), str):
        raise PoisonMessage("an order.confirmed event needs a numeric amount and a customer_id")
    credit = round(event["amount"] * 0.02, 2)
    _credited.add(1)
    log.info("cashback credited", extra={"order_id": event["order_id"], "customer_id": event["customer_id"],
                                         "credit": credit})  # fmt: skip


def receipts(event: dict[str, Any], _routing_key: str) -> None:
    """Hand the message to the Lambda handler as the SQS event AWS would deliver."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)  # the consumer span's context, as an SQS message carries its sender's
    record = {
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:eu-west-1:000000000000:receipts",
        "messageId": str(uuid.uuid4()),
        "body": json.dumps(event),
        "attributes": {"AWSTraceHeader": carrier.get("X-Amzn-Trace-Id", "")},
        "messageAttributes": {k: {"stringValue": v, "dataType": "String"} for k, v in carrier.items()},
    }
    arn = "arn:aws:lambda:eu-west-1:000000000000:function:receipts"
    context = SimpleNamespace(aws_request_id=str(uuid.uuid4()), function_name="receipts", invoked_function_arn=arn)
    receipts_handler({"Records": [record]}, context)


CONSUMERS = {"notifications": (notifications, 2), "cashback": (cashback, 1), "receipts": (receipts, 1)}


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    if name not in CONSUMERS:
        raise SystemExit(f"usage: python -m demo_services.shop.consumers {{{','.join(CONSUMERS)}}}")
    otel_kit.init(name)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    handle, consumers = CONSUMERS[name]
    consume(setting("AMQP_URL"), name, handle, consumers=consumers, stop=stop)
    otel_kit.shutdown()


if __name__ == "__main__":
    main()
