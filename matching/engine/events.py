"""Events emitted by the matching engine, their canonical bytes and hash chain.

The canonical form of an event is a fixed-layout binary encoding of every
field except ``hash`` (see ``canonical``).  Each market has its own chain:
``hash_n = sha256(raw(hash_{n-1}) + canonical_n)`` with 32 zero bytes before
seq 1.  Rejections of commands that name an unknown market belong to no chain:
they carry ``seq == 0`` and ``hash == UNCHAINED_HASH``.
"""

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from hashlib import sha256
from operator import index
from typing import Any, ClassVar, TypeVar

from .commands import ORDER_TYPES, SIDES, STP_MODES, TIMES_IN_FORCE, NewOrder

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


class ChainError(ValueError):
    """A chain of events does not verify; ``seq`` is the first event that breaks it."""

    def __init__(self, seq: int, message: str) -> None:
        super().__init__(message)
        self.seq = seq


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


class _HexDigest:
    """The ``hash`` attribute of every event class.

    Events made by the engine store the raw 32-byte digest and turn it into
    its 64-digit hex form on first read (then keep the hex): hex-encoding
    every digest inside ``apply`` would cost more than most consumers spend
    reading it.  Events built from their fields store the hex as given.
    """

    __slots__ = ("_slot",)

    def __init__(self, slot: Any) -> None:
        self._slot = slot

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = self._slot.__get__(obj, owner)
        if type(value) is bytes:
            value = value.hex()
            self._slot.__set__(obj, value)
        return value

    def __set__(self, obj: object, value: object) -> None:
        self._slot.__set__(obj, value)

    def __delete__(self, obj: object) -> None:
        self._slot.__delete__(obj)


for _cls in EVENT_TYPES.values():
    _cls.hash = _HexDigest(_cls.__dict__["hash"])  # type: ignore[assignment, union-attr]


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
# the chain keeps it ready-made per shape and formats only the integers, with
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


def chain_hash(prev_hex: str, canonical: bytes) -> str:
    return sha256(bytes.fromhex(prev_hex) + canonical).hexdigest()


def verify_chain(events: Iterable[Event], prev_hex: str = GENESIS_HASH) -> None:
    """Check seq continuity, market and hashes of one market's events.

    From GENESIS_HASH the first event must be seq 1; from any other hash the
    first event's seq is taken as given.  Raises ChainError naming the seq.
    """
    try:
        prev = bytes.fromhex(prev_hex)
    except (TypeError, ValueError):
        raise ChainError(0, f"prev_hex is not a hex digest: {prev_hex!r}") from None
    if len(prev) != 32:
        raise ChainError(0, f"prev_hex must be 64 hex digits, got {len(prev_hex)}")
    expected = 1 if prev_hex == GENESIS_HASH else None
    market = None
    for event in events:
        seq = event.seq
        if market is None:
            market = event.market
        elif event.market != market:
            raise ChainError(seq, f"seq {seq} belongs to market {event.market!r}, chain is {market!r}")
        if seq < 1:
            raise ChainError(seq, f"seq {seq} is not part of any chain")
        if expected is not None and seq != expected:
            raise ChainError(seq, f"seq {seq} found where seq {expected} was expected")
        try:
            canon = canonical(event)
        except ValueError as exc:
            raise ChainError(seq, f"seq {seq} cannot be encoded: {exc}") from None
        prev = sha256(prev + canon).digest()
        if prev.hex() != event.hash:
            raise ChainError(seq, f"hash mismatch at seq {seq}")
        expected = seq + 1


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
    if type(hash) is not str or len(hash) != 64 or not _HEX.issuperset(hash):
        raise ValueError(f"hash must be 64 lowercase hex digits, got {hash!r}")
    spec = _SPECS[cls]
    for name in names:
        (_COMMON.get(name) or spec[name])(name, d[name])
    return cls(**{name: d[name] for name in names}, hash=hash)


# --- emitting ---------------------------------------------------------------

E = TypeVar("E")


def _twin(cls: type[E]) -> type:
    """A class with the slot layout of frozen dataclass ``cls`` and ordinary
    attribute assignment.

    A frozen dataclass sets each field through object.__setattr__ (about 1.4 us
    for a 14-field event here), while the engine creates several events per
    command.  The emitters below fill an instance of the twin with plain
    attribute stores and then retype it to ``cls``, which CPython allows
    because the layouts match: the result is a genuine, frozen ``cls``.  The
    twin has no __init__, so calling it costs no Python frame.
    """
    return type(f"_{cls.__name__}Twin", cls.__bases__, {"__slots__": cls.__slots__})  # type: ignore[attr-defined]


_AcceptedTwin = _twin(OrderAccepted)
_TradeTwin = _twin(Trade)
_CancelledTwin = _twin(OrderCancelled)
_DoneTwin = _twin(OrderDone)
_RejectedTwin = _twin(OrderRejected)


def _prefix(cls: type[Event], market: str, **shape: Any) -> bytes:
    """Everything of the canonical bytes of ``cls`` before the integers, for
    the enum values and None pattern in ``shape`` (int fields marked by 0 and
    None fields by None)."""
    values = [market if name == "market" else shape.get(name, 0) for name in _DICT_FIELDS[cls]]
    whole = _encode(cls, values)
    return whole[: len(whole) - 8 * sum(kind in (_INT, _OPTIONAL) for kind, _ in _LAYOUTS[cls])]


def _packer(cls: type[Event], prefix: bytes) -> Callable[..., bytes]:
    """struct.pack for (previous raw hash, prefix, the integers of ``cls``)."""
    count = sum(kind in (_INT, _OPTIONAL) for kind, _ in _LAYOUTS[cls])
    return struct.Struct(f"<32s{len(prefix)}s{count}Q").pack


class _Shapes:
    """The canonical prefixes of one market's frequent event shapes, keyed by
    their enum fields and None pattern, and the packers that complete them.
    Every prefix of one event type has the same length, so one packer serves
    them all."""

    __slots__ = (
        "accepted",
        "cancelled",
        "done",
        "pack_accepted",
        "pack_cancelled",
        "pack_done",
        "pack_trade",
        "resting",
        "trade",
    )

    def __init__(self, market: str) -> None:
        # Key: (side, order_type, time_in_force, post_only, stp, quote_quantity is None).
        self.accepted = {
            (side, order_type, tif, post_only, stp, by_lots): _prefix(
                OrderAccepted,
                market,
                side=side,
                order_type=order_type,
                time_in_force=tif,
                post_only=post_only,
                stp=stp,
                price=0 if order_type == "limit" else None,
                quantity=0 if by_lots else None,
                quote_quantity=None if by_lots else 0,
            )
            for side in SIDES
            for order_type in ORDER_TYPES
            for tif in TIMES_IN_FORCE
            for post_only in (False, True)
            for stp in STP_MODES
            for by_lots in (True, False)
        }
        # The accepted prefixes of GTC limit orders again, as
        # resting[stp][side][post_only]: the engine's most frequent event,
        # looked up without building a key tuple.
        self.resting = {
            stp: {
                side: tuple(self.accepted[side, "limit", "GTC", post_only, stp, True] for post_only in (False, True))
                for side in SIDES
            }
            for stp in STP_MODES
        }
        # Key: (taker_side, by_quote).
        self.trade = {
            (side, by_quote): _prefix(
                Trade,
                market,
                taker_side=side,
                taker_remaining=None if by_quote else 0,
                taker_remaining_quote=0 if by_quote else None,
            )
            for side in SIDES
            for by_quote in (False, True)
        }
        # Key: (reason, by_quote).
        self.cancelled = {
            (reason, by_quote): _prefix(
                OrderCancelled,
                market,
                reason=reason,
                remaining=None if by_quote else 0,
                remaining_quote=0 if by_quote else None,
            )
            for reason in CANCEL_REASONS
            for by_quote in (False, True)
        }
        self.done = _prefix(OrderDone, market, reason="filled")
        self.pack_accepted = _packer(
            OrderAccepted, self.accepted["buy", "limit", "GTC", False, "cancel_incoming", True]
        )
        self.pack_trade = _packer(Trade, self.trade["buy", False])
        self.pack_cancelled = _packer(OrderCancelled, self.cancelled["user", False])
        self.pack_done = _packer(OrderDone, self.done)


_shapes = lru_cache(maxsize=1024)(_Shapes)


class Chain:
    """The sequence and hash chain of one market, and the only maker of its events.

    Frequent events are encoded from the market's _Shapes, so that only their
    integers are formatted per event; an integer too large for 8 bytes makes
    struct.pack fail and the event falls back to the generic encoder, as rare
    events always do.  The tests check both paths against an independent
    encoder.
    """

    __slots__ = (
        "_accepted",
        "_cancelled",
        "_cancelled_user",
        "_done",
        "_pack_accepted",
        "_pack_cancelled",
        "_pack_done",
        "_pack_trade",
        "_resting",
        "_trade",
        "last",
        "market",
        "seq",
    )

    def __init__(self, market: str, seq: int = 0, last: bytes = _GENESIS_RAW) -> None:
        self.market = market
        self.seq = seq
        self.last = last
        # Copied out of the shared per-market tables: one attribute load less
        # per event.
        shapes = _shapes(market)
        self._accepted = shapes.accepted
        self._resting = shapes.resting
        self._trade = shapes.trade
        self._cancelled = shapes.cancelled
        self._cancelled_user = shapes.cancelled["user", False]
        self._done = shapes.done
        self._pack_accepted = shapes.pack_accepted
        self._pack_trade = shapes.pack_trade
        self._pack_cancelled = shapes.pack_cancelled
        self._pack_done = shapes.pack_done

    @property
    def last_hash(self) -> str:
        return self.last.hex()

    def _emit(self, cls: type[E], ts: int, *values: Any) -> E:
        """A rare event, through the generic encoder; ``values`` are the fields after ts."""
        self.seq = seq = self.seq + 1
        fields = (self.market, seq, ts, *values)
        self.last = raw = sha256(self.last + _encode(cls, fields)).digest()  # type: ignore[arg-type]
        return cls(*fields, hash=raw.hex())

    def market_added(self, ts: int) -> MarketAdded:
        return self._emit(MarketAdded, ts)

    def market_halted(self, ts: int) -> MarketHalted:
        return self._emit(MarketHalted, ts)

    def market_resumed(self, ts: int) -> MarketResumed:
        return self._emit(MarketResumed, ts)

    def rejected(self, ts: int, order_id: int | None, user_id: int | None, request: str, reason: str) -> OrderRejected:
        return self._emit(OrderRejected, ts, order_id, user_id, request, reason)

    def accepted(self, cmd: NewOrder) -> OrderAccepted:
        self.seq = seq = self.seq + 1
        e = _AcceptedTwin()
        e.market = market = self.market
        e.seq = seq
        e.ts = ts = cmd.ts
        e.order_id = order_id = cmd.order_id
        e.user_id = user_id = cmd.user_id
        e.side = side = cmd.side
        e.order_type = order_type = cmd.order_type
        e.price = price = cmd.price
        e.quantity = quantity = cmd.quantity
        e.quote_quantity = quote_quantity = cmd.quote_quantity
        e.time_in_force = tif = cmd.time_in_force
        e.post_only = post_only = cmd.post_only
        e.stp = stp = cmd.stp
        try:
            data = self._pack_accepted(
                self.last,
                self._accepted[side, order_type, tif, post_only, stp, quote_quantity is None],
                seq,
                ts,
                order_id,
                user_id,
                price or 0,
                quantity or 0,
                quote_quantity or 0,
            )
        except struct.error:
            fields = (market, seq, ts, order_id, user_id, side, order_type, price, quantity, quote_quantity)
            data = self.last + _encode(OrderAccepted, (*fields, tif, post_only, stp))
        e.hash = self.last = sha256(data).digest()
        e.__class__ = OrderAccepted
        return e  # type: ignore[return-value]

    def trade(
        self,
        ts: int,
        maker_order_id: int,
        maker_user_id: int,
        taker_order_id: int,
        taker_user_id: int,
        taker_side: str,
        price: int,
        quantity: int,
        maker_remaining: int,
        taker_remaining: int | None,
        taker_remaining_quote: int | None,
    ) -> Trade:
        """Exactly one of ``taker_remaining`` (lots) and ``taker_remaining_quote``
        (budget of a market buy by quote) is None."""
        self.seq = seq = self.seq + 1
        try:
            data = self._pack_trade(
                self.last,
                self._trade[taker_side, taker_remaining is None],
                seq,
                ts,
                maker_order_id,
                maker_user_id,
                taker_order_id,
                taker_user_id,
                price,
                quantity,
                maker_remaining,
                taker_remaining or 0,
                taker_remaining_quote or 0,
            )
        except struct.error:
            fields = (self.market, seq, ts, maker_order_id, maker_user_id, taker_order_id, taker_user_id)
            rest = (taker_side, price, quantity, maker_remaining, taker_remaining, taker_remaining_quote)
            data = self.last + _encode(Trade, (*fields, *rest))
        e = _TradeTwin()
        e.market = self.market
        e.seq = seq
        e.ts = ts
        e.maker_order_id = maker_order_id
        e.maker_user_id = maker_user_id
        e.taker_order_id = taker_order_id
        e.taker_user_id = taker_user_id
        e.taker_side = taker_side
        e.price = price
        e.quantity = quantity
        e.maker_remaining = maker_remaining
        e.taker_remaining = taker_remaining
        e.taker_remaining_quote = taker_remaining_quote
        e.hash = self.last = sha256(data).digest()
        e.__class__ = Trade
        return e  # type: ignore[return-value]

    def cancelled(
        self,
        ts: int,
        order_id: int,
        user_id: int,
        remaining: int | None,
        remaining_quote: int | None,
        reason: str,
    ) -> OrderCancelled:
        """Exactly one of ``remaining`` and ``remaining_quote`` is None."""
        self.seq = seq = self.seq + 1
        try:
            data = self._pack_cancelled(
                self.last,
                self._cancelled[reason, remaining is None],
                seq,
                ts,
                order_id,
                user_id,
                remaining or 0,
                remaining_quote or 0,
            )
        except struct.error:
            fields = (self.market, seq, ts, order_id, user_id, remaining, remaining_quote, reason)
            data = self.last + _encode(OrderCancelled, fields)
        e = _CancelledTwin()
        e.market = self.market
        e.seq = seq
        e.ts = ts
        e.order_id = order_id
        e.user_id = user_id
        e.remaining = remaining
        e.remaining_quote = remaining_quote
        e.reason = reason
        e.hash = self.last = sha256(data).digest()
        e.__class__ = OrderCancelled
        return e  # type: ignore[return-value]

    def done(self, ts: int, order_id: int, user_id: int) -> OrderDone:
        self.seq = seq = self.seq + 1
        try:
            data = self._pack_done(self.last, self._done, seq, ts, order_id, user_id)
        except struct.error:
            data = self.last + _encode(OrderDone, (self.market, seq, ts, order_id, user_id, "filled"))
        e = _DoneTwin()
        e.market = self.market
        e.seq = seq
        e.ts = ts
        e.order_id = order_id
        e.user_id = user_id
        e.reason = "filled"
        e.hash = self.last = sha256(data).digest()
        e.__class__ = OrderDone
        return e  # type: ignore[return-value]


def unchained_rejection(market: str, ts: int, order_id: int | None, user_id: int | None, request: str) -> OrderRejected:
    """The rejection for a command naming a market the engine does not have."""
    e = _RejectedTwin()
    e.market = market
    e.seq = 0
    e.ts = ts
    e.order_id = order_id
    e.user_id = user_id
    e.request = request
    e.reason = "unknown_market"
    e.hash = UNCHAINED_HASH
    e.__class__ = OrderRejected
    return e  # type: ignore[return-value]
