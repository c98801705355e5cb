"""Events emitted by the matching engine, their canonical bytes and their parser.

The canonical form of an event is a fixed-layout binary encoding of every
field except ``hash`` (see ``canonical``); ``chain.py`` hashes it into each
market's chain.  ``event_from_dict`` rebuilds an event from its wire form.
"""

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from operator import index
from typing import Any, ClassVar

from .commands import ORDER_TYPES, SIDES, STP_MODES, TIMES_IN_FORCE

GENESIS_HASH = "0" * 64
UNCHAINED_HASH = "0" * 64
_GENESIS_RAW = bytes(32)

CANCEL_REASONS = ("user", "ioc", "self_trade", "no_liquidity")
REJECT_REASONS = (
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
)
REQUESTS = ("new", "cancel", "cancel_all", "add_market", "halt_market", "resume_market")
DONE_REASONS = ("filled",)


class _EventBase:
    __slots__ = ()
    TYPE: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.TYPE}
        for name in _DICT_FIELDS[type(self)]:
            out[name] = getattr(self, name)
        return out

    def canonical(self) -> bytes:
        return canonical(self)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class MarketAdded(_EventBase):
    TYPE: ClassVar[str] = "market_added"
    market: str
    seq: int
    ts: int
    hash: str


@dataclass(frozen=True, slots=True)
class MarketHalted(_EventBase):
    TYPE: ClassVar[str] = "market_halted"
    market: str
    seq: int
    ts: int
    hash: str


@dataclass(frozen=True, slots=True)
class MarketResumed(_EventBase):
    TYPE: ClassVar[str] = "market_resumed"
    market: str
    seq: int
    ts: int
    hash: str


@dataclass(frozen=True, slots=True)
class OrderAccepted(_EventBase):
    TYPE: ClassVar[str] = "accepted"
    market: str
    seq: int
    ts: int
    order_id: int
    user_id: int
    side: str
    order_type: str
    price: int | None
    quantity: int | None
    quote_quantity: int | None
    time_in_force: str
    post_only: bool
    stp: str
    hash: str


@dataclass(frozen=True, slots=True)
class Trade(_EventBase):
    """One fill.  ``taker_remaining`` is in lots; for a market buy by quote it is
    None and ``taker_remaining_quote`` carries the unspent budget instead."""

    TYPE: ClassVar[str] = "trade"
    market: str
    seq: int
    ts: int
    maker_order_id: int
    maker_user_id: int
    taker_order_id: int
    taker_user_id: int
    taker_side: str
    price: int
    quantity: int
    maker_remaining: int
    taker_remaining: int | None
    taker_remaining_quote: int | None
    hash: str


@dataclass(frozen=True, slots=True)
class OrderCancelled(_EventBase):
    TYPE: ClassVar[str] = "cancelled"
    market: str
    seq: int
    ts: int
    order_id: int
    user_id: int
    remaining: int | None
    remaining_quote: int | None
    reason: str
    hash: str


@dataclass(frozen=True, slots=True)
class OrderRejected(_EventBase):
    TYPE: ClassVar[str] = "rejected"
    market: str
    seq: int
    ts: int
    order_id: int | None
    user_id: int | None
    request: str
    reason: str
    hash: str


@dataclass(frozen=True, slots=True)
class OrderDone(_EventBase):
    TYPE: ClassVar[str] = "done"
    market: str
    seq: int
    ts: int
    order_id: int
    user_id: int
    reason: str
    hash: str


Event = MarketAdded | MarketHalted | MarketResumed | OrderAccepted | Trade | OrderCancelled | OrderRejected | OrderDone

EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        MarketAdded,
        MarketHalted,
        MarketResumed,
        OrderAccepted,
        Trade,
        OrderCancelled,
        OrderRejected,
        OrderDone,
    )
}

_DICT_FIELDS: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls) if f.name != "hash") for cls in EVENT_TYPES.values()
}


# --- canonical bytes -------------------------------------------------------
#
# canonical(event) =
#     code                  1 byte: the event type's number (_CODES), plus 0x80
#                           in the wide form (below)
#     market                len(m) in ASCII decimal, b":", then m, where
#                           m = market.encode("utf-8", "surrogatepass")
#     descriptor bytes      one byte per field that is not market, seq, ts or a
#                           plain int, in declaration order: an enum field its
#                           index in the field's tuple of values, a bool 0 or 1,
#                           an optional int 0 for None and 1 for an int
#     integers              seq, ts, then every int field (optional or not) in
#                           declaration order, None written as 0: 8 bytes
#                           little-endian each, or, in the wide form (used when
#                           some value is outside 0 <= v < 2**64), ASCII
#                           decimal followed by b";" each
#
# Every part has a fixed length or is self-delimiting, so two events with
# different fields never share canonical bytes.  Everything before the
# integers depends only on the market and the enum/None shape of an event, so
# chain.Chain keeps it ready-made per shape and formats only the integers, with
# one struct.pack call that also writes in the previous hash.

_CODES: dict[type, int] = {cls: code for code, cls in enumerate(EVENT_TYPES.values(), start=1)}
_WIDE = 0x80

_MARKET, _INT, _OPTIONAL, _BOOL, _ENUM = range(5)
_CHOICES: dict[str, tuple[str, ...]] = {
    "side": SIDES,
    "taker_side": SIDES,
    "order_type": ORDER_TYPES,
    "time_in_force": TIMES_IN_FORCE,
    "stp": STP_MODES,
    "request": REQUESTS,
}
_REASONS: dict[type, tuple[str, ...]] = {
    OrderCancelled: CANCEL_REASONS,
    OrderRejected: REJECT_REASONS,
    OrderDone: DONE_REASONS,
}


def _layout(cls: type) -> tuple[tuple[int, tuple[Any, ...]], ...]:
    """(kind, enum values) of each field of ``cls`` but hash, in declaration order."""
    out = []
    for f in fields(cls):
        if f.name == "hash":
            continue
        if f.name == "market":
            out.append((_MARKET, ()))
        elif f.type is int:
            out.append((_INT, ()))
        elif f.type == int | None:
            out.append((_OPTIONAL, ()))
        elif f.type is bool:
            out.append((_BOOL, (False, True)))
        elif f.name == "reason":
            out.append((_ENUM, _REASONS[cls]))
        else:
            out.append((_ENUM, _CHOICES[f.name]))
    return tuple(out)


_LAYOUTS = {cls: _layout(cls) for cls in EVENT_TYPES.values()}


def _market_bytes(market: str) -> bytes:
    raw = market.encode("utf-8", "surrogatepass")
    return b"%d:%s" % (len(raw), raw)


def _encode(cls: type[Event], values: Sequence[Any]) -> bytes:
    """Canonical bytes of an event of type ``cls`` whose fields (declaration
    order, hash left out) are ``values``.  ValueError if a field cannot be
    encoded (an unknown enum value, a non-integer number)."""
    layout = _LAYOUTS[cls]
    if len(values) != len(layout):
        raise ValueError(f"{cls.__name__} has {len(layout)} fields besides hash, got {len(values)} values")
    descriptor = bytearray()
    ints = []
    market = b""
    try:
        for (kind, choices), value in zip(layout, values, strict=True):
            if kind == _INT:
                ints.append(index(value))
            elif kind == _OPTIONAL:
                descriptor.append(value is not None)
                ints.append(0 if value is None else index(value))
            elif kind == _MARKET:
                market = _market_bytes(value)
            else:
                descriptor.append(choices.index(value))
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"cannot encode {cls.__name__}: {exc}") from None
    code = _CODES[cls]
    try:
        numbers = struct.pack(f"<{len(ints)}Q", *ints)
    except struct.error:
        code |= _WIDE
        numbers = b"".join([b"%d;" % number for number in ints])
    return b"%c%s%s%s" % (code, market, descriptor, numbers)


def canonical(event: Event) -> bytes:
    cls = type(event)
    return _encode(cls, [getattr(event, name) for name in _DICT_FIELDS[cls]])


# --- parsing ----------------------------------------------------------------

_Check = Callable[[str, object], None]


def _fail(name: str, expected: str, value: object) -> None:
    raise ValueError(f"event field {name!r} must be {expected}, got {value!r}")


def _int(name: str, value: object) -> None:
    if type(value) is not int or value < 0:
        _fail(name, "a non-negative int", value)


def _opt_int(name: str, value: object) -> None:
    if value is not None and (type(value) is not int or value < 0):
        _fail(name, "a non-negative int or None", value)


def _bool(name: str, value: object) -> None:
    if type(value) is not bool:
        _fail(name, "a bool", value)


def _market(name: str, value: object) -> None:
    if type(value) is not str or not value:
        _fail(name, "a non-empty str", value)


def _choice(*choices: str) -> _Check:
    def check(name: str, value: object) -> None:
        if type(value) is not str or value not in choices:
            _fail(name, f"one of {', '.join(choices)}", value)

    return check


_COMMON: dict[str, _Check] = {"market": _market, "seq": _int, "ts": _int}
_SPECS: dict[type, dict[str, _Check]] = {
    MarketAdded: {},
    MarketHalted: {},
    MarketResumed: {},
    OrderAccepted: {
        "order_id": _int,
        "user_id": _int,
        "side": _choice(*SIDES),
        "order_type": _choice(*ORDER_TYPES),
        "price": _opt_int,
        "quantity": _opt_int,
        "quote_quantity": _opt_int,
        "time_in_force": _choice(*TIMES_IN_FORCE),
        "post_only": _bool,
        "stp": _choice(*STP_MODES),
    },
    Trade: {
        "maker_order_id": _int,
        "maker_user_id": _int,
        "taker_order_id": _int,
        "taker_user_id": _int,
        "taker_side": _choice(*SIDES),
        "price": _int,
        "quantity": _int,
        "maker_remaining": _int,
        "taker_remaining": _opt_int,
        "taker_remaining_quote": _opt_int,
    },
    OrderCancelled: {
        "order_id": _int,
        "user_id": _int,
        "remaining": _opt_int,
        "remaining_quote": _opt_int,
        "reason": _choice(*CANCEL_REASONS),
    },
    OrderRejected: {
        "order_id": _opt_int,
        "user_id": _opt_int,
        "request": _choice(*REQUESTS),
        "reason": _choice(*REJECT_REASONS),
    },
    OrderDone: {"order_id": _int, "user_id": _int, "reason": _choice(*DONE_REASONS)},
}
_HEX = frozenset("0123456789abcdef")


def is_digest(value: object) -> bool:
    """Whether ``value`` is a hash as events carry it: 64 lowercase hex digits."""
    return type(value) is str and len(value) == 64 and _HEX.issuperset(value)


def event_from_dict(d: dict[str, Any], hash: str) -> Event:
    """Rebuild an event from ``to_dict`` output and its hash; ValueError if malformed."""
    try:
        kind = d.get("type")
    except AttributeError:
        raise ValueError(f"an event must be a dict, got {type(d).__name__}") from None
    if type(kind) is not str or kind not in EVENT_TYPES:
        raise ValueError(f"unknown event type {kind!r}")
    cls = EVENT_TYPES[kind]
    names = _DICT_FIELDS[cls]
    missing = [name for name in names if name not in d]
    if missing:
        raise ValueError(f"{kind!r} event is missing key(s): {', '.join(missing)}")
    extra = sorted(str(key) for key in d if key != "type" and key not in names)
    if extra:
        raise ValueError(f"{kind!r} event has unexpected key(s): {', '.join(extra)}")
    if not is_digest(hash):
        raise ValueError(f"hash must be 64 lowercase hex digits, got {hash!r}")
    spec = _SPECS[cls]
    for name in names:
        (_COMMON.get(name) or spec[name])(name, d[name])
    return cls(**{name: d[name] for name in names}, hash=hash)
