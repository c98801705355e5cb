"""Events emitted by the matching engine, their canonical bytes and hash chain.

The canonical form of an event is
``json.dumps(event.to_dict(), sort_keys=True, separators=(",", ":")).encode()``;
``to_dict`` holds every field except ``hash``.  Each market has its own chain:
``hash_n = sha256(raw(hash_{n-1}) + canonical_n)`` with 32 zero bytes before
seq 1.  Rejections of commands that name an unknown market belong to no chain:
they carry ``seq == 0`` and ``hash == UNCHAINED_HASH``.
"""

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from functools import lru_cache
from hashlib import sha256
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


# --- canonical bytes -------------------------------------------------------


def json_string(text: str) -> bytes:
    """The JSON literal json.dumps writes for ``text`` (ASCII-escaped, quoted)."""
    return json.dumps(text).encode()


def _token(value: object) -> bytes:
    if value is None:
        return b"null"
    if value is True:
        return b"true"
    if value is False:
        return b"false"
    if type(value) is int:
        return b"%d" % value
    return json.dumps(value).encode()


_VARIABLE = object()


def template(cls: type[Event], fixed: Mapping[str, Any], placeholder: bytes) -> tuple[bytes, tuple[str, ...]]:
    """A %-template of the canonical bytes of ``cls``.

    Fields in ``fixed`` are written in as JSON; every other field becomes
    ``placeholder``.  Returns the template and the names of the placeholder
    fields in the order their values must be supplied (sorted key order).
    """
    parts = []
    names = []
    for key in sorted((*_DICT_FIELDS[cls], "type")):
        value = cls.TYPE if key == "type" else fixed.get(key, _VARIABLE)
        if value is _VARIABLE:
            token = placeholder
            names.append(key)
        else:
            # A literal % (possible in a market name) must survive formatting.
            token = _token(value).replace(b"%", b"%%")
        parts.append(json_string(key) + b":" + token)
    return b"{" + b",".join(parts) + b"}", tuple(names)


_GENERIC = {cls: template(cls, {}, b"%s") for cls in EVENT_TYPES.values()}


def render_canonical(cls: type[Event], values: Mapping[str, Any]) -> bytes:
    """Canonical bytes of an event of type ``cls`` whose fields are ``values``."""
    text, names = _GENERIC[cls]
    return text % tuple([_token(values[name]) for name in names])


def canonical(event: Event) -> bytes:
    text, names = _GENERIC[type(event)]
    return text % tuple([_token(getattr(event, name)) for name in names])


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
        prev = sha256(prev + canonical(event)).digest()
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


def _fast_constructor(cls: type[E]) -> Callable[..., E]:
    """A positional constructor for frozen dataclass ``cls`` that skips its __init__.

    A frozen dataclass sets each field through object.__setattr__ (about 1.4 us
    for a 14-field event here), while the engine creates several events per
    command.  The returned class has the identical slot layout and a plain
    __init__; it retypes each instance to ``cls`` before returning it, which
    CPython allows because the layouts match.
    """
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    body = "".join(f"    self.{name} = {name}\n" for name in names)
    source = f"def __init__(self, {', '.join(names)}):\n{body}    self.__class__ = cls\n"
    namespace: dict[str, Any] = {"cls": cls}
    # Same technique as dataclasses and namedtuple: the source is built only
    # from this module's own field names.
    exec(source, namespace)  # noqa: S102
    return type(
        f"_{cls.__name__}Builder",
        cls.__bases__,
        {"__slots__": cls.__slots__, "__init__": namespace["__init__"]},  # type: ignore[attr-defined]
    )


_new_accepted = _fast_constructor(OrderAccepted)
_new_trade = _fast_constructor(Trade)
_new_cancelled = _fast_constructor(OrderCancelled)
_new_done = _fast_constructor(OrderDone)
_new_rejected = _fast_constructor(OrderRejected)


def _baked(cls: type[Event], expected: tuple[str, ...], **fixed: Any) -> bytes:
    """An integer-only template; ``expected`` is the argument order its emitter
    uses, checked here so that a mismatch fails at import, not in a hash."""
    text, names = template(cls, fixed, b"%d")
    if names != expected:
        raise AssertionError(f"{cls.__name__} template takes {names}, emitter passes {expected}")
    return text


_TRADE_VARIABLES = (
    "maker_order_id",
    "maker_remaining",
    "maker_user_id",
    "price",
    "quantity",
    "seq",
    "taker_order_id",
    "taker_remaining",
    "taker_user_id",
    "ts",
)


class _Templates:
    """%-templates of the frequent event shapes of one market, keyed by their
    enum fields, with the market name and those fields already written in.

    A quote-budget shape differs from its lot shape only in which of two
    adjacent keys holds the number and which holds null, so both shapes take
    their integers in the same order.
    """

    __slots__ = ("accepted_limit", "accepted_market", "cancelled", "done", "trade")

    def __init__(self, market: str) -> None:
        self.accepted_limit = {
            (side, tif, stp, post_only): _baked(
                OrderAccepted,
                ("order_id", "price", "quantity", "seq", "ts", "user_id"),
                market=market,
                order_type="limit",
                quote_quantity=None,
                side=side,
                time_in_force=tif,
                stp=stp,
                post_only=post_only,
            )
            for side in SIDES
            for tif in TIMES_IN_FORCE
            for stp in STP_MODES
            for post_only in (False, True)
        }
        self.accepted_market = {
            (side, tif, stp, post_only, by_quote): _baked(
                OrderAccepted,
                ("order_id", "quote_quantity" if by_quote else "quantity", "seq", "ts", "user_id"),
                market=market,
                order_type="market",
                price=None,
                **({"quantity": None} if by_quote else {"quote_quantity": None}),
                side=side,
                time_in_force=tif,
                stp=stp,
                post_only=post_only,
            )
            for side in SIDES
            for tif in TIMES_IN_FORCE
            for stp in STP_MODES
            for post_only in (False, True)
            for by_quote in (False, True)
        }
        self.trade = {
            (side, by_quote): _baked(
                Trade,
                tuple(
                    "taker_remaining_quote" if by_quote and name == "taker_remaining" else name
                    for name in _TRADE_VARIABLES
                ),
                market=market,
                taker_side=side,
                **({"taker_remaining": None} if by_quote else {"taker_remaining_quote": None}),
            )
            for side in SIDES
            for by_quote in (False, True)
        }
        self.cancelled = {
            (reason, by_quote): _baked(
                OrderCancelled,
                ("order_id", "remaining_quote" if by_quote else "remaining", "seq", "ts", "user_id"),
                market=market,
                reason=reason,
                **({"remaining": None} if by_quote else {"remaining_quote": None}),
            )
            for reason in CANCEL_REASONS
            for by_quote in (False, True)
        }
        self.done = _baked(OrderDone, ("order_id", "seq", "ts", "user_id"), market=market, reason="filled")


_templates = lru_cache(maxsize=1024)(_Templates)


class Chain:
    """The sequence and hash chain of one market, and the only maker of its events.

    Order events are rendered from the market's _Templates so that only
    integers are formatted per event; the tests recompute each emitted hash
    from json.dumps.  Rare events go through the generic renderer.
    """

    __slots__ = ("_templates", "last", "market", "seq")

    def __init__(self, market: str, seq: int = 0, last: bytes = _GENESIS_RAW) -> None:
        self.market = market
        self.seq = seq
        self.last = last
        self._templates = _templates(market)

    @property
    def last_hash(self) -> str:
        return self.last.hex()

    def _emit(self, cls: type[E], ts: int, **values: Any) -> E:
        self.seq = seq = self.seq + 1
        values["market"] = self.market
        values["seq"] = seq
        values["ts"] = ts
        self.last = raw = sha256(self.last + render_canonical(cls, values)).digest()  # type: ignore[arg-type]
        return cls(**values, hash=raw.hex())

    def market_added(self, ts: int) -> MarketAdded:
        return self._emit(MarketAdded, ts)

    def market_halted(self, ts: int) -> MarketHalted:
        return self._emit(MarketHalted, ts)

    def market_resumed(self, ts: int) -> MarketResumed:
        return self._emit(MarketResumed, ts)

    def accepted(self, cmd: NewOrder) -> OrderAccepted:
        self.seq = seq = self.seq + 1
        order_id = cmd.order_id
        user_id = cmd.user_id
        side = cmd.side
        order_type = cmd.order_type
        price = cmd.price
        quantity = cmd.quantity
        quote_quantity = cmd.quote_quantity
        tif = cmd.time_in_force
        post_only = cmd.post_only
        stp = cmd.stp
        ts = cmd.ts
        if order_type == "limit":
            template = self._templates.accepted_limit[side, tif, stp, post_only]
            canon = template % (order_id, price, quantity, seq, ts, user_id)
        elif quantity is None:
            template = self._templates.accepted_market[side, tif, stp, post_only, True]
            canon = template % (order_id, quote_quantity, seq, ts, user_id)
        else:
            template = self._templates.accepted_market[side, tif, stp, post_only, False]
            canon = template % (order_id, quantity, seq, ts, user_id)
        self.last = raw = sha256(self.last + canon).digest()
        return _new_accepted(
            self.market,
            seq,
            ts,
            order_id,
            user_id,
            side,
            order_type,
            price,
            quantity,
            quote_quantity,
            tif,
            post_only,
            stp,
            raw.hex(),
        )

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
        by_quote = taker_remaining is None
        canon = self._templates.trade[taker_side, by_quote] % (
            maker_order_id,
            maker_remaining,
            maker_user_id,
            price,
            quantity,
            seq,
            taker_order_id,
            taker_remaining_quote if by_quote else taker_remaining,
            taker_user_id,
            ts,
        )
        self.last = raw = sha256(self.last + canon).digest()
        return _new_trade(
            self.market,
            seq,
            ts,
            maker_order_id,
            maker_user_id,
            taker_order_id,
            taker_user_id,
            taker_side,
            price,
            quantity,
            maker_remaining,
            taker_remaining,
            taker_remaining_quote,
            raw.hex(),
        )

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
        by_quote = remaining is None
        canon = self._templates.cancelled[reason, by_quote] % (
            order_id,
            remaining_quote if by_quote else remaining,
            seq,
            ts,
            user_id,
        )
        self.last = raw = sha256(self.last + canon).digest()
        return _new_cancelled(self.market, seq, ts, order_id, user_id, remaining, remaining_quote, reason, raw.hex())

    def done(self, ts: int, order_id: int, user_id: int) -> OrderDone:
        self.seq = seq = self.seq + 1
        canon = self._templates.done % (order_id, seq, ts, user_id)
        self.last = raw = sha256(self.last + canon).digest()
        return _new_done(self.market, seq, ts, order_id, user_id, "filled", raw.hex())

    def rejected(self, ts: int, order_id: int | None, user_id: int | None, request: str, reason: str) -> OrderRejected:
        return self._emit(OrderRejected, ts, order_id=order_id, user_id=user_id, request=request, reason=reason)


def unchained_rejection(market: str, ts: int, order_id: int | None, user_id: int | None, request: str) -> OrderRejected:
    """The rejection for a command naming a market the engine does not have."""
    return _new_rejected(market, 0, ts, order_id, user_id, request, "unknown_market", UNCHAINED_HASH)
