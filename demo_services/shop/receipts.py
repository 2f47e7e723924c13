"""receipts: an AWS Lambda function that writes a receipt for each confirmed order.

Deployed (``demo_services/sam/template.yaml``), AWS invokes ``handler`` with SQS batches from the receipts queue,
with ``order.confirmed`` events from EventBridge, and with ``GET /receipts/{order_id}`` from an HTTP API; locally,
``consumers receipts`` invokes it with the SQS event shape. ``@otel_kit.lambda_handler`` takes the trace context
and correlation id from the event, marks cold starts and flushes telemetry before returning.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from opentelemetry import metrics

import otel_kit

log = logging.getLogger("receipts")


def _written() -> Any:
    return metrics.get_meter("shop.receipts").create_counter(
        "shop.receipts.written", unit="{receipt}", description="Receipts written, by trigger."
    )


def _write(order: dict[str, Any], trigger: str) -> str:
    receipt = f"receipt-{order['order_id']}"
    _written().add(1, {"trigger": trigger})
    log.info("receipt written", extra={"order_id": order["order_id"], "receipt": receipt, "trigger": trigger})
    return receipt


@otel_kit.lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if "requestContext" in event:  # HTTP API: GET /receipts/{order_id}
        order_id = (event.get("pathParameters") or {}).get("order_id")
        if not order_id:
            return {"statusCode": 400, "body": json.dumps({"error": "order_id is required"})}
        return {"statusCode": 200, "body": json.dumps({"receipt": f"receipt-{order_id}"})}
    if "detail-type" in event:  # EventBridge: one order.confirmed event
        return {"receipt": _write(event.get("detail") or {}, "eventbridge")}
    failures = []
    for record in event.get("Records", []):  # SQS: a batch; report the records that failed, keep the rest
        try:
            _write(json.loads(record["body"]), "sqs")
        except (KeyError, TypeError, json.JSONDecodeError) as err:
            log.error("unreadable order event", extra={"message_id": record.get("messageId"), "error": str(err)})
            failures.append({"itemIdentifier": record.get("messageId")})
    return {"batchItemFailures": failures}  # SQS partial batch response
