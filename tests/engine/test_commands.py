import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from matching.engine import (
    COMMAND_TYPES,
    AddMarket,
    CancelAll,
    CancelOrder,
    Command,
    HaltMarket,
    NewOrder,
    ResumeMarket,
    command_from_dict,
)

ids = st.integers(min_value=0, max_value=2**63)
positive = st.integers(min_value=1, max_value=2**63)
markets = st.text(min_size=1, max_size=12)
stps = st.sampled_from(["cancel_incoming", "cancel_resting", "cancel_both"])
sides = st.sampled_from(["buy", "sell"])


@st.composite
def new_orders(draw: st.DrawFn) -> NewOrder:
    market, oid, user, ts = draw(markets), draw(ids), draw(ids), draw(ids)
    kind = draw(st.sampled_from(["limit", "market_sell", "market_buy_qty", "market_buy_quote"]))
    if kind == "limit":
        tif = draw(st.sampled_from(["GTC", "IOC", "FOK"]))
        post_only = tif == "GTC" and draw(st.booleans())
        return NewOrder(
            market,
            oid,
            user,
            draw(sides),
            "limit",
            draw(positive),
            draw(positive),
            None,
            tif,
            post_only,
            draw(stps),
            ts,
        )
    side = "sell" if kind == "market_sell" else "buy"
    qty = None if kind == "market_buy_quote" else draw(positive)
    quote = draw(positive) if kind == "market_buy_quote" else None
    return NewOrder(market, oid, user, side, "market", None, qty, quote, "IOC", False, draw(stps), ts)


commands = st.one_of(
    new_orders(),
    st.builds(CancelOrder, markets, ids, ids, ids),
    st.builds(CancelAll, markets, ids, ids),
    st.builds(AddMarket, markets, ids),
    st.builds(HaltMarket, markets, ids),
    st.builds(ResumeMarket, markets, ids),
)


@given(commands)
def test_every_command_round_trips_through_to_dict_and_json(cmd: Command) -> None:
    d = cmd.to_dict()
    assert command_from_dict(d) == cmd
    assert command_from_dict(json.loads(json.dumps(d))) == cmd


@given(commands)
def test_command_dict_has_type_first_then_the_fields_in_declared_order(cmd: Command) -> None:
    keys = list(cmd.to_dict())
    assert keys[0] == "type"
    assert COMMAND_TYPES[cmd.to_dict()["type"]] is type(cmd)
    assert keys[1:] == list(type(cmd).__dataclass_fields__)


def test_new_order_dict_keys_are_exactly_the_documented_ones() -> None:
    cmd = NewOrder("M", 1, 2, "buy", "limit", 10, 3, None, "GTC", False, "cancel_incoming", 5)
    assert list(cmd.to_dict()) == [
        "type",
        "market",
        "order_id",
        "user_id",
        "side",
        "order_type",
        "price",
        "quantity",
        "quote_quantity",
        "time_in_force",
        "post_only",
        "stp",
        "ts",
    ]


def base_new() -> dict[str, Any]:
    return NewOrder("M", 1, 2, "buy", "limit", 10, 3, None, "GTC", False, "cancel_incoming", 5).to_dict()


@pytest.mark.parametrize("key", [k for k in base_new() if k != "type"])
def test_new_order_dict_missing_any_key_is_rejected(key: str) -> None:
    d = base_new()
    del d[key]
    with pytest.raises(ValueError, match=rf"missing key.*{key}"):
        command_from_dict(d)


def test_command_dict_with_an_unexpected_key_is_rejected() -> None:
    d = base_new()
    d["qty"] = 3
    with pytest.raises(ValueError, match=r"unexpected key.*qty"):
        command_from_dict(d)


@pytest.mark.parametrize("bad", [None, "nope", 3, "New", ""])
def test_command_dict_with_unknown_type_is_rejected(bad: object) -> None:
    d = base_new()
    d["type"] = bad
    with pytest.raises(ValueError, match="unknown command type"):
        command_from_dict(d)


def test_command_dict_without_type_is_rejected() -> None:
    d = base_new()
    del d["type"]
    with pytest.raises(ValueError, match="unknown command type"):
        command_from_dict(d)


@pytest.mark.parametrize("bad", [None, [], "x", 3])
def test_command_that_is_not_a_dict_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="must be a dict"):
        command_from_dict(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("key", ["order_id", "user_id", "price", "quantity", "ts"])
def test_bool_is_not_accepted_where_an_int_is_expected(key: str) -> None:
    d = base_new()
    d[key] = True
    with pytest.raises(ValueError, match=f"{key} must be an int"):
        command_from_dict(d)


@pytest.mark.parametrize("key", ["order_id", "user_id", "price", "quantity", "ts"])
@pytest.mark.parametrize("bad", ["1", 1.0, 2.5, [1]])
def test_wrong_types_for_int_fields_are_rejected(key: str, bad: object) -> None:
    d = base_new()
    d[key] = bad
    with pytest.raises(ValueError, match="must be an int"):
        command_from_dict(d)


@pytest.mark.parametrize("key", ["price", "quantity"])
@pytest.mark.parametrize("bad", [0, -1, -(2**70)])
def test_zero_or_negative_price_and_quantity_are_rejected(key: str, bad: int) -> None:
    d = base_new()
    d[key] = bad
    with pytest.raises(ValueError, match=f"{key} must be >= 1"):
        command_from_dict(d)


@pytest.mark.parametrize("bad", [0, -5])
def test_zero_or_negative_quote_quantity_is_rejected(bad: int) -> None:
    d = NewOrder("M", 1, 2, "buy", "market", None, None, 100, "IOC", False, "cancel_incoming", 5).to_dict()
    d["quote_quantity"] = bad
    with pytest.raises(ValueError, match="quote_quantity must be >= 1"):
        command_from_dict(d)


@pytest.mark.parametrize("key", ["order_id", "user_id", "ts"])
def test_negative_ids_and_timestamps_are_rejected(key: str) -> None:
    d = base_new()
    d[key] = -1
    with pytest.raises(ValueError, match=f"{key} must be >= 0"):
        command_from_dict(d)


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("side", "BUY"),
        ("side", "bid"),
        ("order_type", "stop"),
        ("time_in_force", "GTD"),
        ("time_in_force", "gtc"),
        ("stp", "none"),
        ("side", 1),
    ],
)
def test_unknown_enum_values_are_rejected(key: str, bad: object) -> None:
    d = base_new()
    d[key] = bad
    with pytest.raises(ValueError, match=f"{key} must be one of"):
        command_from_dict(d)


@pytest.mark.parametrize("bad", [1, 0, "true", None])
def test_post_only_must_be_a_real_bool(bad: object) -> None:
    d = base_new()
    d["post_only"] = bad
    with pytest.raises(ValueError, match="post_only must be a bool"):
        command_from_dict(d)


@pytest.mark.parametrize("bad", ["", 5, None, b"M"])
def test_market_must_be_a_non_empty_str(bad: object) -> None:
    d = base_new()
    d["market"] = bad
    with pytest.raises(ValueError, match="market must"):
        command_from_dict(d)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"price": None}, "price is required for a limit order"),
        ({"quantity": None}, "quantity is required for a limit order"),
        ({"quote_quantity": 5}, "quote_quantity is only allowed on a market buy"),
        ({"order_type": "market"}, "price must be None for a market order"),
        (
            {"order_type": "market", "price": None, "time_in_force": "IOC", "side": "sell", "quantity": None},
            "market sell needs quantity",
        ),
        (
            {"order_type": "market", "price": None, "time_in_force": "IOC", "side": "sell", "quote_quantity": 9},
            "market sell needs quantity and no quote_quantity",
        ),
        (
            {"order_type": "market", "price": None, "time_in_force": "IOC", "quote_quantity": 9},
            "market buy needs exactly one of quantity or quote_quantity",
        ),
        (
            {"order_type": "market", "price": None, "time_in_force": "IOC", "quantity": None},
            "market buy needs exactly one of quantity or quote_quantity",
        ),
    ],
)
def test_inconsistent_new_orders_are_rejected(changes: dict[str, Any], message: str) -> None:
    d = base_new()
    d.update(changes)
    with pytest.raises(ValueError, match=message):
        command_from_dict(d)


def test_constructing_an_invalid_command_directly_raises_the_same_error() -> None:
    with pytest.raises(ValueError, match="quantity must be >= 1"):
        NewOrder("M", 1, 2, "buy", "limit", 10, 0, None, "GTC", False, "cancel_incoming", 5)
    with pytest.raises(ValueError, match="order_id must be an int"):
        CancelOrder("M", False, 2, 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="market must not be empty"):
        AddMarket("", 0)


@pytest.mark.parametrize(
    "d",
    [
        {"type": "cancel", "market": "M", "order_id": 1, "user_id": 2},
        {"type": "cancel_all", "market": "M", "user_id": "2", "ts": 1},
        {"type": "add_market", "market": "M", "ts": 1.5},
        {"type": "halt_market", "market": None, "ts": 1},
        {"type": "resume_market", "market": "M", "ts": 1, "user_id": 1},
    ],
)
def test_malformed_non_order_commands_are_rejected(d: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        command_from_dict(d)


def test_commands_are_frozen_and_slotted() -> None:
    cmd = CancelOrder("M", 1, 2, 3)
    with pytest.raises(AttributeError):
        cmd.order_id = 5  # type: ignore[misc]
    assert not hasattr(cmd, "__dict__")


@pytest.mark.parametrize(
    "changes",
    [
        {"post_only": True, "time_in_force": "IOC"},
        {"post_only": True, "time_in_force": "FOK"},
        {"order_type": "market", "price": None, "time_in_force": "GTC"},
        {"order_type": "market", "price": None, "time_in_force": "FOK", "quantity": None, "quote_quantity": 7},
        {"order_type": "market", "price": None, "time_in_force": "IOC", "post_only": True},
    ],
)
def test_well_formed_but_contradictory_orders_parse_and_are_left_to_the_engine(changes: dict[str, Any]) -> None:
    d = base_new()
    d.update(changes)
    assert command_from_dict(d).to_dict() == d
