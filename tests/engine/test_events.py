import dataclasses
import json
from hashlib import sha256
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from matching.engine import (
    EVENT_TYPES,
    GENESIS_HASH,
    AddMarket,
    CancelOrder,
    Chain,
    ChainError,
    Engine,
    Event,
    MarketAdded,
    MarketHalted,
    MarketResumed,
    NewOrder,
    OrderAccepted,
    OrderCancelled,
    OrderDone,
    OrderRejected,
    Trade,
    canonical,
    chain_hash,
    event_from_dict,
    verify_chain,
)

from .canon import reference_canonical

# Quotes, backslashes, control characters, non-ASCII, astral-plane characters,
# a lone surrogate, a percent sign, a colon and digits (the market is written
# length-prefixed, with a colon after the length).
AWKWARD_MARKETS = [
    "BTC-USD",
    'we"ird',
    "back\\slash",
    "tab\tnew\nline\x00nul\x7f",
    "prix-€",
    "日本円",
    "emoji-🚀",
    "lone-\ud800",
    "100%",
    "%d%s%%",
    "%(market)s",
    " ",
    "12:34",
    ":",
]

markets = st.one_of(st.sampled_from(AWKWARD_MARKETS), st.text(min_size=1, max_size=10))
naturals = st.integers(min_value=0, max_value=2**64)
maybe = st.one_of(st.none(), naturals)
hashes = st.binary(min_size=32, max_size=32).map(bytes.hex)


def _common() -> dict[str, Any]:
    return {"market": markets, "seq": naturals, "ts": naturals, "hash": hashes}


events = st.one_of(
    st.builds(MarketAdded, **_common()),
    st.builds(MarketHalted, **_common()),
    st.builds(MarketResumed, **_common()),
    st.builds(
        OrderAccepted,
        **_common(),
        order_id=naturals,
        user_id=naturals,
        side=st.sampled_from(["buy", "sell"]),
        order_type=st.sampled_from(["limit", "market"]),
        price=maybe,
        quantity=maybe,
        quote_quantity=maybe,
        time_in_force=st.sampled_from(["GTC", "IOC", "FOK"]),
        post_only=st.booleans(),
        stp=st.sampled_from(["cancel_incoming", "cancel_resting", "cancel_both"]),
    ),
    st.builds(
        Trade,
        **_common(),
        maker_order_id=naturals,
        maker_user_id=naturals,
        taker_order_id=naturals,
        taker_user_id=naturals,
        taker_side=st.sampled_from(["buy", "sell"]),
        price=naturals,
        quantity=naturals,
        maker_remaining=naturals,
        taker_remaining=maybe,
        taker_remaining_quote=maybe,
    ),
    st.builds(
        OrderCancelled,
        **_common(),
        order_id=naturals,
        user_id=naturals,
        remaining=maybe,
        remaining_quote=maybe,
        reason=st.sampled_from(["user", "ioc", "self_trade", "no_liquidity"]),
    ),
    st.builds(
        OrderRejected,
        **_common(),
        order_id=maybe,
        user_id=maybe,
        request=st.sampled_from(["new", "cancel", "cancel_all", "add_market", "halt_market", "resume_market"]),
        reason=st.sampled_from(
            [
                "duplicate_order_id",
                "unknown_market",
                "market_halted",
                "post_only_would_cross",
                "fok_not_fillable",
                "unknown_order",
                "not_owner",
                "already_done",
                "market_exists",
                "invalid",
            ]
        ),
    ),
    st.builds(OrderDone, **_common(), order_id=naturals, user_id=naturals, reason=st.just("filled")),
)


@given(events)
def test_canonical_bytes_follow_the_documented_layout_for_every_event_type(event: Event) -> None:
    assert canonical(event) == reference_canonical(event)
    assert event.canonical() == canonical(event)


@given(events, events)
def test_events_with_different_fields_never_share_canonical_bytes(a: Event, b: Event) -> None:
    assert (canonical(a) == canonical(b)) == (a.to_dict() == b.to_dict())


@given(events)
def test_every_event_round_trips_through_to_dict_and_json(event: Event) -> None:
    d = event.to_dict()
    assert event_from_dict(d, event.hash) == event
    decoded = event_from_dict(json.loads(json.dumps(d)), event.hash)
    assert decoded == event
    assert canonical(decoded) == canonical(event)


@given(events)
def test_to_dict_has_type_first_and_every_field_but_hash(event: Event) -> None:
    d = event.to_dict()
    assert next(iter(d)) == "type"
    assert EVENT_TYPES[d["type"]] is type(event)
    assert "hash" not in d
    assert set(d) - {"type"} == {f.name for f in dataclasses.fields(event)} - {"hash"}


def test_every_trade_event_has_the_same_key_set_whether_by_lots_or_by_quote() -> None:
    chain = Chain("M")
    by_lots = chain.trade(1, 1, 2, 3, 4, "buy", 10, 2, 0, 5, None).to_dict()
    by_quote = chain.trade(1, 1, 2, 3, 4, "buy", 10, 2, 0, None, 37).to_dict()
    assert by_lots.keys() == by_quote.keys()
    assert (by_lots["taker_remaining"], by_lots["taker_remaining_quote"]) == (5, None)
    assert (by_quote["taker_remaining"], by_quote["taker_remaining_quote"]) == (None, 37)


def emit_every_shape(chain: Chain) -> list[Event]:
    """One event of every kind and template the chain has, in each None shape."""
    out: list[Event] = [chain.market_added(5)]
    # (order_type, side, price, quantity, quote_quantity)
    orders = [
        ("limit", "buy", 101, 3, None),
        ("limit", "sell", 101, 3, None),
        ("market", "buy", None, 3, None),
        ("market", "sell", None, 3, None),
        ("market", "buy", None, None, 900),
    ]
    for order_type, side, price, quantity, quote in orders:
        for tif in ("GTC", "IOC", "FOK"):
            for stp in ("cancel_incoming", "cancel_resting", "cancel_both"):
                for post_only in (False, True):
                    cmd = NewOrder(chain.market, 7, 8, side, order_type, price, quantity, quote, tif, post_only, stp, 9)
                    out.append(chain.accepted(cmd))
    for side in ("buy", "sell"):
        out.append(chain.trade(9, 1, 2, 7, 8, side, 101, 2, 0, 1, None))
        out.append(chain.trade(9, 1, 2, 7, 8, side, 101, 2, 4, None, 698))
    for reason in ("user", "ioc", "self_trade", "no_liquidity"):
        out.append(chain.cancelled(9, 7, 8, 3, None, reason))
        out.append(chain.cancelled(9, 7, 8, None, 17, reason))
    out.append(chain.done(9, 7, 8))
    out.append(chain.rejected(9, 7, 8, "new", "post_only_would_cross"))
    out.append(chain.rejected(9, None, None, "halt_market", "invalid"))
    out.append(chain.market_halted(10))
    out.append(chain.market_resumed(11))
    return out


def check_chain(emitted: list[Event], market: str) -> None:
    """Every event hashes the documented bytes of its fields onto its predecessor."""
    prev = GENESIS_HASH
    for seq, event in enumerate(emitted, start=1):
        assert event.market == market
        assert event.seq == seq
        assert canonical(event) == reference_canonical(event)
        prev = chain_hash(prev, reference_canonical(event))
        assert event.hash == prev, f"{type(event).__name__} at seq {seq}"
    verify_chain(emitted)


@pytest.mark.parametrize("market", AWKWARD_MARKETS)
def test_chain_emits_the_documented_bytes_for_every_shape_including_awkward_markets(market: str) -> None:
    emitted = emit_every_shape(Chain(market))
    assert {type(e) for e in emitted} == set(EVENT_TYPES.values())
    check_chain(emitted, market)


def test_integers_beyond_64_bits_take_the_wide_form_in_every_emitter() -> None:
    big = 2**64
    chain = Chain("M")
    emitted: list[Event] = [chain.market_added(big)]
    by_lots = NewOrder("M", big, 1, "buy", "limit", 3, 5, None, "GTC", False, "cancel_both", 2)
    by_quote = NewOrder("M", 1, 1, "buy", "market", None, None, big, "IOC", False, "cancel_both", 2)
    emitted.append(chain.accepted(by_lots))
    emitted.append(chain.accepted(by_quote))
    emitted.append(chain.trade(2, 1, big, 3, 4, "sell", 10, 2, 0, 5, None))
    emitted.append(chain.trade(2, 1, 2, 3, 4, "buy", 10, 2, 0, None, big * 7))
    emitted.append(chain.cancelled(2, 7, 8, big, None, "ioc"))
    emitted.append(chain.done(2, big - 1, big))
    emitted.append(chain.rejected(2, big, None, "cancel", "unknown_order"))
    for event in emitted:
        assert canonical(event)[0] & 0x80, type(event).__name__
    check_chain(emitted, "M")


def test_the_books_inline_encoders_fall_back_to_the_wide_form_too() -> None:
    big = 2**64
    engine = Engine()
    commands = [
        AddMarket("M", 0),
        # Rests (inline accepted), then is cancelled (inline cancelled).
        NewOrder("M", big, 1, "sell", "limit", 10, 3, None, "GTC", False, "cancel_incoming", big),
        CancelOrder("M", big, 1, 5),
        # Two makers, one filled whole (inline trade and done), one in part.
        NewOrder("M", big + 10, 2, "sell", "limit", 10, 5, None, "GTC", False, "cancel_incoming", 6),
        NewOrder("M", big + 11, 3, "sell", "limit", 11, 4, None, "GTC", False, "cancel_incoming", 7),
        NewOrder("M", big + 12, 4, "buy", "limit", 11, 7, None, "GTC", False, "cancel_incoming", 8),
    ]
    emitted = [event for cmd in commands for event in engine.apply(cmd)]
    assert [type(e).__name__ for e in emitted] == [
        "MarketAdded",
        "OrderAccepted",
        "OrderCancelled",
        "OrderAccepted",
        "OrderAccepted",
        "OrderAccepted",
        "Trade",
        "OrderDone",
        "Trade",
        "OrderDone",
    ]
    assert all(canonical(e)[0] & 0x80 for e in emitted[1:])
    check_chain(emitted, "M")


def test_fast_built_events_are_genuine_frozen_instances_equal_to_normal_ones() -> None:
    event = Chain("M").done(3, 4, 5)
    assert type(event) is OrderDone
    assert isinstance(event, OrderDone)
    assert type(event.hash) is str
    assert len(event.hash) == 64
    assert event == OrderDone(market="M", seq=1, ts=3, order_id=4, user_id=5, reason="filled", hash=event.hash)
    assert event == event_from_dict(event.to_dict(), event.hash)
    assert hash(event) == hash(dataclasses.replace(event))
    assert repr(event).startswith("OrderDone(")
    assert f"hash='{event.hash}'" in repr(event)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.order_id = 9  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.hash = "0" * 64  # type: ignore[misc]
    assert not hasattr(event, "__dict__")


def test_an_event_hash_reads_the_same_before_and_after_its_first_read() -> None:
    chain = Chain("M")
    first, second = chain.done(3, 4, 5), chain.done(3, 4, 5)
    assert first == first
    assert first != second
    assert second.hash == chain.last_hash
    assert first.hash == first.hash
    assert dataclasses.replace(second) == second
    assert dataclasses.astuple(second)[-1] == second.hash


def test_chain_hash_is_sha256_of_previous_raw_digest_and_canonical_bytes() -> None:
    assert GENESIS_HASH == "00" * 32
    canon = b'{"market":"M","seq":1,"ts":0,"type":"market_added"}'
    assert chain_hash(GENESIS_HASH, canon) == sha256(bytes(32) + canon).hexdigest()
    second = chain_hash(chain_hash(GENESIS_HASH, canon), b"x")
    assert second == sha256(bytes.fromhex(chain_hash(GENESIS_HASH, canon)) + b"x").hexdigest()


def sample_chain() -> list[Event]:
    return emit_every_shape(Chain("BTC-USD"))[:6]


def test_verify_chain_accepts_an_intact_chain_and_a_suffix_given_its_predecessor() -> None:
    events = sample_chain()
    verify_chain(events)
    verify_chain(events[3:], prev_hex=events[2].hash)
    verify_chain([])


def test_verify_chain_names_the_seq_of_a_tampered_event() -> None:
    events = sample_chain()
    events[3] = dataclasses.replace(events[3], ts=events[3].ts + 1)
    with pytest.raises(ChainError, match="hash mismatch at seq 4") as info:
        verify_chain(events)
    assert info.value.seq == 4


def test_verify_chain_names_the_seq_after_a_gap() -> None:
    events = sample_chain()
    del events[2]
    with pytest.raises(ChainError, match="seq 4 found where seq 3 was expected") as info:
        verify_chain(events)
    assert info.value.seq == 4


def test_verify_chain_from_genesis_must_start_at_seq_one() -> None:
    with pytest.raises(ChainError) as info:
        verify_chain(sample_chain()[1:])
    assert info.value.seq == 2


def test_verify_chain_refuses_a_suffix_with_the_wrong_predecessor() -> None:
    events = sample_chain()
    with pytest.raises(ChainError) as info:
        verify_chain(events[3:], prev_hex=events[1].hash)
    assert info.value.seq == 4


def test_verify_chain_refuses_mixed_markets_and_unchained_events() -> None:
    events = sample_chain()
    other = emit_every_shape(Chain("ETH-USD"))[1]
    with pytest.raises(ChainError, match="belongs to market 'ETH-USD'"):
        verify_chain([*events[:1], other])
    with pytest.raises(ChainError, match="not part of any chain"):
        verify_chain([dataclasses.replace(events[0], seq=0)])


def test_verify_chain_refuses_a_malformed_predecessor_hash() -> None:
    with pytest.raises(ChainError):
        verify_chain(sample_chain(), prev_hex="xyz")
    with pytest.raises(ChainError):
        verify_chain(sample_chain(), prev_hex="00")


def valid_trade() -> dict[str, Any]:
    return Chain("M").trade(1, 1, 2, 3, 4, "buy", 10, 2, 0, 5, None).to_dict()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("price"), "missing key"),
        (lambda d: d.update(extra=1), "unexpected key"),
        (lambda d: d.update(type="fill"), "unknown event type"),
        (lambda d: d.pop("type"), "unknown event type"),
        (lambda d: d.update(price=True), "'price' must be a non-negative int"),
        (lambda d: d.update(price="10"), "'price' must be a non-negative int"),
        (lambda d: d.update(price=None), "'price' must be a non-negative int"),
        (lambda d: d.update(seq=-1), "'seq' must be a non-negative int"),
        (lambda d: d.update(taker_remaining=1.5), "'taker_remaining' must be a non-negative int or None"),
        (lambda d: d.update(taker_side="bid"), "'taker_side' must be one of"),
        (lambda d: d.update(market=""), "'market' must be a non-empty str"),
    ],
)
def test_event_from_dict_rejects_malformed_events(change: Any, message: str) -> None:
    d = valid_trade()
    change(d)
    with pytest.raises(ValueError, match=message):
        event_from_dict(d, "ab" * 32)


@pytest.mark.parametrize("bad", ["", "ab" * 31, "AB" * 32, "zz" * 32, None, 5])
def test_event_from_dict_rejects_a_malformed_hash(bad: object) -> None:
    with pytest.raises(ValueError, match="hash must be 64 lowercase hex"):
        event_from_dict(valid_trade(), bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "field", "bad"),
    [
        ("cancelled", "reason", "expired"),
        ("rejected", "reason", "nope"),
        ("rejected", "request", "modify"),
        ("done", "reason", "cancelled"),
        ("accepted", "post_only", 0),
        ("accepted", "stp", "none"),
    ],
)
def test_event_from_dict_rejects_unknown_enum_values(kind: str, field: str, bad: object) -> None:
    event = next(e for e in emit_every_shape(Chain("M")) if e.to_dict()["type"] == kind)
    d = event.to_dict()
    d[field] = bad
    with pytest.raises(ValueError, match=f"'{field}' must be"):
        event_from_dict(d, event.hash)


def test_event_from_dict_rejects_a_non_dict() -> None:
    with pytest.raises(ValueError, match="must be a dict"):
        event_from_dict([], "ab" * 32)  # type: ignore[arg-type]
