"""Settlement of real engine output into PostgreSQL, without Kafka in between: the engine core's
events go through their wire format into the inbox and out through `market_settle`."""

import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Account, LedgerLine
from matching import schemas
from matching.engine import AddMarket, CancelOrder, Engine
from matching.models import Order, OutboxMessage
from matching.services import order_cancel
from settlement import services as settlement_services
from settlement import tasks as settlement_tasks
from settlement.models import Alert, ConsumerOffset, EngineEvent, SettlementCursor, Trade
from settlement.services import ReceivedMessage, events_ingest, market_settle
from tests.unit.conftest import balance, place

pytestmark = pytest.mark.django_db


def assert_ledger_balanced() -> None:
    for account in Account.objects.all():
        lines = sum((line.amount for line in LedgerLine.objects.filter(account=account)), Decimal(0))
        assert lines == account.balance, account
    for asset in ("BTC", "USDT"):
        assert sum((line.amount for line in LedgerLine.objects.filter(asset=asset)), Decimal(0)) == 0


def test_a_crossing_pair_settles_into_one_trade_with_fees_from_the_asset_received(pipeline, alice, bob):
    sell = place(alice, "sell", "sell", "50000", "0.01")
    buy = place(bob, "buy", "buy", "50000", "0.01")
    pipeline.run()

    trade = Trade.objects.get()
    assert (trade.price, trade.quantity, trade.quote_amount) == (Decimal("50000"), Decimal("0.01"), Decimal("500"))
    assert (trade.buyer, trade.seller, trade.taker_side) == (bob, alice, "buy")
    # Maker (the resting sell) pays 0.1% of the USDT it receives, the taker 0.2% of the BTC.
    assert (trade.seller_fee, trade.buyer_fee) == (Decimal("0.5"), Decimal("0.00002"))
    sell.refresh_from_db()
    buy.refresh_from_db()
    assert (sell.status, buy.status) == ("filled", "filled")
    assert (sell.locked, buy.locked) == (0, 0)
    assert balance(alice, "BTC") == Decimal("0.99")
    assert balance(alice, "USDT") == Decimal("499.5")
    assert balance(bob, "BTC") == Decimal("0.00998")
    assert balance(bob, "USDT") == Decimal("500")
    for user in (alice, bob):
        assert balance(user, "BTC", "locked") == balance(user, "USDT", "locked") == 0
    fees = {a.asset_id: a.balance for a in Account.objects.filter(kind="fees")}
    assert fees == {"BTC": Decimal("0.00002"), "USDT": Decimal("0.5")}
    assert_ledger_balanced()


def test_a_buyer_who_bid_above_the_resting_price_gets_the_difference_back(pipeline, alice, bob):
    place(alice, "sell", "sell", "40000", "0.01")
    buy = place(bob, "buy", "buy", "50000", "0.01")
    pipeline.run()
    buy.refresh_from_db()
    assert buy.status == "filled"
    assert Trade.objects.get().price == Decimal("40000")
    assert balance(bob, "USDT") == Decimal("600")
    assert balance(bob, "USDT", "locked") == 0
    assert_ledger_balanced()


def test_a_partial_fill_keeps_the_rest_locked_at_the_limit_price(pipeline, alice, bob):
    place(alice, "sell", "sell", "50000", "0.004")
    buy = place(bob, "buy", "buy", "50000", "0.01")
    pipeline.run()
    buy.refresh_from_db()
    assert (buy.status, buy.filled, buy.locked) == ("partially_filled", Decimal("0.004"), Decimal("300"))
    assert balance(bob, "USDT", "locked") == Decimal("300")
    assert_ledger_balanced()


def test_the_same_user_on_both_sides_does_not_trade(pipeline, make_user, fund):
    carol = make_user(username="carol")
    fund(carol, "BTC", "1")
    fund(carol, "USDT", "1000")
    sell = place(carol, "sell", "sell", "50000", "0.01")
    buy = place(carol, "buy", "buy", "50000", "0.01")
    pipeline.run()

    assert not Trade.objects.exists()
    sell.refresh_from_db()
    buy.refresh_from_db()
    assert (sell.status, buy.status, buy.reason) == ("open", "cancelled", "self_trade")
    assert balance(carol, "USDT") == Decimal("1000")
    assert balance(carol, "BTC", "locked") == Decimal("0.01")
    assert_ledger_balanced()


def test_a_cancel_through_the_engine_releases_the_funds(pipeline, bob):
    buy = place(bob, "buy", "buy", "50000", "0.01")
    pipeline.run()
    order_cancel(user=bob, order_id=buy.pk)
    pipeline.run()
    buy.refresh_from_db()
    assert (buy.status, buy.reason, buy.locked) == ("cancelled", "user", 0)
    assert balance(bob, "USDT") == Decimal("1000")
    assert_ledger_balanced()


def test_every_event_delivered_twice_changes_nothing_the_second_time(pipeline, alice, bob):
    place(alice, "sell", "sell", "50000", "0.01")
    place(bob, "buy", "buy", "50000", "0.01")
    pipeline.feed_outbox()
    emitted = pipeline.emitted
    pipeline.deliver(emitted)
    pipeline.settle()
    before = (list(Account.objects.values_list("id", "balance")), Trade.objects.count(), LedgerLine.objects.count())

    pipeline.deliver(emitted)
    pipeline.deliver(list(reversed(emitted)))
    assert pipeline.settle() == 0

    after = (list(Account.objects.values_list("id", "balance")), Trade.objects.count(), LedgerLine.objects.count())
    assert after == before
    assert EngineEvent.objects.count() == len(emitted)


def test_events_arriving_out_of_order_wait_for_the_gap_and_then_settle(pipeline, alice, bob):
    place(alice, "sell", "sell", "50000", "0.01")
    place(bob, "buy", "buy", "50000", "0.01")
    pipeline.feed_outbox()
    first, rest = pipeline.emitted[:2], pipeline.emitted[2:]

    pipeline.deliver(rest)
    assert pipeline.settle() == 0
    assert not Trade.objects.exists()

    pipeline.deliver(first)
    assert pipeline.settle() == len(first) + len(rest)
    assert Trade.objects.count() == 1


def test_a_gap_that_stays_open_raises_an_alert_and_settles_nothing_past_it(pipeline, alice, bob, settings):
    settings.SETTLEMENT_GAP_ALERT_SECONDS = 0
    place(alice, "sell", "sell", "50000", "0.01")
    place(bob, "buy", "buy", "50000", "0.01")
    pipeline.feed_outbox()
    pipeline.deliver(pipeline.emitted[:1] + pipeline.emitted[2:])

    assert pipeline.settle() == 1
    assert SettlementCursor.objects.get().status == "gap"
    assert Alert.objects.get().kind == "sequence_gap"
    assert not Trade.objects.exists()


def test_an_event_that_breaks_the_hash_chain_stops_the_market(pipeline, alice, bob):
    place(alice, "sell", "sell", "50000", "0.01")
    place(bob, "buy", "buy", "50000", "0.01")
    pipeline.feed_outbox()
    forged = []
    for raw in pipeline.emitted:
        event = schemas.decode_event(raw)
        if event.to_dict()["type"] == "trade":
            event = dataclasses.replace(event, price=event.price - 100_000)  # same hash, other content
        forged.append(schemas.encode_event(event))
    pipeline.deliver(forged)
    pipeline.settle()

    assert SettlementCursor.objects.get().status == "broken_chain"
    assert Alert.objects.filter(kind="broken_chain").exists()
    assert not Trade.objects.exists()


def test_a_resent_event_with_a_different_hash_is_reported(pipeline, alice):
    place(alice, "sell", "sell", "50000", "0.01")
    pipeline.feed_outbox()
    pipeline.deliver(pipeline.emitted)
    body = json.loads(pipeline.emitted[-1])
    body["hash"] = "f" * 64
    pipeline.deliver([json.dumps(body).encode()])
    assert Alert.objects.get().kind == "divergent_event"


def test_an_unreadable_message_is_reported_and_skipped(pipeline, alice):
    pipeline.deliver([b"\x00not json"])
    assert Alert.objects.get().kind == "bad_message"


def test_a_duplicate_order_copy_does_not_reject_the_original(pipeline, bob):
    buy = place(bob, "buy", "buy", "50000", "0.01")
    command = schemas.decode_command(bytes(OutboxMessage.objects.get().payload))
    pipeline.feed_outbox()
    pipeline.feed(command)  # the relay sent it again
    pipeline.run()
    buy.refresh_from_db()
    assert buy.status == "open"
    assert balance(bob, "USDT", "locked") == Decimal("500")


def test_a_cancel_that_overtakes_its_order_still_cancels_it(pipeline, bob):
    buy = place(bob, "buy", "buy", "50000", "0.01")
    new_order = schemas.decode_command(bytes(OutboxMessage.objects.get().payload))
    OutboxMessage.objects.all().delete()
    pipeline.feed(CancelOrder(market="BTC_USDT", order_id=buy.pk, user_id=bob.pk, ts=1))
    pipeline.feed(new_order)
    pipeline.run()
    buy.refresh_from_db()
    assert (buy.status, buy.locked) == ("cancelled", 0)
    assert balance(bob, "USDT") == Decimal("1000")


def test_an_event_for_an_order_the_database_lacks_stops_the_market_before_it(pipeline, alice, bob):
    place(alice, "sell", "sell", "50000", "0.01")
    pipeline.feed_outbox()
    pipeline.feed(schemas.decode_command(schemas.encode_command(order_for_nobody())))
    pipeline.deliver(pipeline.emitted)
    settled = pipeline.settle()

    cursor = SettlementCursor.objects.get()
    assert cursor.status == "inconsistent"
    assert settled == cursor.seq == len(pipeline.emitted) - 1  # everything before the stranger's event
    assert Alert.objects.get().kind == "unknown_reference"
    assert Order.objects.get().status == "open"


def test_events_of_a_market_the_database_lacks_settle_nothing(pipeline, alice):
    from matching.engine import AddMarket

    pipeline.feed(AddMarket(market="GHOST_USDT", ts=1))
    pipeline.deliver(pipeline.emitted)
    assert market_settle(market="GHOST_USDT") == 0
    assert SettlementCursor.objects.get(market="GHOST_USDT").status == "inconsistent"
    assert "no market GHOST_USDT" in Alert.objects.get().message


def order_for_nobody():
    from matching.engine import NewOrder

    return NewOrder(
        market="BTC_USDT",
        order_id=987_654,
        user_id=999,
        side="buy",
        order_type="limit",
        price=4_000_000,
        quantity=100,
        quote_quantity=None,
        time_in_force="GTC",
        post_only=False,
        stp="cancel_incoming",
        ts=1,
    )


# Statements one `market_settle` batch runs, however many events, trades, orders and accounts it
# holds: lock the market, read its cursor, read the events, read the market, lock the orders, open and lock the
# accounts (two), the balances, the ledger entries, the ledger lines, the trades, the orders, the
# events settled and the cursor, plus the savepoint and its release that the test's transaction adds.
SETTLE_BATCH_STATEMENTS = 16
# And one `events_ingest` of a Kafka batch, however many messages, markets and partitions: look up
# what the inbox holds, store the new events, raise the markets' received sequence, store the
# offsets, and two for the alerts of whatever was unreadable; plus the savepoint and its release.
INGEST_BATCH_STATEMENTS = 8


def crossing_trades(pipeline, make_user, fund, *, pairs: int, prefix: str) -> None:
    """`pairs` crossing pairs between traders of their own (new accounts for settlement to open),
    with a buy priced above the sell (its lock partly refunded), a partial fill and a cancel among
    them, fed through the engine and delivered to the inbox."""
    sellers, buyers = [], []
    for i in range(max(pairs // 2, 2)):
        seller, buyer = make_user(username=f"{prefix}seller{i}"), make_user(username=f"{prefix}buyer{i}")
        fund(seller, "BTC", "1")
        fund(buyer, "USDT", "100000")
        sellers.append(seller)
        buyers.append(buyer)
    for i in range(pairs):
        seller, buyer = sellers[i % len(sellers)], buyers[i % len(buyers)]
        place(seller, f"s{i}", "sell", "50000", "0.01")
        place(buyer, f"b{i}", "buy", "50001" if i % 3 else "50000", "0.02" if i == 0 else "0.01")
    resting = place(buyers[-1], "resting", "buy", "40000", "0.01")
    pipeline.feed_outbox()
    order_cancel(user=buyers[-1], order_id=resting.pk)
    pipeline.feed_outbox()
    pipeline.deliver(pipeline.emitted)


def settle_batch_statements(pipeline) -> int:
    with CaptureQueriesContext(connection) as queries:
        applied = market_settle(market=pipeline.market, limit=100_000)
    assert applied == len(pipeline.emitted)
    assert Trade.objects.exists()
    assert_ledger_balanced()
    return len(queries)


def test_a_settlement_batch_runs_the_same_statements_for_ten_times_the_events(pipeline, make_user, fund):
    crossing_trades(pipeline, make_user, fund, pairs=3, prefix="small")
    small_events = len(pipeline.emitted)
    small = settle_batch_statements(pipeline)

    pipeline.emitted = []
    crossing_trades(pipeline, make_user, fund, pairs=40, prefix="large")
    large = settle_batch_statements(pipeline)

    assert len(pipeline.emitted) >= 10 * small_events
    assert small == large <= SETTLE_BATCH_STATEMENTS


def test_settling_a_crossing_pair_stays_within_the_batch_statement_budget(pipeline, alice, bob):
    place(alice, "sell", "sell", "50000", "0.01")
    place(bob, "buy", "buy", "50000", "0.01")
    pipeline.feed_outbox()
    pipeline.deliver(pipeline.emitted)
    with CaptureQueriesContext(connection) as queries:
        assert market_settle(market="BTC_USDT") == 6
    assert len(queries) <= SETTLE_BATCH_STATEMENTS


def prepared_executions() -> int:
    """How many times this connection has run a statement PostgreSQL holds prepared."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(sum(generic_plans + custom_plans), 0) FROM pg_prepared_statements")
        return cursor.fetchone()[0]


def test_every_statement_of_a_settlement_batch_runs_prepared(pipeline, alice, bob):
    # A statement built by the ORM is parsed and planned by PostgreSQL on every batch; settlement's
    # statements are fixed text, prepared once per connection (`core.sql.cursor`).
    place(alice, "sell", "sell", "50000", "0.01")
    place(bob, "buy", "buy", "50000", "0.01")
    pipeline.feed_outbox()
    pipeline.deliver(pipeline.emitted)
    before = prepared_executions()
    with CaptureQueriesContext(connection) as queries:
        assert market_settle(market="BTC_USDT") == 6
    statements = [q["sql"] for q in queries if "SAVEPOINT" not in q["sql"]]
    assert len(statements) >= 10
    assert prepared_executions() - before == len(statements), statements


def engine_output(markets: int, orders_per_market: int) -> list[bytes]:
    """What the engine emits for crossing orders in several markets (settlement's checks play no
    part in storing them)."""
    engine = Engine()
    raw = []
    for m in range(markets):
        market = f"M{m}_USDT"
        raw += [schemas.encode_event(e) for e in engine.apply(AddMarket(market=market, ts=0))]
        for i in range(orders_per_market):
            side = "sell" if i % 2 else "buy"
            command = dataclasses.replace(order_for_nobody(), market=market, order_id=m * 10_000 + i, side=side)
            raw += [schemas.encode_event(e) for e in engine.apply(command)]
    return raw


def ingest_statements(raw: list[bytes], partitions: int, first_offset: int) -> int:
    messages = [
        ReceivedMessage(partition=i % partitions, offset=first_offset + i, value=value) for i, value in enumerate(raw)
    ]
    with CaptureQueriesContext(connection) as queries:
        events_ingest(topic="ingest-under-test", messages=messages)
    return len(queries)


def test_storing_a_kafka_batch_runs_the_same_statements_for_ten_times_the_messages():
    # Each batch: events new and already stored, several markets and partitions, one unreadable message.
    small_raw = engine_output(markets=2, orders_per_market=4)
    small = ingest_statements([*small_raw, b"not json", *small_raw[:3]], partitions=2, first_offset=0)
    large_raw = engine_output(markets=10, orders_per_market=20)
    large = ingest_statements([*large_raw, b"\x00", *large_raw[:30]], partitions=10, first_offset=1000)

    assert len(large_raw) >= 10 * len(small_raw)
    assert small == large <= INGEST_BATCH_STATEMENTS
    assert EngineEvent.objects.count() == len({*small_raw, *large_raw})
    assert SettlementCursor.objects.count() == 10
    assert ConsumerOffset.objects.filter(topic="ingest-under-test").count() == 10
    assert Alert.objects.filter(kind="bad_message").count() == 2


@contextlib.contextmanager
def settlement_held_at(monkeypatch, name: str) -> Iterator[None]:
    """A `market_settle` running on another thread and connection, held inside
    `settlement.services.<name>` (in the middle of its transaction) for the block."""
    in_batch, release = threading.Event(), threading.Event()
    held = getattr(settlement_services, name)

    def wait_then(*args):
        in_batch.set()
        release.wait(10)
        return held(*args)

    monkeypatch.setattr(settlement_services, name, wait_then)

    def settle_in_thread() -> None:
        try:
            market_settle(market="BTC_USDT")
        finally:
            connection.close()

    settling = threading.Thread(target=settle_in_thread)
    settling.start()
    try:
        assert in_batch.wait(10)
        yield
    finally:
        release.set()
        settling.join(15)
        monkeypatch.setattr(settlement_services, name, held)


@pytest.mark.django_db(transaction=True)
def test_storing_events_does_not_wait_for_a_settlement_batch_of_the_same_market(pipeline, alice, bob, monkeypatch):
    """The consumer raises the market's received sequence while a Celery task is in the middle of a
    batch of that market: the store must not queue behind the batch's transaction."""
    place(alice, "sell", "sell", "50000", "0.01")
    pipeline.feed_outbox()
    pipeline.deliver(pipeline.emitted)
    pipeline.emitted = []
    with settlement_held_at(monkeypatch, "_batch_write"):
        place(bob, "buy", "buy", "50000", "0.01")
        pipeline.feed_outbox()
        started = time.monotonic()
        pipeline.deliver(pipeline.emitted)
        stored_in = time.monotonic() - started
    assert stored_in < 2, f"storing waited {stored_in:.1f} s for the settlement batch"
    pipeline.settle()
    cursor = SettlementCursor.objects.get(pk="BTC_USDT")
    assert cursor.seq == cursor.received_seq == EngineEvent.objects.filter(market="BTC_USDT").count()
    assert Trade.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_placement_does_not_wait_for_a_settlement_batch_to_be_worked_out(pipeline, alice, bob, monkeypatch):
    """While a batch checks and applies its events in memory it holds no lock on its traders'
    accounts: an order of the same trader is placed at once; only the batch's writes lock them."""
    place(alice, "sell", "sell", "50000", "0.01")
    place(bob, "buy", "buy", "50000", "0.01")
    pipeline.feed_outbox()
    pipeline.deliver(pipeline.emitted)
    with settlement_held_at(monkeypatch, "event_refusal"):
        started = time.monotonic()
        place(bob, "more", "buy", "40000", "0.01")
        placed_in = time.monotonic() - started
    assert placed_in < 2, f"the placement waited {placed_in:.1f} s for the settlement batch"
    assert Trade.objects.count() == 1
    assert balance(bob, "USDT", "locked") == Decimal("400")


def test_stored_batches_queue_one_settlement_of_a_market_until_it_starts(btc_usdt, monkeypatch):
    queued: list[str] = []
    monkeypatch.setattr(settlement_tasks.settle_market, "delay", queued.append)
    cache.delete(settlement_tasks._queued_key("BTC_USDT"))
    for _ in range(5):  # five Kafka batches stored before a worker takes the task
        settlement_tasks.settle_market_soon("BTC_USDT")
    settlement_tasks.settle_market_soon("ETH_USDT")
    assert queued == ["BTC_USDT", "ETH_USDT"]

    settlement_tasks.settle_market("BTC_USDT")  # started: what is stored from now on needs a task
    settlement_tasks.settle_market_soon("BTC_USDT")
    assert queued == ["BTC_USDT", "ETH_USDT", "BTC_USDT"]
