"""The demo shop: seven instrumented services that place orders through a saga, over HTTP and RabbitMQ.

    client -> gateway -> orders --HTTP--> inventory (PostgreSQL)
                                --HTTP--> payments (PostgreSQL) -> card provider (simulated, slow and flaky)
                                --outbox--> RabbitMQ topic exchange "shop.orders"
                                              order.*          -> queue notifications (work queue, 2 consumers)
                                              order.confirmed  -> fanout "shop.orders.confirmed"
                                                                    -> queue cashback  (cashback service)
                                                                    -> queue receipts  (a Lambda handler)
                                              rejected poison messages -> "shop.dead-letters" -> queue dead-letters

Every service is instrumented only through ``otel_kit``. ``python -m demo_services.shop`` (``./run demo``) starts
the whole stack with the collector and drives load; see ``stack.py``.
"""
