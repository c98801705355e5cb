"""Every Kafka topic the exchange uses. Names get the deployment's prefix from settings."""

from django.conf import settings

ORDERS = "orders"
"""Commands for the matching engine (new order, cancel, market control); key = market symbol."""

ENGINE_EVENTS = "engine-events"
"""What the engine did, sequence-numbered and hash-chained per market; key = market symbol."""

ALL = (ORDERS, ENGINE_EVENTS)


def name(topic: str) -> str:
    return f"{settings.KAFKA['TOPIC_PREFIX']}{topic}"


def partitions(topic: str) -> int:
    return settings.KAFKA["PARTITIONS"][topic]
