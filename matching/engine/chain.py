"""The hash chain of each market: the builders that make its events, and the check that verifies them.

Each market has its own chain: ``hash_n = sha256(raw(hash_{n-1}) + canonical_n)`` with 32 zero
bytes (GENESIS_HASH) before seq 1.  ``Chain`` numbers and hashes one market's events and has one
builder per event type; ``Book`` is a ``Chain`` and calls those builders for every event it emits.
``ChainCheck`` follows a stored or received chain an event at a time; ``verify_chain`` and
settlement (``market_settle``, the reconciliation check and ``verify_engine_chain``) all use it.
Rejections of commands that name an unknown market belong to no chain: they carry ``seq == 0``
and ``hash == UNCHAINED_HASH`` (``unchained_rejection``).
"""

from collections.abc import Iterable
from hashlib import sha256
from typing import Any, TypeVar

from .events import (
    GENESIS_HASH,
    UNCHAINED_HASH,
    Event,
    MarketAdded,
    MarketHalted,
    MarketResumed,
    OrderRejected,
    _encode,
    canonical,
    is_digest,
)
from .fast import EventBuilders

E = TypeVar("E")


def chain_hash(prev_hex: str, canonical: bytes) -> str:
    """One link: the hash of an event whose canonical bytes are ``canonical`` after ``prev_hex``."""
    return sha256(bytes.fromhex(prev_hex) + canonical).hexdigest()


class Chain(EventBuilders):
    """The sequence and hash chain of one market, and the only maker of its events.

    One builder per event type.  Each numbers its event, hashes its canonical
    bytes onto the previous digest and returns the event.  The builders of
    the events of orders and fills (``accepted``, ``trade``, ``cancelled``,
    ``done``) are the engine's fast path and live in ``fast.py``, with the
    sequence and last digest; the rare events are built here, through the
    generic encoder and their dataclass constructors.
    """

    __slots__ = ()

    @property
    def last_hash(self) -> str:
        return self.last.hex()

    def _emit(self, cls: type[E], ts: int, *values: Any) -> E:
        """A rare event; ``values`` are its fields after ts."""
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


def unchained_rejection(market: str, ts: int, order_id: int | None, user_id: int | None, request: str) -> OrderRejected:
    """The rejection for a command naming a market the engine does not have."""
    return OrderRejected(market, 0, ts, order_id, user_id, request, "unknown_market", UNCHAINED_HASH)


# --- checking ----------------------------------------------------------------


class ChainError(ValueError):
    """A chain of events does not verify; ``seq`` is the first event that breaks it."""

    def __init__(self, seq: int, message: str) -> None:
        super().__init__(message)
        self.seq = seq


class ChainCheck:
    """One market's chain, followed an event at a time: the one verifier of engine output.

    It stands after the event numbered ``seq`` whose hash is ``last`` (0 and
    GENESIS_HASH before the first event).  ``extend(event)`` takes the next
    event, or raises ChainError, leaving the check where it was, if the event
    is not the next link: it belongs to another market (the chain's market is
    the first event's when none is given), its seq is not ``seq + 1`` (any seq
    from 1 when ``seq`` is None: a chain picked up in the middle), its fields
    cannot be encoded, or its hash is not sha256(raw(last) + canonical(event)).

    A caller that stops at the first bad link (settlement, ``verify_chain``)
    just stops; one that reports every break (reconciliation) calls
    ``restart`` to go on after it.  With ``last`` None, after a hole or an
    event that could not be read, the next event's hash cannot be checked, and
    is taken as given.
    """

    __slots__ = ("last", "market", "seq")

    def __init__(self, market: str | None = None, seq: int | None = 0, last: str | None = GENESIS_HASH) -> None:
        self.market = market
        self.restart(seq, last)

    def restart(self, seq: int | None, last: str | None = None) -> None:
        """Stand after event ``seq`` whose hash is ``last`` (None: not known)."""
        if last is not None and not is_digest(last):
            raise ChainError(0, f"a chain hash must be 64 lowercase hex digits, got {last!r}")
        self.seq = seq
        self.last = last

    def extend(self, event: Event) -> None:
        seq = event.seq
        if self.market is None:
            self.market = event.market
        elif event.market != self.market:
            raise ChainError(seq, f"seq {seq} belongs to market {event.market!r}, chain is {self.market!r}")
        if seq < 1:
            raise ChainError(seq, f"seq {seq} is not part of any chain")
        if self.seq is not None and seq != self.seq + 1:
            raise ChainError(seq, f"seq {seq} found where seq {self.seq + 1} was expected")
        try:
            canon = canonical(event)
        except ValueError as exc:
            raise ChainError(seq, f"seq {seq} cannot be encoded: {exc}") from None
        if self.last is None:
            if not is_digest(event.hash):
                raise ChainError(seq, f"seq {seq} has no valid hash: {event.hash!r}")
        elif chain_hash(self.last, canon) != event.hash:
            raise ChainError(seq, f"hash mismatch at seq {seq}")
        self.seq = seq
        self.last = event.hash


def verify_chain(events: Iterable[Event], prev_hex: str = GENESIS_HASH) -> None:
    """Check seq continuity, market and hashes of one market's events.

    From GENESIS_HASH the first event must be seq 1; from any other hash the
    first event's seq is taken as given.  Raises ChainError naming the seq.
    """
    check = ChainCheck(seq=0 if prev_hex == GENESIS_HASH else None, last=prev_hex)
    for event in events:
        check.extend(event)
