"""Every Kafka message type through its wire format, in memory and across the real broker.

The system this one replaces lost every settlement to a serializer that could not read what the
engine wrote; these tests make the reader and the writer meet on every message type.
"""

import json
import uuid

import pytest
from kafka import TopicPartition

from core.kafka import client
from matching import schemas
from matching.engine import (
    COMMAND_TYPES,
    EVENT_TYPES,
    AddMarket,
    CancelAll,
    CancelOrder,
    Engine,
    HaltMarket,
    NewOrder,
    ResumeMarket,
    canonical,
    chain_hash,
)


def new(order_id: int, user_id: int, side: str, price: int | None, quantity: int | None, **extra) -> NewOrder:
    fields = {
        "market": "BTC_USDT",
        "order_id": order_id,
        "user_id": user_id,
        "side": side,
        "order_type": "limit",
        "price": price,
        "quantity": quantity,
        "quote_quantity": None,
        "time_in_force": "GTC",
        "post_only": False,
        "stp": "cancel_incoming",
        "ts": 1_700_000_000_000 + order_id,
    }
    fields.update(extra)
    return NewOrder(**fields)


COMMANDS = [
    AddMarket(market="BTC_USDT", ts=1),
    new(1, 10, "sell", 5_000_000, 1_000),
    new(2, 11, "buy", 5_000_000, 400),
    new(3, 11, "buy", None, None, order_type="market", quote_quantity=3_000_000_000, time_in_force="IOC"),
    new(4, 12, "sell", None, 50, order_type="market", time_in_force="IOC"),
    new(5, 10, "buy", 4_900_000, 10, post_only=True, stp="cancel_both"),
    CancelOrder(market="BTC_USDT", order_id=5, user_id=10, ts=9),
    CancelOrder(market="BTC_USDT", order_id=999, user_id=10, ts=10),
    new(1, 10, "sell", 5_000_000, 1_000),
    HaltMarket(market="BTC_USDT", ts=11),
    new(6, 10, "sell", 5_000_000, 1_000),
    ResumeMarket(market="BTC_USDT", ts=12),
    new(7, 12, "buy", 4_000_000, 100, time_in_force="FOK"),
    CancelAll(market="BTC_USDT", user_id=10, ts=13),
    new(8, 12, "buy", 100, 1, market="NOPE_USDT"),
]


def all_events():
    engine = Engine()
    return [event for command in COMMANDS for event in engine.apply(command)]


def test_the_samples_cover_every_command_and_event_type():
    assert {c.to_dict()["type"] for c in COMMANDS} == set(COMMAND_TYPES)
    assert {e.to_dict()["type"] for e in all_events()} == set(EVENT_TYPES)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.to_dict()["type"])
def test_every_command_round_trips_through_its_wire_format(command):
    raw = schemas.encode_command(command)
    assert json.loads(raw)["v"] == schemas.VERSION
    assert schemas.decode_command(raw) == command


def test_every_event_round_trips_and_still_verifies_its_hash():
    previous: dict[str, str] = {}
    for event in all_events():
        decoded = schemas.decode_event(schemas.encode_event(event))
        assert decoded == event
        assert canonical(decoded) == canonical(event)
        if event.seq:
            prev = previous.get(event.market, "0" * 64)
            assert chain_hash(prev, canonical(decoded)) == decoded.hash
            previous[event.market] = decoded.hash


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'{"v": 2, "type": "new"}',
        b'{"type": "cancel"}',
        b'{"v": 1, "type": "explode"}',
        b'{"v": 1, "type": "cancel", "market": "BTC_USDT", "order_id": "7", "user_id": 1, "ts": 1}',
        b'{"v": 1, "type": "new", "market": "BTC_USDT"}',
        None,
    ],
)
def test_a_command_this_version_cannot_read_is_a_schema_error(raw):
    with pytest.raises(schemas.SchemaError):
        schemas.decode_command(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"v": 1, "hash": "00", "event": []}',
        b'{"v": 1, "event": {"type": "done"}}',
        b'{"v": 1, "hash": "' + b"0" * 64 + b'", "event": {"type": "trade", "market": "X", "seq": 1}}',
    ],
)
def test_an_event_this_version_cannot_read_is_a_schema_error(raw):
    with pytest.raises(schemas.SchemaError):
        schemas.decode_event(raw)


@pytest.mark.services
def test_every_message_type_crosses_the_real_broker_intact():
    topic = f"wire-{uuid.uuid4().hex[:8]}"
    admin = client.admin()
    try:
        from kafka.admin import NewTopic

        admin.create_topics([NewTopic(topic, 1, 1)])
        commands = [schemas.encode_command(c) for c in COMMANDS]
        events = [schemas.encode_event(e) for e in all_events()]
        producer = client.producer()
        for value in commands + events:
            producer.send(topic, key=b"BTC_USDT", value=value)
        producer.flush(timeout=10)

        consumer = client.consumer(auto_offset_reset="earliest", consumer_timeout_ms=5000)
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        received = [record.value for record in consumer][: len(commands) + len(events)]
        consumer.close()

        assert [schemas.decode_command(v) for v in received[: len(commands)]] == COMMANDS
        assert [schemas.decode_event(v) for v in received[len(commands) :]] == all_events()
    finally:
        admin.delete_topics([topic])
        admin.close()
