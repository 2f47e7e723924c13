"""receipts: an AWS Lambda function that writes a receipt for each confirmed order (SQS-triggered).

Deployed, AWS invokes ``handler`` with SQS events; locally, ``consumers receipts`` invokes it with the same event
shape. ``@otel_kit.lambda_handler`` takes the trace context and correlation id from the record, marks cold starts
and flushes telemetry before returning.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import otel_kit

log = logging.getLogger("receipts")


@otel_kit.lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    failures = []
    for record in event.get("Records", []):
        try:
            order = json.loads(record["body"])
            receipt = f"receipt-{order['order_id']}"
        except (KeyError, TypeError, json.JSONDecodeError) as err:
            log.error("unreadable order event", extra={"message_id": record.get("messageId"), "error": str(err)})
            failures.append({"itemIdentifier": record.get("messageId")})
            continue
        log.info("receipt written", extra={"order_id": order["order_id"], "receipt": receipt,
                                           "request_id": getattr(context, "aws_request_id", None)})  # fmt: skip
    return {"batchItemFailures": failures}  # SQS partial batch response
