"""API10:2023 Unsafe Consumption of APIs.

Settlement consumes another system's output: the matching engine's events on the `engine-events`
topic. The hash chain proves order and completeness, not authorship: it has no key, so whoever can
write to the topic can append the next sequence number with a correctly recomputed hash. Settlement
must therefore check every event against the orders PostgreSQL holds before it moves money.

This runs the whole exchange as real processes and publishes the forgery to the real topic.
"""

import dataclasses
from decimal import Decimal

import pytest
from kafka import KafkaProducer

from matching import schemas
from matching.engine import canonical, chain_hash, event_from_dict
from tests.e2e.harness import Exchange, eventually

pytestmark = pytest.mark.e2e

# A market of its own: the forgery stops it, and the other tests share the running exchange.
MARKET = "API10_USDT"


def cursor(exchange: Exchange) -> tuple[int, int, str, str]:
    rows = exchange.query(
        "SELECT seq, received_seq, hash, status FROM settlement_settlementcursor WHERE market = %s", MARKET
    )
    return rows[0] if rows else (0, 0, "", "")


def test_a_forged_rechained_trade_on_the_events_topic_moves_nothing_and_stops_the_market(exchange: Exchange):
    exchange.manage(
        "shell",
        "-c",
        "from decimal import Decimal as D\n"
        "from accounts.models import Asset\n"
        "from matching.services import market_create\n"
        f"market_create(symbol={MARKET!r}, base=Asset.objects.get(pk='BTC'), quote=Asset.objects.get(pk='USDT'), "
        "tick_size=D('0.01'), lot_size=D('0.00001'), min_notional=D('10'))",
    )
    victim, attacker = exchange.register("victim"), exchange.register("attacker")
    victim.deposit("BTC", "1")
    attacker.deposit("USDT", "100")
    sell = victim.order(symbol=MARKET, side="Sell", order_type="Limit", price="50000", quantity="0.01")
    assert sell.status_code == 201, sell.text
    buy = attacker.order(symbol=MARKET, side="Buy", order_type="Limit", price="1000", quantity="0.01")
    assert buy.status_code == 201, buy.text
    sell, buy = victim.wait_status(sell.json()["id"], "open"), attacker.wait_status(buy.json()["id"], "open")

    def quiet() -> tuple[int, str] | None:
        # market_added and two acceptances, plus one chained duplicate rejection per copy the relay
        # sent of an order the engine was slow to answer: all settled, nothing more to come.
        resends = exchange.query(
            "SELECT COALESCE(SUM(resends), 0) FROM matching_order WHERE id = ANY(%s)", [sell["id"], buy["id"]]
        )[0][0]
        seq, received, digest, status = cursor(exchange)
        return (seq, digest) if status == "ok" and seq == received == 3 + resends else None

    seq, last = eventually(quiet, timeout=60, what="the market's events to settle")
    before = (victim.balances(), attacker.balances(), victim.get_order(sell["id"]), attacker.get_order(buy["id"]))

    # The victim's resting sell, filled at one tick (0.01 USDT per BTC) by the attacker's bid.
    unsigned = event_from_dict(
        {
            "type": "trade",
            "market": MARKET,
            "seq": seq + 1,
            "ts": 1,
            "maker_order_id": sell["id"],
            "maker_user_id": victim.id,
            "taker_order_id": buy["id"],
            "taker_user_id": attacker.id,
            "taker_side": "buy",
            "price": 1,
            "quantity": 1000,
            "maker_remaining": 0,
            "taker_remaining": 0,
            "taker_remaining_quote": None,
        },
        "0" * 64,
    )
    forged = dataclasses.replace(unsigned, hash=chain_hash(last, canonical(unsigned)))
    producer = KafkaProducer(bootstrap_servers=exchange.kafka_servers)
    try:
        producer.send(exchange.topic("engine-events"), key=MARKET.encode(), value=schemas.encode_event(forged)).get(
            timeout=10
        )
    finally:
        producer.close()

    settled_seq, _, _, status = eventually(
        lambda: c if (c := cursor(exchange))[0] > seq or c[3] != "ok" else None,
        timeout=60,
        what="settlement to take up the forged event",
    )
    assert (status, settled_seq) == ("inconsistent", seq)
    alerts = exchange.query(
        "SELECT kind, message FROM settlement_alert WHERE market = %s AND resolved_at IS NULL", MARKET
    )
    assert len(alerts) == 1, alerts
    kind, message = alerts[0]
    assert kind == "failed_check"
    assert f"#{forged.seq} (trade)" in message and "maker's price" in message, message

    assert exchange.query("SELECT count(*) FROM settlement_trade WHERE market_id = %s", MARKET) == [(0,)]
    after = (victim.balances(), attacker.balances(), victim.get_order(sell["id"]), attacker.get_order(buy["id"]))
    assert after == before
    assert before[0]["BTC"] == (Decimal("0.99"), Decimal("0.01"))
