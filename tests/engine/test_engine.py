"""One test per semantic rule of the engine."""

import pytest

from matching.engine import (
    UNCHAINED_HASH,
    AddMarket,
    Engine,
    HaltMarket,
    NewOrder,
    OrderRejected,
    RestingOrder,
    ResumeMarket,
    verify_chain,
)

from .builders import MARKET, cancel, cancel_all, engine_with, limit, market, shapes

# --- markets -------------------------------------------------------------------------------------


def test_adding_a_market_emits_market_added_as_seq_one() -> None:
    engine = Engine()
    (event,) = engine.apply(AddMarket("BTC-USD", 42))
    assert event.to_dict() == {"type": "market_added", "market": "BTC-USD", "seq": 1, "ts": 42}
    assert engine.markets == ("BTC-USD",)
    assert engine.market_state("BTC-USD") == ("active", 1, event.hash)


def test_adding_an_existing_market_is_rejected_in_that_markets_chain() -> None:
    engine = engine_with()
    (event,) = engine.apply(AddMarket(MARKET, 7))
    assert event.to_dict() == {
        "type": "rejected",
        "market": MARKET,
        "seq": 2,
        "ts": 7,
        "order_id": None,
        "user_id": None,
        "request": "add_market",
        "reason": "market_exists",
    }
    assert engine.market_state(MARKET)[1:] == (2, event.hash)


def test_commands_for_an_unknown_market_are_rejected_outside_any_chain_and_change_nothing() -> None:
    engine = engine_with()
    before = (engine.snapshot(), engine.market_state(MARKET))
    commands = [
        limit(1, 1, "buy", 10, 1, market="NOPE"),
        cancel(1, 1, market="NOPE"),
        cancel_all(1, market="NOPE"),
        HaltMarket("NOPE", 1),
        ResumeMarket("NOPE", 1),
    ]
    requests = []
    for cmd in commands:
        (event,) = engine.apply(cmd)
        assert isinstance(event, OrderRejected)
        assert (event.market, event.seq, event.hash, event.reason) == ("NOPE", 0, UNCHAINED_HASH, "unknown_market")
        requests.append(event.request)
    assert requests == ["new", "cancel", "cancel_all", "halt_market", "resume_market"]
    assert (engine.snapshot(), engine.market_state(MARKET)) == before
    assert engine.markets == (MARKET,)
    # The order id was not consumed: the same order is accepted once its market exists.
    engine.apply(AddMarket("NOPE", 2))
    assert shapes(engine.apply(limit(1, 1, "buy", 10, 1, market="NOPE"))) == [("accepted", 1)]


def test_halt_rejects_new_orders_and_resume_reenables_them() -> None:
    engine = engine_with()
    assert shapes(engine.apply(HaltMarket(MARKET, 1))) == [("market_halted",)]
    assert engine.market_state(MARKET)[0] == "halted"
    assert shapes(engine.apply(limit(1, 1, "buy", 10, 1))) == [("rejected", 1, "market_halted")]
    assert shapes(engine.apply(ResumeMarket(MARKET, 2))) == [("market_resumed",)]
    assert engine.market_state(MARKET)[0] == "active"
    assert shapes(engine.apply(limit(2, 1, "buy", 10, 1))) == [("accepted", 2)]


def test_an_order_rejected_while_halted_keeps_its_id_used() -> None:
    engine = engine_with()
    engine.apply(HaltMarket(MARKET, 1))
    engine.apply(limit(1, 1, "buy", 10, 1))
    engine.apply(ResumeMarket(MARKET, 2))
    assert shapes(engine.apply(limit(1, 1, "buy", 10, 1))) == [("rejected", 1, "duplicate_order_id")]
    assert shapes(engine.apply(cancel(1, 1))) == [("rejected", 1, "already_done")]


def test_cancels_still_work_while_a_market_is_halted() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "buy", 10, 1))
    engine.apply(limit(2, 1, "buy", 11, 1))
    engine.apply(limit(3, 1, "sell", 20, 1))
    engine.apply(HaltMarket(MARKET, 1))
    assert shapes(engine.apply(cancel(1, 1))) == [("cancelled", 1, "user")]
    assert shapes(engine.apply(cancel_all(1))) == [("cancelled", 2, "user"), ("cancelled", 3, "user")]
    assert engine.open_orders(MARKET) == []


def test_halting_a_halted_market_or_resuming_an_active_one_is_rejected_as_invalid() -> None:
    engine = engine_with()
    (event,) = engine.apply(ResumeMarket(MARKET, 1))
    assert (event.request, event.reason, event.seq) == ("resume_market", "invalid", 2)
    engine.apply(HaltMarket(MARKET, 2))
    (event,) = engine.apply(HaltMarket(MARKET, 3))
    assert (event.request, event.reason, event.seq) == ("halt_market", "invalid", 4)
    assert engine.market_state(MARKET)[0] == "halted"


def test_each_market_has_its_own_gapless_chain() -> None:
    engine = engine_with("A", "B")
    events = []
    for cmd in [
        limit(1, 1, "buy", 10, 1, market="A"),
        limit(2, 2, "sell", 10, 1, market="B"),
        cancel(1, 1, market="A"),
    ]:
        events.extend(engine.apply(cmd))
    assert [(e.market, e.seq) for e in events] == [("A", 2), ("B", 2), ("A", 3)]
    assert engine.market_state("A")[1] == 3
    assert engine.market_state("B")[1] == 2
    assert engine.sequences() == {"A": 3, "B": 2}


# --- resting and matching ---------------------------------------------------------------------------


def test_a_limit_order_that_does_not_cross_rests_and_emits_only_accepted() -> None:
    engine = engine_with()
    events = engine.apply(limit(1, 7, "buy", 100, 5, ts=123))
    assert [e.to_dict() for e in events] == [
        {
            "type": "accepted",
            "market": MARKET,
            "seq": 2,
            "ts": 123,
            "order_id": 1,
            "user_id": 7,
            "side": "buy",
            "order_type": "limit",
            "price": 100,
            "quantity": 5,
            "quote_quantity": None,
            "time_in_force": "GTC",
            "post_only": False,
            "stp": "cancel_incoming",
        }
    ]
    assert engine.open_orders(MARKET) == [RestingOrder(1, 7, "buy", 100, 5)]


def test_a_crossing_order_trades_at_the_resting_orders_price() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "sell", 100, 5))
    events = engine.apply(limit(2, 2, "buy", 105, 5, ts=9))
    assert shapes(events) == [("accepted", 2), ("trade", 1, 2, 100, 5), ("done", 1), ("done", 2)]
    assert events[1].to_dict() == {
        "type": "trade",
        "market": MARKET,
        "seq": 4,
        "ts": 9,
        "maker_order_id": 1,
        "maker_user_id": 1,
        "taker_order_id": 2,
        "taker_user_id": 2,
        "taker_side": "buy",
        "price": 100,
        "quantity": 5,
        "maker_remaining": 0,
        "taker_remaining": 0,
        "taker_remaining_quote": None,
    }


def test_better_prices_match_first_and_fifo_within_a_price_level() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "sell", 101, 1))
    engine.apply(limit(2, 2, "sell", 100, 1))
    engine.apply(limit(3, 3, "sell", 100, 1))
    engine.apply(limit(4, 4, "sell", 99, 1))
    events = engine.apply(limit(5, 5, "buy", 101, 4))
    assert [s for s in shapes(events) if s[0] == "trade"] == [
        ("trade", 4, 5, 99, 1),
        ("trade", 2, 5, 100, 1),
        ("trade", 3, 5, 100, 1),
        ("trade", 1, 5, 101, 1),
    ]


def test_a_sell_taker_walks_bids_from_the_highest_price_down() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "buy", 98, 2))
    engine.apply(limit(2, 2, "buy", 100, 2))
    events = engine.apply(limit(3, 3, "sell", 97, 3))
    assert shapes(events) == [
        ("accepted", 3),
        ("trade", 2, 3, 100, 2),
        ("done", 2),
        ("trade", 1, 3, 98, 1),
        ("done", 3),
    ]
    assert engine.open_orders(MARKET) == [RestingOrder(1, 1, "buy", 98, 1)]


def test_a_maker_filled_completely_gets_done_right_after_its_trade() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "sell", 100, 2))
    engine.apply(limit(2, 2, "sell", 100, 5))
    events = engine.apply(limit(3, 3, "buy", 100, 4))
    assert shapes(events) == [
        ("accepted", 3),
        ("trade", 1, 3, 100, 2),
        ("done", 1),
        ("trade", 2, 3, 100, 2),
        ("done", 3),
    ]
    assert [e.to_dict()["maker_remaining"] for e in events if e.to_dict()["type"] == "trade"] == [0, 3]


def test_a_partly_filled_gtc_order_rests_with_nothing_more_emitted() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "sell", 100, 2))
    events = engine.apply(limit(2, 2, "buy", 101, 5))
    assert shapes(events) == [("accepted", 2), ("trade", 1, 2, 100, 2), ("done", 1)]
    assert events[1].to_dict()["taker_remaining"] == 3
    assert engine.open_orders(MARKET) == [RestingOrder(2, 2, "buy", 101, 3)]


def test_an_ioc_order_cancels_what_it_cannot_fill_at_once() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "sell", 100, 2))
    events = engine.apply(limit(2, 2, "buy", 100, 5, tif="IOC"))
    assert shapes(events) == [("accepted", 2), ("trade", 1, 2, 100, 2), ("done", 1), ("cancelled", 2, "ioc")]
    assert events[-1].to_dict()["remaining"] == 3
    assert engine.open_orders(MARKET) == []


def test_an_ioc_order_with_nothing_to_match_is_cancelled_as_ioc() -> None:
    engine = engine_with()
    events = engine.apply(limit(1, 1, "buy", 100, 5, tif="IOC"))
    assert shapes(events) == [("accepted", 1), ("cancelled", 1, "ioc")]


def test_a_fok_order_that_can_fill_completely_fills_at_once() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "sell", 100, 2))
    engine.apply(limit(2, 2, "sell", 101, 2))
    events = engine.apply(limit(3, 3, "buy", 101, 4, tif="FOK"))
    assert shapes(events) == [
        ("accepted", 3),
        ("trade", 1, 3, 100, 2),
        ("done", 1),
        ("trade", 2, 3, 101, 2),
        ("done", 2),
        ("done", 3),
    ]


def test_a_fok_order_that_cannot_fill_completely_is_rejected_and_trades_nothing() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "sell", 100, 2))
    engine.apply(limit(2, 2, "sell", 102, 2))
    before = engine.open_orders(MARKET)
    assert shapes(engine.apply(limit(3, 3, "buy", 101, 3, tif="FOK"))) == [("rejected", 3, "fok_not_fillable")]
    assert engine.open_orders(MARKET) == before


def test_a_fok_order_blocked_by_its_own_resting_order_is_not_fillable_unless_it_cancels_resting() -> None:
    def book() -> Engine:
        engine = engine_with()
        engine.apply(limit(1, 1, "sell", 100, 2))
        engine.apply(limit(2, 3, "sell", 100, 2))
        engine.apply(limit(3, 1, "sell", 100, 2))
        return engine

    for stp in ("cancel_incoming", "cancel_both"):
        engine = book()
        events = engine.apply(limit(9, 3, "buy", 100, 3, tif="FOK", stp=stp))
        assert shapes(events) == [("rejected", 9, "fok_not_fillable")]
    engine = book()
    events = engine.apply(limit(9, 3, "buy", 100, 3, tif="FOK", stp="cancel_resting"))
    assert shapes(events) == [
        ("accepted", 9),
        ("trade", 1, 9, 100, 2),
        ("done", 1),
        ("cancelled", 2, "self_trade"),
        ("trade", 3, 9, 100, 1),
        ("done", 9),
    ]


def test_a_post_only_order_that_would_cross_is_rejected_and_trades_nothing() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "sell", 100, 2))
    events = engine.apply(limit(2, 2, "buy", 100, 1, post_only=True))
    assert shapes(events) == [("rejected", 2, "post_only_would_cross")]
    assert engine.open_orders(MARKET) == [RestingOrder(1, 1, "sell", 100, 2)]


def test_a_post_only_order_that_does_not_cross_rests() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "sell", 100, 2))
    assert shapes(engine.apply(limit(2, 2, "buy", 99, 1, post_only=True))) == [("accepted", 2)]
    assert engine.open_orders(MARKET)[0] == RestingOrder(2, 2, "buy", 99, 1)


def test_a_post_only_order_crossing_only_its_own_order_is_still_rejected() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "sell", 100, 2))
    assert shapes(engine.apply(limit(2, 1, "buy", 100, 1, post_only=True))) == [
        ("rejected", 2, "post_only_would_cross")
    ]


@pytest.mark.parametrize("tif", ["IOC", "FOK"])
def test_post_only_ioc_and_fok_orders_are_rejected_as_invalid(tif: str) -> None:
    engine = engine_with()
    engine.apply(limit(1, 2, "sell", 200, 1))
    assert shapes(engine.apply(limit(5, 1, "buy", 100, 1, tif=tif, post_only=True))) == [("rejected", 5, "invalid")]
    assert shapes(engine.apply(cancel(5, 1))) == [("rejected", 5, "already_done")]


def test_market_orders_that_could_rest_or_carry_post_only_are_rejected_as_invalid() -> None:
    engine = engine_with()
    gtc = NewOrder(MARKET, 5, 1, "sell", "market", None, 1, None, "GTC", False, "cancel_incoming", 0)
    post_only = NewOrder(MARKET, 6, 1, "sell", "market", None, 1, None, "IOC", True, "cancel_incoming", 0)
    assert shapes(engine.apply(gtc)) == [("rejected", 5, "invalid")]
    assert shapes(engine.apply(post_only)) == [("rejected", 6, "invalid")]


# --- market orders ---------------------------------------------------------------------------------


def test_a_market_sell_by_quantity_sweeps_bids_and_never_rests() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "buy", 100, 2))
    engine.apply(limit(2, 2, "buy", 90, 2))
    events = engine.apply(market(3, 3, "sell", 5))
    assert shapes(events) == [
        ("accepted", 3),
        ("trade", 1, 3, 100, 2),
        ("done", 1),
        ("trade", 2, 3, 90, 2),
        ("done", 2),
        ("cancelled", 3, "ioc"),
    ]
    assert events[-1].to_dict()["remaining"] == 1
    assert engine.open_orders(MARKET) == []


def test_a_market_buy_by_quantity_fills_and_is_done() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "sell", 100, 5))
    events = engine.apply(market(2, 2, "buy", 3))
    assert shapes(events) == [("accepted", 2), ("trade", 1, 2, 100, 3), ("done", 2)]


def test_a_market_order_with_nothing_to_match_is_cancelled_as_no_liquidity() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "buy", 100, 5))
    assert shapes(engine.apply(market(2, 2, "buy", 3))) == [("accepted", 2), ("cancelled", 2, "no_liquidity")]
    assert shapes(engine.apply(market(3, 2, "buy", quote=500))) == [("accepted", 3), ("cancelled", 3, "no_liquidity")]


def test_a_market_buy_by_quote_spends_whole_lots_and_reports_the_unspent_budget() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "sell", 10, 2))
    engine.apply(limit(2, 2, "sell", 12, 5))
    # 35 buys 2 lots at 10 (20), then 1 lot at 12 (12); 3 left cannot pay another lot at 12.
    events = engine.apply(market(3, 3, "buy", quote=35))
    assert shapes(events) == [
        ("accepted", 3),
        ("trade", 1, 3, 10, 2),
        ("done", 1),
        ("trade", 2, 3, 12, 1),
        ("cancelled", 3, "ioc"),
    ]
    trades = [e.to_dict() for e in events if e.to_dict()["type"] == "trade"]
    assert [(t["taker_remaining"], t["taker_remaining_quote"]) for t in trades] == [(None, 15), (None, 3)]
    assert events[-1].to_dict()["remaining"] is None
    assert events[-1].to_dict()["remaining_quote"] == 3
    assert engine.open_orders(MARKET) == [RestingOrder(2, 2, "sell", 12, 4)]


def test_a_market_buy_by_quote_that_spends_its_budget_exactly_is_done() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "sell", 10, 5))
    events = engine.apply(market(2, 2, "buy", quote=30))
    assert shapes(events) == [("accepted", 2), ("trade", 1, 2, 10, 3), ("done", 2)]


def test_a_market_buy_by_quote_too_small_for_one_lot_is_cancelled_as_no_liquidity() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "sell", 10, 5))
    events = engine.apply(market(2, 2, "buy", quote=9))
    assert shapes(events) == [("accepted", 2), ("cancelled", 2, "no_liquidity")]
    assert events[-1].to_dict()["remaining_quote"] == 9


def test_a_fok_market_sell_fills_completely_or_is_rejected() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "buy", 100, 2))
    fok = NewOrder(MARKET, 2, 2, "sell", "market", None, 3, None, "FOK", False, "cancel_incoming", 0)
    assert shapes(engine.apply(fok)) == [("rejected", 2, "fok_not_fillable")]
    fok = NewOrder(MARKET, 3, 2, "sell", "market", None, 2, None, "FOK", False, "cancel_incoming", 0)
    assert shapes(engine.apply(fok)) == [("accepted", 3), ("trade", 1, 3, 100, 2), ("done", 1), ("done", 3)]


def test_a_fok_market_buy_by_quote_needs_enough_book_to_spend_the_budget() -> None:
    def fok(oid: int, quote: int) -> NewOrder:
        return NewOrder(MARKET, oid, 9, "buy", "market", None, None, quote, "FOK", False, "cancel_incoming", 0)

    engine = engine_with()
    engine.apply(limit(1, 1, "sell", 10, 2))
    engine.apply(limit(2, 2, "sell", 12, 1))
    # The book holds 32 of quote; 45 would be left with 13, enough for another lot at 12.
    assert shapes(engine.apply(fok(3, 45))) == [("rejected", 3, "fok_not_fillable")]
    # 41 buys everything and keeps 9, less than the last price: fillable; the rest is released.
    events = engine.apply(fok(4, 41))
    assert shapes(events)[-1] == ("cancelled", 4, "ioc")
    assert events[-1].to_dict()["remaining_quote"] == 9


# --- self-trade prevention ---------------------------------------------------------------------------


def test_self_trade_cancel_incoming_cancels_the_incoming_order_and_keeps_the_resting_one() -> None:
    engine = engine_with()
    engine.apply(limit(1, 2, "sell", 100, 1))
    engine.apply(limit(2, 1, "sell", 101, 3))
    events = engine.apply(limit(3, 1, "buy", 101, 5))
    assert shapes(events) == [("accepted", 3), ("trade", 1, 3, 100, 1), ("done", 1), ("cancelled", 3, "self_trade")]
    assert events[-1].to_dict()["remaining"] == 4
    assert engine.open_orders(MARKET) == [RestingOrder(2, 1, "sell", 101, 3)]


def test_self_trade_cancel_resting_cancels_the_resting_order_and_matching_goes_on() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "sell", 100, 3))
    engine.apply(limit(2, 2, "sell", 100, 3))
    events = engine.apply(limit(3, 1, "buy", 100, 2, stp="cancel_resting"))
    assert shapes(events) == [("accepted", 3), ("cancelled", 1, "self_trade"), ("trade", 2, 3, 100, 2), ("done", 3)]
    assert events[1].to_dict()["remaining"] == 3
    assert engine.open_orders(MARKET) == [RestingOrder(2, 2, "sell", 100, 1)]


def test_self_trade_cancel_both_cancels_resting_then_incoming() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "sell", 100, 3))
    engine.apply(limit(2, 2, "sell", 100, 3))
    events = engine.apply(limit(3, 1, "buy", 100, 2, stp="cancel_both"))
    assert shapes(events) == [("accepted", 3), ("cancelled", 1, "self_trade"), ("cancelled", 3, "self_trade")]
    assert engine.open_orders(MARKET) == [RestingOrder(2, 2, "sell", 100, 3)]


def test_self_trade_prevention_applies_to_market_buys_by_quote() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "sell", 10, 3))
    events = engine.apply(market(2, 1, "buy", quote=100))
    assert shapes(events) == [("accepted", 2), ("cancelled", 2, "self_trade")]
    assert events[-1].to_dict()["remaining_quote"] == 100


def test_an_own_order_beyond_the_price_limit_does_not_trigger_self_trade_prevention() -> None:
    engine = engine_with()
    engine.apply(limit(1, 2, "sell", 100, 1))
    engine.apply(limit(2, 1, "sell", 105, 1))
    events = engine.apply(limit(3, 1, "buy", 101, 3))
    assert shapes(events) == [("accepted", 3), ("trade", 1, 3, 100, 1), ("done", 1)]
    assert engine.open_orders(MARKET)[0] == RestingOrder(3, 1, "buy", 101, 2)


# --- cancels -----------------------------------------------------------------------------------------


def test_cancelling_a_resting_order_removes_it_and_reports_what_was_left() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "sell", 100, 5))
    engine.apply(limit(2, 2, "buy", 100, 2))
    (event,) = engine.apply(cancel(1, 1, ts=77))
    assert event.to_dict() == {
        "type": "cancelled",
        "market": MARKET,
        "seq": 6,
        "ts": 77,
        "order_id": 1,
        "user_id": 1,
        "remaining": 3,
        "remaining_quote": None,
        "reason": "user",
    }
    assert engine.open_orders(MARKET) == []
    assert engine.depth(MARKET, 5) == (6, [], [])


def test_cancelling_a_finished_order_is_rejected_as_already_done() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "sell", 100, 1))
    engine.apply(limit(2, 2, "buy", 100, 1))
    assert shapes(engine.apply(cancel(1, 1))) == [("rejected", 1, "already_done")]
    assert shapes(engine.apply(cancel(2, 2))) == [("rejected", 2, "already_done")]
    engine.apply(limit(3, 1, "sell", 100, 1))
    engine.apply(cancel(3, 1))
    assert shapes(engine.apply(cancel(3, 1))) == [("rejected", 3, "already_done")]


def test_cancelling_another_users_order_is_rejected_as_not_owner() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "sell", 100, 1))
    assert shapes(engine.apply(cancel(1, 2))) == [("rejected", 1, "not_owner")]
    assert engine.open_orders(MARKET) == [RestingOrder(1, 1, "sell", 100, 1)]
    engine.apply(cancel(1, 1))
    assert shapes(engine.apply(cancel(1, 2))) == [("rejected", 1, "not_owner")]


def test_a_cancel_naming_the_wrong_market_is_rejected_as_unknown_order() -> None:
    engine = engine_with("A", "B")
    engine.apply(limit(1, 1, "sell", 100, 1, market="A"))
    (event,) = engine.apply(cancel(1, 1, market="B"))
    assert (event.market, event.reason) == ("B", "unknown_order")
    assert len(engine.open_orders("A")) == 1


def test_a_cancel_before_its_order_is_rejected_then_the_order_is_accepted_and_cancelled_at_once() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "sell", 100, 5))
    assert shapes(engine.apply(cancel(2, 2))) == [("rejected", 2, "unknown_order")]
    # It would cross, but it never touches the book.
    events = engine.apply(limit(2, 2, "buy", 100, 3))
    assert shapes(events) == [("accepted", 2), ("cancelled", 2, "user")]
    assert events[-1].to_dict()["remaining"] == 3
    assert engine.open_orders(MARKET) == [RestingOrder(1, 1, "sell", 100, 5)]
    assert shapes(engine.apply(cancel(2, 2))) == [("rejected", 2, "already_done")]


def test_an_early_cancel_of_a_quote_market_buy_reports_the_budget() -> None:
    engine = engine_with()
    engine.apply(cancel(2, 2))
    events = engine.apply(market(2, 2, "buy", quote=50))
    assert events[-1].to_dict()["remaining"] is None
    assert events[-1].to_dict()["remaining_quote"] == 50


def test_an_early_cancel_from_another_user_or_market_does_not_cancel_the_order() -> None:
    engine = engine_with("A", "B")
    engine.apply(cancel(2, 9, market="A"))
    engine.apply(cancel(2, 2, market="B"))
    assert shapes(engine.apply(limit(2, 2, "buy", 100, 3, market="A"))) == [("accepted", 2)]
    # The early cancels were used up when id 2 became known.
    assert shapes(engine.apply(cancel(2, 2, market="B"))) == [("rejected", 2, "unknown_order")]
    assert shapes(engine.apply(cancel(2, 2, market="A"))) == [("cancelled", 2, "user")]


def test_cancel_all_cancels_a_users_resting_orders_in_order_id_order() -> None:
    engine = engine_with()
    engine.apply(limit(5, 1, "sell", 101, 1))
    engine.apply(limit(3, 1, "buy", 90, 1))
    engine.apply(limit(4, 2, "buy", 91, 1))
    engine.apply(limit(9, 1, "sell", 100, 1))
    events = engine.apply(cancel_all(1))
    assert shapes(events) == [("cancelled", 3, "user"), ("cancelled", 5, "user"), ("cancelled", 9, "user")]
    assert engine.open_orders(MARKET) == [RestingOrder(4, 2, "buy", 91, 1)]


def test_cancel_all_with_nothing_to_cancel_is_a_single_rejection() -> None:
    engine = engine_with()
    engine.apply(limit(1, 2, "buy", 91, 1))
    (event,) = engine.apply(cancel_all(1))
    assert (event.order_id, event.user_id, event.request, event.reason) == (None, 1, "cancel_all", "unknown_order")


# --- duplicates --------------------------------------------------------------------------------------


def test_a_duplicate_order_id_is_rejected_and_has_no_other_effect() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "sell", 100, 5))
    before = engine.open_orders(MARKET)
    (event,) = engine.apply(limit(1, 1, "sell", 100, 5))
    assert (event.order_id, event.request, event.reason) == (1, "new", "duplicate_order_id")
    assert engine.open_orders(MARKET) == before
    # The original order is untouched and still cancellable.
    assert shapes(engine.apply(cancel(1, 1))) == [("cancelled", 1, "user")]


def test_order_ids_are_unique_across_markets() -> None:
    engine = engine_with("A", "B")
    engine.apply(limit(1, 1, "sell", 100, 5, market="A"))
    (event,) = engine.apply(limit(1, 1, "sell", 100, 5, market="B"))
    assert (event.market, event.reason) == ("B", "duplicate_order_id")


def test_the_id_of_a_rejected_order_cannot_be_used_again() -> None:
    engine = engine_with()
    engine.apply(limit(1, 1, "sell", 100, 5))
    engine.apply(limit(2, 2, "buy", 100, 1, post_only=True))
    engine.apply(cancel(1, 1))
    assert shapes(engine.apply(limit(2, 2, "buy", 100, 1, post_only=True))) == [("rejected", 2, "duplicate_order_id")]


# --- queries -----------------------------------------------------------------------------------------


def test_depth_aggregates_levels_best_first_and_honours_the_limit() -> None:
    engine = engine_with()
    for oid, (side, price, qty) in enumerate(
        [("buy", 98, 1), ("buy", 99, 2), ("buy", 99, 3), ("buy", 97, 4), ("sell", 101, 5), ("sell", 103, 6)],
        start=1,
    ):
        engine.apply(limit(oid, oid, side, price, qty))
    engine.apply(cancel(4, 4))
    seq = engine.market_state(MARKET)[1]
    assert engine.depth(MARKET, 10) == (seq, [(99, 5), (98, 1)], [(101, 5), (103, 6)])
    assert engine.depth(MARKET, 1) == (seq, [(99, 5)], [(101, 5)])
    assert engine.depth(MARKET, 0) == (seq, [], [])


@pytest.mark.parametrize("bad", [-1, True, 1.5, "3"])
def test_depth_with_a_bad_limit_raises_value_error(bad: object) -> None:
    with pytest.raises(ValueError):
        engine_with().depth(MARKET, bad)  # type: ignore[arg-type]


def test_queries_about_an_unknown_market_raise_key_error() -> None:
    engine = engine_with()
    for query in (engine.market_state, engine.open_orders, lambda m: engine.depth(m, 1)):
        with pytest.raises(KeyError):
            query("NOPE")


def test_open_orders_lists_bids_then_asks_in_priority_order_skipping_cancelled_ones() -> None:
    engine = engine_with()
    for oid, (side, price) in enumerate([("buy", 98), ("buy", 99), ("buy", 99), ("sell", 102), ("sell", 101)], 1):
        engine.apply(limit(oid, 1, side, price, oid))
    engine.apply(cancel(2, 1))
    assert [(o.order_id, o.price) for o in engine.open_orders(MARKET)] == [(3, 99), (1, 98), (5, 101), (4, 102)]


def test_an_order_cancelled_in_the_middle_of_a_level_is_skipped_when_matching() -> None:
    engine = engine_with()
    for oid in (1, 2, 3):
        engine.apply(limit(oid, oid, "sell", 100, 1))
    engine.apply(cancel(1, 1))
    engine.apply(cancel(2, 2))
    events = engine.apply(limit(4, 4, "buy", 100, 2))
    assert shapes(events) == [("accepted", 4), ("trade", 3, 4, 100, 1), ("done", 3)]
    assert engine.depth(MARKET, 5)[1:] == ([(100, 1)], [])


def test_apply_raises_type_error_for_something_that_is_not_a_command() -> None:
    with pytest.raises(TypeError, match="not a command"):
        Engine().apply({"type": "new"})  # type: ignore[arg-type]


def test_events_of_a_whole_session_form_a_verifiable_chain() -> None:
    engine = engine_with()
    events = []
    for cmd in [
        limit(1, 1, "sell", 100, 5),
        limit(2, 2, "buy", 100, 2),
        market(3, 3, "buy", quote=1000),
        cancel(1, 1),
        cancel(99, 1),
        HaltMarket(MARKET, 5),
        ResumeMarket(MARKET, 6),
    ]:
        events.extend(engine.apply(cmd))
    verify_chain(events, prev_hex=engine_with().market_state(MARKET)[2])
