"""The demo's aws report names each node of a trace read back from X-Ray as the lgtm report names its span.

The documents are shaped as the collector's X-Ray exporter (v0.152.0) and the X-Ray SDK write them, as
``tests/test_xray_sdk.py`` reads them back from X-Ray."""

from __future__ import annotations

from typing import Any

from demo_services.shop.stack import xray_to_spans

TRACE = "1-6b173f8f-54a4965327fb57ccbd83b906"


def _doc(**fields: Any) -> dict[str, Any]:
    return {"trace_id": TRACE, "id": "7349ef2b2895d2d8", "start_time": 1.0, "end_time": 1.5, **fields}


def _messaging(operation: str, kind: str) -> dict[str, Any]:
    """A segment's metadata as the X-Ray exporter writes a messaging span's attributes."""
    attributes = {"messaging.operation.name": operation, "messaging.operation.type": kind}
    return {"default": {**attributes, "messaging.destination.name": "shop.orders"}}


def _one(doc: dict[str, Any], parent: str = "") -> tuple[str, str, str, dict[str, Any]]:
    ((service, span),) = xray_to_spans(doc, parent)
    return service, span["name"], span["kind"], span["status"]


def test_a_server_segment_is_named_by_method_and_route() -> None:
    doc = _doc(
        name="gateway",
        annotations={"service": "gateway", "correlation_id": "c-1"},
        http={"request": {"method": "POST", "url": "http://127.0.0.1:8080/orders"}, "response": {"status": 201}},
        metadata={"default": {"http.route": "/orders"}},
    )
    assert _one(doc) == ("gateway", "POST /orders", "SPAN_KIND_SERVER", {})


def test_clients_are_named_by_method_and_path_sql_by_operation_queues_by_operation_and_destination() -> None:
    http = _doc(
        name="GET",
        type="subsegment",
        namespace="remote",
        annotations={"service": "orders"},
        http={"request": {"method": "GET", "url": "http://127.0.0.1:8082/products/book-1?x=1"}},
    )
    assert _one(http, "aaaaaaaaaaaaaaaa")[1:3] == ("GET /products/book-1", "SPAN_KIND_CLIENT")
    sql = _doc(
        name="inventory@127.0.0.1",
        type="subsegment",
        namespace="remote",
        annotations={"service": "inventory"},
        sql={"sanitized_query": "select sku, qty from products where sku = %s", "database_type": "postgresql"},
    )
    assert _one(sql, "aaaaaaaaaaaaaaaa")[1:3] == ("SELECT", "SPAN_KIND_CLIENT")
    publish = _doc(
        name="publish shop.orders",
        type="subsegment",
        annotations={"service": "orders"},
        metadata=_messaging("publish", "send"),
    )
    assert _one(publish, "aaaaaaaaaaaaaaaa")[1:3] == ("publish shop.orders", "SPAN_KIND_PRODUCER")
    process = _doc(name="cashback", annotations={"service": "cashback"}, metadata=_messaging("process", "process"))
    assert _one(process)[1:3] == ("process shop.orders", "SPAN_KIND_CONSUMER")


def test_an_error_is_described_by_its_cause_or_its_status() -> None:
    caused = _doc(
        name="payments",
        fault=True,
        http={"request": {"method": "POST"}, "response": {"status": 500}},
        metadata={"default": {"http.route": "/charges"}},
        cause={"exceptions": [{"id": "e1", "type": "ProviderDown", "message": "card provider timed out"}]},
    )
    assert _one(caused)[1:] == (
        "POST /charges",
        "SPAN_KIND_SERVER",
        {"code": "STATUS_CODE_ERROR", "message": "ProviderDown: card provider timed out"},
    )
    fault = _doc(name="payments", fault=True, http={"request": {"method": "POST"}, "response": {"status": 503}})
    assert _one(fault)[3] == {"code": "STATUS_CODE_ERROR", "message": "HTTP status 503"}
    # X-Ray flags a 4xx answer as an error; OpenTelemetry does not fail a server span for it, nor does the report
    declined = _doc(name="payments", error=True, http={"request": {"method": "POST"}, "response": {"status": 402}})
    assert _one(declined)[3] == {}


def test_nested_subsegments_keep_the_service_and_their_parent() -> None:
    doc = _doc(
        name="pricing",
        annotations={"service": "pricing"},
        http={"request": {"method": "GET", "url": "http://x/price/1"}},
        subsegments=[
            {
                "id": "c2a45ba5081b1d77",
                "name": "127.0.0.1",
                "namespace": "remote",
                "start_time": 1.1,
                "end_time": 1.2,
                "http": {"request": {"method": "get", "url": "http://127.0.0.1:5/ping"}},
            }
        ],
    )
    (service, root), (child_service, child) = xray_to_spans(doc)
    assert (service, root["name"], child_service, child["name"], child["kind"]) == (
        "pricing",
        "GET /price/1",
        "pricing",
        "GET /ping",
        "SPAN_KIND_CLIENT",
    )
    assert child["parentSpanId"] == root["spanId"]
