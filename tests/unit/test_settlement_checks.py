"""Settlement believes nothing it can check: an engine event that PostgreSQL's orders contradict is
refused, however well it chains.

Each forged event here is chained exactly as the engine chains (the next sequence number, the hash
recomputed over its canonical bytes), so only the checks against the database can stop it. A refused
event moves nothing, stops its market (`inconsistent`) and raises an alert that names it and the
reason; the events before it still apply.
"""

import dataclasses
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts.models import Account, User
from accounts.services import account_get
from core.kafka import client
from matching import schemas
from matching.engine import AddMarket, Event, canonical, chain_hash, event_from_dict
from matching.models import Market, Order, OutboxMessage
from matching.services import order_cancel, order_command, order_place, orders_resend_stale
from settlement.models import Alert, EngineEvent, SettlementCursor, Trade
from tests.unit.conftest import Pipeline, balance, place

pytestmark = pytest.mark.django_db

TICKS = 100  # ticks per USDT at BTC_USDT's tick size of 0.01
LOTS = 100_000  # lots per BTC at its lot size of 0.00001


class Forger:
    """Writes events into a market's chain the way anyone who can write to `engine-events` could:
    each one gets the next sequence number and a hash chained onto the last one."""

    def __init__(self, pipeline: Pipeline, *, settle: bool = True) -> None:
        """Forged events follow what the engine emitted, settled first unless `settle` is False."""
        self.pipeline = pipeline
        if settle:
            self.pipeline.run()
        _, self.seq, self.last = pipeline.engine.market_state(pipeline.market)

    def event(self, kind: str, **fields: object) -> Event:
        self.seq += 1
        body = {"type": kind, "market": self.pipeline.market, "seq": self.seq, "ts": 1, **fields}
        unsigned = event_from_dict(body, "0" * 64)
        event = dataclasses.replace(unsigned, hash=chain_hash(self.last, canonical(unsigned)))
        self.last = event.hash
        return event

    def trade(self, maker: Order, taker: Order, price: str, quantity: str, **changes: object) -> Event:
        fields = {
            "maker_order_id": maker.pk,
            "maker_user_id": maker.user_id,
            "taker_order_id": taker.pk,
            "taker_user_id": taker.user_id,
            "taker_side": taker.side,
            "price": int(Decimal(price) * TICKS),
            "quantity": int(Decimal(quantity) * LOTS),
            "maker_remaining": 0,
            "taker_remaining": None if taker.quote_quantity is not None else 0,
            "taker_remaining_quote": 0 if taker.quote_quantity is not None else None,
        }
        return self.event("trade", **{**fields, **changes})

    def accepted(self, order: Order, **changes: object) -> Event:
        fields = order_command(order).to_dict()
        for name in ("type", "market", "ts"):
            del fields[name]
        return self.event("accepted", **{**fields, **changes})

    def deliver(self, *events: Event) -> None:
        self.pipeline.deliver([schemas.encode_event(event) for event in events])


@pytest.fixture
def carol(make_user, fund):
    user = make_user(username="carol")
    fund(user, "BTC", "1")
    fund(user, "USDT", "1000")
    return user


def held_out(order: Order) -> Order:
    """The order is saved and its funds locked, but its command never reaches the engine."""
    for message in OutboxMessage.objects.filter(published_at__isnull=True):
        if getattr(schemas.decode_command(bytes(message.payload)), "order_id", None) == order.pk:
            message.delete()
    return order


def refused(pipeline: Pipeline, unchanged, event: Event, reason: str) -> Alert:
    """Settle what was delivered; `event` must be refused for `reason` with nothing moved."""
    # Settlement opens a user's (empty) accounts in a market's assets when it first locks them; that
    # moves no money, so they are opened here first and the proof compares every balance.
    for user in User.objects.filter(is_staff=False):
        for asset in ("BTC", "USDT"):
            for kind in Account.USER_KINDS:
                account_get(user=user, asset=asset, kind=kind)
    trades = Trade.objects.count()
    with unchanged():
        pipeline.settle()
    assert Trade.objects.count() == trades
    cursor = SettlementCursor.objects.get(market=event.market)
    assert (cursor.status, cursor.seq) == ("inconsistent", event.seq - 1)
    alert = Alert.objects.get(market=event.market, resolved_at__isnull=True)
    assert f"#{event.seq} ({event.to_dict()['type']})" in alert.message, alert.message
    assert reason in alert.message, alert.message
    assert "settlement stopped" in alert.message
    return alert


# --- trades ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("maker", "taker", "price", "changes", "reason"),
    [
        pytest.param(
            ("alice", "sell", "50000"), ("bob", "buy", "40000"), "0.01", {},
            "is not the maker's price 50000", id="one tick against a resting sell",
        ),
        pytest.param(
            ("alice", "sell", "50000"), ("bob", "buy", "40000"), "50000", {},
            "above the taker's limit 40000", id="above the buyer's limit",
        ),
        pytest.param(
            ("bob", "buy", "40000"), ("alice", "sell", "50000"), "40000", {},
            "below the taker's limit 50000", id="below the seller's limit",
        ),
        pytest.param(
            ("alice", "sell", "50000"), ("carol", "sell", "50000"), "50000", {},
            "both sell orders", id="two sells",
        ),
        pytest.param(
            ("alice", "sell", "50000"), ("bob", "buy", "40000"), "50000", {"taker_side": "sell"},
            "the taker order {taker} is a buy order, not sell", id="taker side not the taker order's",
        ),
        pytest.param(
            ("alice", "sell", "50000"), ("bob", "buy", "40000"), "50000", {"maker_user_id": "carol"},
            "order {maker} belongs to user {alice}, not {carol}", id="another user than the order's",
        ),
        pytest.param(
            ("carol", "sell", "50000"), ("carol", "buy", "40000"), "50000", {},
            "maker and taker belong to the same user", id="one user on both sides",
        ),
    ],
)  # fmt: skip
def test_a_trade_the_resting_orders_contradict_is_refused(
    pipeline, alice, bob, carol, unchanged, maker, taker, price, changes, reason
):
    users = {"alice": alice, "bob": bob, "carol": carol}
    (maker_user, maker_side, maker_price), (taker_user, taker_side, taker_price) = maker, taker
    maker_order = place(users[maker_user], "maker", maker_side, maker_price, "0.01")
    taker_order = place(users[taker_user], "taker", taker_side, taker_price, "0.01")
    forger = Forger(pipeline)
    changes = {name: users[value].pk if value in users else value for name, value in changes.items()}
    forged = forger.trade(maker_order, taker_order, price, "0.01", **changes)
    forger.deliver(forged)

    ids = {name: user.pk for name, user in users.items()}
    refused(pipeline, unchanged, forged, reason.format(maker=maker_order.pk, taker=taker_order.pk, **ids))
    assert balance(users[maker_user], "BTC" if maker_side == "sell" else "USDT", "locked") > 0


def test_a_trade_larger_than_the_maker_has_left_is_refused(pipeline, alice, bob, unchanged):
    sell = place(alice, "sell", "sell", "50000", "0.01")
    buy = held_out(place(bob, "buy", "buy", "50000", "0.02"))
    forger = Forger(pipeline)
    forger.deliver(forger.accepted(buy))
    pipeline.settle()
    forged = forger.trade(sell, buy, "50000", "0.02")
    forger.deliver(forged)

    refused(pipeline, unchanged, forged, f"quantity 0.02 is more than order {sell.pk} has left (0.01)")


def test_a_market_buy_that_spends_more_than_its_budget_is_refused(pipeline, alice, bob, unchanged):
    sell = place(alice, "sell", "sell", "50000", "0.01")
    buy, _ = order_place(
        user=bob,
        cid="market-buy-00001",
        symbol="BTC_USDT",
        side="buy",
        order_type="market",
        quote_quantity=Decimal("100"),
        time_in_force="IOC",
    )
    held_out(buy)
    forger = Forger(pipeline)
    forger.deliver(forger.accepted(buy))
    pipeline.settle()
    forged = forger.trade(sell, buy, "50000", "0.01")
    forger.deliver(forged)

    refused(pipeline, unchanged, forged, f"costs 500, more than order {buy.pk} has left to spend (100)")


def test_a_trade_with_a_cancelled_order_is_refused(pipeline, alice, bob, unchanged):
    sell = place(alice, "sell", "sell", "50000", "0.01")
    pipeline.run()
    order_cancel(user=alice, order_id=sell.pk)
    buy = place(bob, "buy", "buy", "50000", "0.01")
    forger = Forger(pipeline)
    sell.refresh_from_db()
    assert sell.status == "cancelled"
    forged = forger.trade(sell, buy, "50000", "0.01")
    forger.deliver(forged)

    refused(pipeline, unchanged, forged, f"order {sell.pk} is cancelled")


def test_a_trade_with_an_order_of_another_market_is_refused(pipeline, alice, bob, eth_usdt, fund, unchanged):
    fund(alice, "ETH", "1")
    sell = place(alice, "sell", "sell", "50000", "0.01")
    other, _ = order_place(
        user=bob, cid="eth-buy-00000001", symbol="ETH_USDT", side="buy", order_type="limit",
        price=Decimal("4000"), quantity=Decimal("0.01"),
    )  # fmt: skip
    Order.objects.filter(pk=other.pk).update(status="open")
    forger = Forger(pipeline)
    forged = forger.trade(sell, Order.objects.get(pk=other.pk), "50000", "0.01")
    forger.deliver(forged)

    refused(pipeline, unchanged, forged, f"order {other.pk} belongs to market ETH_USDT")


# --- the other events -----------------------------------------------------------------------------


def test_an_acceptance_naming_another_user_is_refused(pipeline, alice, bob, unchanged):
    buy = held_out(place(bob, "buy", "buy", "50000", "0.01"))
    forger = Forger(pipeline)
    forged = forger.accepted(buy, user_id=alice.pk)
    forger.deliver(forged)

    refused(pipeline, unchanged, forged, f"order {buy.pk} belongs to user {bob.pk}, not {alice.pk}")


def test_an_acceptance_at_another_price_than_the_order_is_refused(pipeline, bob, unchanged):
    buy = held_out(place(bob, "buy", "buy", "50000", "0.01"))
    forger = Forger(pipeline)
    forged = forger.accepted(buy, price=1)
    forger.deliver(forged)

    refused(pipeline, unchanged, forged, "says price 1, the order has 5000000")


def test_an_acceptance_of_an_order_already_open_is_refused(pipeline, bob, unchanged):
    buy = place(bob, "buy", "buy", "50000", "0.01")
    forger = Forger(pipeline)
    buy.refresh_from_db()
    forged = forger.accepted(buy)
    forger.deliver(forged)

    refused(pipeline, unchanged, forged, f"order {buy.pk} is open, not pending")


def test_done_for_an_order_that_is_not_filled_is_refused(pipeline, alice, unchanged):
    sell = place(alice, "sell", "sell", "50000", "0.01")
    forger = Forger(pipeline)
    forged = forger.event("done", order_id=sell.pk, user_id=alice.pk, reason="filled")
    forger.deliver(forged)

    refused(pipeline, unchanged, forged, f"order {sell.pk} is not filled (0 of 0.01)")


def test_a_cancellation_naming_another_user_is_refused(pipeline, alice, bob, unchanged):
    sell = place(alice, "sell", "sell", "50000", "0.01")
    forger = Forger(pipeline)
    forged = forger.event(
        "cancelled", order_id=sell.pk, user_id=bob.pk, remaining=1000, remaining_quote=None, reason="user"
    )
    forger.deliver(forged)

    refused(pipeline, unchanged, forged, f"order {sell.pk} belongs to user {alice.pk}, not {bob.pk}")


def test_a_cancellation_of_a_filled_order_is_refused(pipeline, alice, bob, unchanged):
    sell = place(alice, "sell", "sell", "50000", "0.01")
    place(bob, "buy", "buy", "50000", "0.01")
    forger = Forger(pipeline)
    forged = forger.event(
        "cancelled", order_id=sell.pk, user_id=alice.pk, remaining=0, remaining_quote=None, reason="user"
    )
    forger.deliver(forged)

    refused(pipeline, unchanged, forged, f"order {sell.pk} is filled")


def test_a_rejection_of_an_open_order_is_refused(pipeline, bob, unchanged):
    buy = place(bob, "buy", "buy", "50000", "0.01")
    forger = Forger(pipeline)
    forged = forger.event("rejected", order_id=buy.pk, user_id=bob.pk, request="new", reason="invalid")
    forger.deliver(forged)

    refused(pipeline, unchanged, forged, f"order {buy.pk} is open, not pending")


def test_a_rejection_naming_another_user_is_refused(pipeline, alice, bob, unchanged):
    buy = held_out(place(bob, "buy", "buy", "50000", "0.01"))
    forger = Forger(pipeline)
    forged = forger.event("rejected", order_id=buy.pk, user_id=alice.pk, request="new", reason="invalid")
    forger.deliver(forged)

    refused(pipeline, unchanged, forged, f"order {buy.pk} belongs to user {bob.pk}, not {alice.pk}")


def test_the_events_before_a_refused_one_in_the_same_batch_still_apply(pipeline, alice, bob):
    sell = place(alice, "sell", "sell", "50000", "0.01")
    buy = held_out(place(bob, "buy", "buy", "40000", "0.01"))
    forger = Forger(pipeline)
    accepted = forger.accepted(buy)
    forged = forger.trade(sell, buy, "0.01", "0.01")
    forger.deliver(accepted, forged)

    assert pipeline.settle() == 1
    buy.refresh_from_db()
    assert buy.status == "open"
    cursor = SettlementCursor.objects.get()
    assert (cursor.status, cursor.seq, cursor.hash) == ("inconsistent", accepted.seq, accepted.hash)
    assert not Trade.objects.exists()
    assert balance(bob, "USDT", "locked") == Decimal("400")
    # Stopped means stopped: nothing after the refused event settles until an operator looks.
    assert pipeline.settle() == 0


def test_a_refused_event_in_the_middle_of_a_batch_applies_exactly_the_events_before_it(pipeline, alice, bob):
    sell = place(alice, "sell", "sell", "50000", "0.01")
    buy = place(bob, "buy", "buy", "50000", "0.004")
    pipeline.feed_outbox()
    genuine = list(pipeline.emitted)  # the market, two acceptances, the trade, the buy done
    forger = Forger(pipeline, settle=False)
    forged = forger.trade(sell, buy, "50000", "0.004")  # the buy is filled by then
    after = forger.event(
        "cancelled", order_id=sell.pk, user_id=alice.pk, reason="user", remaining=600, remaining_quote=None
    )
    pipeline.deliver(genuine)
    forger.deliver(forged, after)

    assert pipeline.settle() == len(genuine)
    cursor = SettlementCursor.objects.get()
    assert (cursor.status, cursor.seq, cursor.hash) == ("inconsistent", forged.seq - 1, forger_hash(genuine[-1]))
    assert Trade.objects.count() == 1
    sell.refresh_from_db()
    buy.refresh_from_db()
    assert (sell.status, sell.filled, sell.locked) == ("partially_filled", Decimal("0.004"), Decimal("0.006"))
    assert (buy.status, buy.locked) == ("filled", 0)
    assert balance(alice, "USDT") == Decimal("199.8")  # 200 less the 0.1% maker fee
    assert balance(bob, "BTC") == Decimal("0.003992")  # 0.004 less the 0.2% taker fee
    assert balance(alice, "BTC", "locked") == Decimal("0.006")
    assert f"#{forged.seq} (trade)" in Alert.objects.get().message
    assert not EngineEvent.objects.filter(seq__gte=forged.seq, settled_at__isnull=False).exists()


def forger_hash(raw: bytes) -> str:
    return schemas.decode_event(raw).hash


# --- fees fixed at placement ----------------------------------------------------------------------


def test_a_fee_change_does_not_reach_orders_already_placed(pipeline, alice, bob):
    sell = place(alice, "sell", "sell", "50000", "0.01")
    pipeline.run()
    Market.objects.filter(pk="BTC_USDT").update(maker_fee=Decimal("0.05"), taker_fee=Decimal("0.05"))
    buy = place(bob, "buy", "buy", "50000", "0.01")
    pipeline.run()

    sell.refresh_from_db()
    buy.refresh_from_db()
    assert (sell.maker_fee_rate, sell.taker_fee_rate) == (Decimal("0.001"), Decimal("0.002"))
    assert (buy.maker_fee_rate, buy.taker_fee_rate) == (Decimal("0.05"), Decimal("0.05"))
    trade = Trade.objects.get()
    # The resting sell keeps the 0.1% maker rate it was placed with; the buy pays the new 5%.
    assert (trade.seller_fee, trade.buyer_fee) == (Decimal("0.5"), Decimal("0.0005"))
    assert balance(alice, "USDT") == Decimal("499.5")


# --- rejections outside any chain -----------------------------------------------------------------


@pytest.mark.services
def test_an_unsequenced_rejection_changes_nothing_and_the_order_is_sent_again(eth_usdt, bob, unchanged, settings):
    """The engine rejects an order for a market it does not know (yet) outside any chain. Nothing can
    vouch for such an event, so settlement applies none; the order stays pending with its funds, and
    the relay sends it again until the engine knows the market."""
    OutboxMessage.objects.all().delete()
    pipeline = Pipeline("ETH_USDT")
    pipeline.engine = type(pipeline.engine)()  # an engine that has not heard of ETH_USDT yet
    pipeline.emitted = []
    buy, _ = order_place(
        user=bob, cid="eth-buy-00000001", symbol="ETH_USDT", side="buy", order_type="limit",
        price=Decimal("4000"), quantity=Decimal("0.01"),
    )  # fmt: skip
    pipeline.feed_outbox()
    (rejection,) = (schemas.decode_event(raw) for raw in pipeline.emitted)
    assert (rejection.seq, rejection.reason) == (0, "unknown_market")

    with unchanged():
        pipeline.deliver(pipeline.emitted)
        pipeline.settle()
    assert Order.objects.get(pk=buy.pk).status == "pending"
    assert balance(bob, "USDT", "locked") == Decimal("40")
    assert SettlementCursor.objects.filter(status="inconsistent").count() == 0
    alert = Alert.objects.get(kind="unchained_event")
    assert "ignored" in alert.message

    # The relay asks again; by then the engine has the market.
    client.ensure_topics()
    settings.OUTBOX_RETRY_SECONDS = 1
    Order.objects.filter(pk=buy.pk).update(created_at=timezone.now() - timedelta(seconds=5))
    assert orders_resend_stale() == 1
    pipeline.emitted = []
    pipeline.feed(AddMarket(market="ETH_USDT", ts=2))
    pipeline.feed(order_command(Order.objects.select_related("market").get(pk=buy.pk)))
    pipeline.deliver(pipeline.emitted)
    pipeline.settle()
    assert Order.objects.get(pk=buy.pk).status == "open"
    assert balance(bob, "USDT", "locked") == Decimal("40")


def test_an_unsequenced_rejection_of_a_pending_order_in_a_known_market_changes_nothing(pipeline, bob, unchanged):
    buy = held_out(place(bob, "buy", "buy", "50000", "0.01"))
    pipeline.run()
    forged = event_from_dict(
        {
            "type": "rejected",
            "market": "BTC_USDT",
            "seq": 0,
            "ts": 1,
            "order_id": buy.pk,
            "user_id": bob.pk,
            "request": "new",
            "reason": "unknown_market",
        },
        "0" * 64,
    )
    with unchanged():
        pipeline.deliver([schemas.encode_event(forged)])
        pipeline.settle()
    assert Order.objects.get(pk=buy.pk).status == "pending"
    assert balance(bob, "USDT", "locked") == Decimal("500")
    assert SettlementCursor.objects.get().status == "ok"
    assert Alert.objects.get().kind == "unchained_event"


def test_an_event_the_inbox_cannot_store_is_skipped_as_a_bad_message(pipeline):
    pipeline.run()
    forged = event_from_dict({"type": "market_halted", "market": "X" * 40, "seq": 1, "ts": 1}, "0" * 64)
    pipeline.deliver([schemas.encode_event(forged)])
    assert Alert.objects.get().kind == "bad_message"
    assert pipeline.settle() == 0
