"""The engine's fast path: the builders of the frequent events, and how they make them cheap.

What: ``EventBuilders`` is the base class of ``chain.Chain`` and holds the builders of the four
events that orders and fills produce, ``accepted``, ``trade``, ``cancelled`` and ``done``; each
numbers its event, hashes its canonical bytes onto the previous digest and returns the event.
Every event the book emits for an order comes from one of them.  The rare events
(``market_added``, ``rejected``, ...) are built in ``chain.py`` the plain way.

Why: the events are most of what a command costs.  Each needs its own sha256 call, its own
canonical bytes and its own frozen object (1.7 events per command on the benchmark stream), and
the plain ways of making them cost more than the matching itself:

* the generic encoder (``events._encode``) walks every field; here everything of the canonical
  bytes before the integers, which depends only on the market and on the event's enum values and
  None pattern, is made once per market and shape (``_Shapes``), and one ``struct.pack`` writes
  the previous raw digest, that prefix and the integers into one buffer for sha256.  An integer
  too large for 8 bytes makes ``struct.pack`` fail and the event falls back to the generic
  encoder;
* a frozen dataclass's ``__init__`` stores every field through ``object.__setattr__`` (about
  1.4 µs for a 14-field event on the benchmark machine, more than the sha256 and the packing
  together).  Here each event is made as an instance of a twin class with the identical slot
  layout, ordinary attribute assignment and no ``__init__``, filled with plain attribute stores
  and retyped to the real event class by assigning ``__class__``, which CPython allows between
  classes whose layouts are the same.  The result is a genuine, frozen instance of the event
  class, equal to and hashing like one built by its constructor;
* an event's ``hash`` is a 64-digit hex string, and hex-encoding every digest as it is made
  would cost more than most consumers spend reading it.  The builders store the raw 32-byte
  digest in the ``hash`` slot instead, and ``_HexDigest``, installed below as the ``hash``
  attribute of every event class in place of the slot's own descriptor, turns it into hex on
  first read and keeps the hex.  Events built by their constructor or by ``event_from_dict``
  store the hex as given.  Nothing outside the engine can tell the difference.

This is the only module of the engine that assigns ``__class__`` or replaces a descriptor.
The tests check both encodings of every builder and every shape against an independent encoder
(``tests/engine/canon.py``), that the events are genuine frozen instances equal to normally built
ones, and run every event of the differential and property tests through these builders.
"""

import struct
from collections.abc import Callable
from functools import lru_cache
from hashlib import sha256
from typing import Any

from .commands import ORDER_TYPES, SIDES, STP_MODES, TIMES_IN_FORCE, NewOrder
from .events import (
    _DICT_FIELDS,
    _GENESIS_RAW,
    _INT,
    _LAYOUTS,
    _OPTIONAL,
    CANCEL_REASONS,
    EVENT_TYPES,
    Event,
    OrderAccepted,
    OrderCancelled,
    OrderDone,
    Trade,
    _encode,
)


class _HexDigest:
    """The ``hash`` attribute of every event class: a raw digest stored by a builder reads as hex."""

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


def _twin(cls: type) -> type:
    """A class with the slot layout of frozen dataclass ``cls``, ordinary attribute assignment
    and no ``__init__`` (so that calling it runs no Python frame)."""
    return type(f"_{cls.__name__}Twin", cls.__bases__, {"__slots__": cls.__slots__})  # type: ignore[attr-defined]


_AcceptedTwin = _twin(OrderAccepted)
_TradeTwin = _twin(Trade)
_CancelledTwin = _twin(OrderCancelled)
_DoneTwin = _twin(OrderDone)


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
        # trade[taker_side][by_quote] and cancelled[reason][by_quote], by_quote
        # being a bool (False 0, True 1): looked up without building a key tuple.
        self.trade = {
            side: tuple(
                _prefix(
                    Trade,
                    market,
                    taker_side=side,
                    taker_remaining=None if by_quote else 0,
                    taker_remaining_quote=0 if by_quote else None,
                )
                for by_quote in (False, True)
            )
            for side in SIDES
        }
        self.cancelled = {
            reason: tuple(
                _prefix(
                    OrderCancelled,
                    market,
                    reason=reason,
                    remaining=None if by_quote else 0,
                    remaining_quote=0 if by_quote else None,
                )
                for by_quote in (False, True)
            )
            for reason in CANCEL_REASONS
        }
        self.done = _prefix(OrderDone, market, reason="filled")
        self.pack_accepted = _packer(
            OrderAccepted, self.accepted["buy", "limit", "GTC", False, "cancel_incoming", True]
        )
        self.pack_trade = _packer(Trade, self.trade["buy"][False])
        self.pack_cancelled = _packer(OrderCancelled, self.cancelled["user"][False])
        self.pack_done = _packer(OrderDone, self.done)


_shapes = lru_cache(maxsize=1024)(_Shapes)


class EventBuilders:
    """The sequence, last digest and frequent-event builders of one market's chain."""

    __slots__ = (
        "_accepted",
        "_cancelled",
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
        # The raw 32-byte digest of the last event.
        self.last = last
        # Copied out of the shared per-market tables: one attribute load less
        # per event.
        shapes = _shapes(market)
        self._accepted = shapes.accepted
        self._resting = shapes.resting
        self._trade = shapes.trade
        self._cancelled = shapes.cancelled
        self._done = shapes.done
        self._pack_accepted = shapes.pack_accepted
        self._pack_trade = shapes.pack_trade
        self._pack_cancelled = shapes.pack_cancelled
        self._pack_done = shapes.pack_done

    def accepted(self, cmd: NewOrder) -> OrderAccepted:
        self.seq = seq = self.seq + 1
        e = _AcceptedTwin()
        e.market = self.market
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
        if order_type == "limit" and tif == "GTC":
            # The most frequent event of all, its prefix found without building a key tuple.
            prefix = self._resting[stp][side][post_only]
        else:
            prefix = self._accepted[side, order_type, tif, post_only, stp, quote_quantity is None]
        try:
            data = self._pack_accepted(
                self.last, prefix, seq, ts, order_id, user_id, price or 0, quantity or 0, quote_quantity or 0
            )
        except struct.error:
            fields = (self.market, seq, ts, order_id, user_id, side, order_type, price, quantity, quote_quantity)
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
                self._trade[taker_side][taker_remaining is None],
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
                self._cancelled[reason][remaining is None],
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
