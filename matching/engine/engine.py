"""The matching engine: many books, one deterministic ``apply`` per command."""

import gc
import io
import json
import pickle
from collections.abc import Callable
from hashlib import sha256
from itertools import repeat
from operator import lshift, or_
from typing import Any

from .book import _BOOK_BITS, _BOOK_MASK, Book, RestingOrder
from .chain import unchained_rejection
from .commands import (
    AddMarket,
    CancelAll,
    CancelOrder,
    Command,
    HaltMarket,
    NewOrder,
    ResumeMarket,
)
from .events import Event

SNAPSHOT_VERSION = 1
_SNAPSHOT_MAGIC = "matching.engine.snapshot"


class _PlainUnpickler(pickle.Unpickler):
    """Loads plain containers only: a snapshot never names a class, so refusing
    every global keeps a tampered snapshot from running code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"snapshot refers to {module}.{name}")


class Engine:
    __slots__ = ("_book_list", "_books", "_early", "_where")

    def __init__(self) -> None:
        self._books: dict[str, Book] = {}
        # The same books, indexed by their number.
        self._book_list: list[Book] = []
        # Owner and book of every order id the engine has accepted or rejected
        # on its merits, across all markets (ids are unique engine-wide), as
        # (owner << _BOOK_BITS) | book number.
        self._where: dict[int, int] = {}
        # Cancels that arrived before their order: order id -> {(market, user)}.
        self._early: dict[int, set[tuple[str, int]]] = {}

    def apply(self, cmd: Command) -> list[Event]:
        kind = type(cmd)
        # The two commands that make up nearly all traffic are handled here,
        # their common cases without a table lookup or a further call before
        # the book: each would be paid by nearly every command.
        if kind is NewOrder:
            book = self._books.get(cmd.market)  # type: ignore[union-attr]
            if book is not None:
                oid = cmd.order_id  # type: ignore[union-attr]
                where = self._where
                if (
                    oid not in where
                    and not self._early
                    and not book.halted
                    and cmd.order_type == "limit"  # type: ignore[union-attr]
                    and not cmd.post_only  # type: ignore[union-attr]
                ):
                    where[oid] = cmd.user_id << _BOOK_BITS | book.number  # type: ignore[union-attr]
                    return book.submit_limit(cmd)  # type: ignore[arg-type]
            return self._new(cmd)  # type: ignore[arg-type]
        if kind is CancelOrder:
            book = self._books.get(cmd.market)  # type: ignore[union-attr]
            if book is not None:
                # A live order here is owned by this book, so the engine-wide
                # id map need not be consulted.
                order = book.orders.get(cmd.order_id)  # type: ignore[union-attr]
                if order is not None and order[2] == cmd.user_id:  # type: ignore[union-attr]
                    return book.cancel(order, cmd.ts)
            return self._cancel(cmd)  # type: ignore[arg-type]
        handler = _HANDLERS.get(kind)
        if handler is None:
            raise TypeError(f"not a command: {kind.__name__}")
        return handler(self, cmd)

    # --- handlers ---------------------------------------------------------------

    def _new(self, cmd: NewOrder) -> list[Event]:
        book = self._books.get(cmd.market)
        if book is None:
            return [unchained_rejection(cmd.market, cmd.ts, cmd.order_id, cmd.user_id, "new")]
        oid = cmd.order_id
        where = self._where
        if oid in where:
            # Not recorded anywhere: a republished order must change nothing.
            return [book.rejected(cmd.ts, oid, cmd.user_id, "new", "duplicate_order_id")]
        where[oid] = cmd.user_id << _BOOK_BITS | book.number
        # A cancel that came first is used up once its id is known, whatever
        # happens to the order.
        pending = self._early.pop(oid, None) if self._early else None
        if book.halted:
            return book.reject_new(cmd, "market_halted")
        if (cmd.order_type == "market" and (cmd.time_in_force == "GTC" or cmd.post_only)) or (
            cmd.post_only and cmd.time_in_force != "GTC"
        ):
            # A market order cannot rest, and a post-only order must be able to.
            return book.reject_new(cmd, "invalid")
        if pending is not None and (cmd.market, cmd.user_id) in pending:
            return book.accept_cancelled(cmd)
        return book.submit(cmd)

    def _cancel(self, cmd: CancelOrder) -> list[Event]:
        book = self._books.get(cmd.market)
        if book is None:
            return [unchained_rejection(cmd.market, cmd.ts, cmd.order_id, cmd.user_id, "cancel")]
        oid = cmd.order_id
        seen = self._where.get(oid)
        if seen is None:
            # The book's own name object, so that snapshots pickle identically
            # however the name reached the engine.
            self._early.setdefault(oid, set()).add((book.market, cmd.user_id))
            reason = "unknown_order"
        elif seen & _BOOK_MASK != book.number:
            reason = "unknown_order"
        elif seen >> _BOOK_BITS != cmd.user_id:
            reason = "not_owner"
        else:
            order = book.orders.get(oid)
            if order is not None:
                return book.cancel(order, cmd.ts)
            reason = "already_done"
        return [book.rejected(cmd.ts, oid, cmd.user_id, "cancel", reason)]

    def _cancel_all(self, cmd: CancelAll) -> list[Event]:
        book = self._books.get(cmd.market)
        if book is None:
            return [unchained_rejection(cmd.market, cmd.ts, None, cmd.user_id, "cancel_all")]
        return book.cancel_all(cmd.user_id, cmd.ts) or [
            book.rejected(cmd.ts, None, cmd.user_id, "cancel_all", "unknown_order")
        ]

    def _add_market(self, cmd: AddMarket) -> list[Event]:
        book = self._books.get(cmd.market)
        if book is not None:
            return [book.rejected(cmd.ts, None, None, "add_market", "market_exists")]
        book = self._books[cmd.market] = Book(cmd.market, len(self._book_list))
        self._book_list.append(book)
        return [book.market_added(cmd.ts)]

    def _halt_market(self, cmd: HaltMarket) -> list[Event]:
        book = self._books.get(cmd.market)
        if book is None:
            return [unchained_rejection(cmd.market, cmd.ts, None, None, "halt_market")]
        if book.halted:
            return [book.rejected(cmd.ts, None, None, "halt_market", "invalid")]
        book.halted = True
        return [book.market_halted(cmd.ts)]

    def _resume_market(self, cmd: ResumeMarket) -> list[Event]:
        book = self._books.get(cmd.market)
        if book is None:
            return [unchained_rejection(cmd.market, cmd.ts, None, None, "resume_market")]
        if not book.halted:
            return [book.rejected(cmd.ts, None, None, "resume_market", "invalid")]
        book.halted = False
        return [book.market_resumed(cmd.ts)]

    # --- queries ----------------------------------------------------------------

    def _book(self, market: str) -> Book:
        book = self._books.get(market)
        if book is None:
            raise KeyError(f"unknown market {market!r}")
        return book

    @property
    def markets(self) -> tuple[str, ...]:
        """Market names in the order they were added."""
        return tuple(self._books)

    def sequences(self) -> dict[str, int]:
        """Each market's last event sequence number."""
        return {name: book.seq for name, book in self._books.items()}

    def market_state(self, market: str) -> tuple[str, int, str]:
        """(``"active"`` or ``"halted"``, last seq, last hash) of a market."""
        book = self._book(market)
        return ("halted" if book.halted else "active", book.seq, book.last_hash)

    def depth(self, market: str, limit: int) -> tuple[int, list[tuple[int, int]], list[tuple[int, int]]]:
        """(seq, bids, asks): up to ``limit`` (price, lots) levels per side, best first."""
        if type(limit) is not int or limit < 0:
            raise ValueError(f"limit must be a non-negative int, got {limit!r}")
        book = self._book(market)
        bids, asks = book.depth(limit)
        return book.seq, bids, asks

    def open_orders(self, market: str) -> list[RestingOrder]:
        """Resting orders in priority order: bids best first, then asks best first."""
        return list(self._book(market).open_orders())

    # --- state --------------------------------------------------------------------

    def _closed(self) -> list[list[int]]:
        """Per book number, [order_id, owner, ...] of the ids it has decided
        on that are not resting, in id order (the record itself keeps no order
        that a restored engine could reproduce)."""
        where = self._where
        closed: list[list[int]] = [[] for _ in self._book_list]
        if len(where) == sum(len(book.orders) for book in self._book_list):
            return closed
        live: set[int] = set()
        for book in self._book_list:
            live.update(book.orders)
        for oid in sorted(where.keys() - live):
            seen = where[oid]
            closed[seen & _BOOK_MASK] += (oid, seen >> _BOOK_BITS)
        return closed

    def _state(self) -> tuple[list[tuple[Any, ...]], list[tuple[int, str, int]]]:
        closed = self._closed()
        markets = [
            (
                book.market,
                book.halted,
                book.seq,
                book.last,
                book.side_state("buy"),
                book.side_state("sell"),
                closed[book.number],
            )
            for book in self._book_list
        ]
        early = sorted((oid, market, user) for oid, pending in self._early.items() for market, user in pending)
        return markets, early

    def snapshot(self) -> bytes:
        """Complete engine state as bytes; see ``Engine.restore``."""
        return pickle.dumps((_SNAPSHOT_MAGIC, SNAPSHOT_VERSION, self._state()), protocol=5)

    @classmethod
    def restore(cls, data: bytes) -> "Engine":
        """Rebuild an engine from ``snapshot`` output; ValueError if it is not one."""
        # What a restore builds holds no reference cycles, yet a million new
        # objects set off collection after collection, each re-scanning them
        # all: about 70% of the time of restoring a million resting orders.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return cls._load(data)
        finally:
            if collecting:
                gc.enable()

    @classmethod
    def _load(cls, data: bytes) -> "Engine":
        try:
            loaded = _PlainUnpickler(io.BytesIO(data)).load()
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, IndexError, KeyError, OverflowError) as exc:
            raise ValueError(f"not an engine snapshot: {exc}") from None
        if not (isinstance(loaded, tuple) and len(loaded) == 3 and loaded[0] == _SNAPSHOT_MAGIC):
            raise ValueError("not an engine snapshot")
        version = loaded[1]
        if version != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported snapshot version {version!r}; this engine reads {SNAPSHOT_VERSION}")
        try:
            return cls._from_state(*loaded[2])
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise ValueError(f"corrupt engine snapshot: {exc}") from None

    @classmethod
    def _from_state(cls, markets: list[tuple[Any, ...]], early: list[tuple[int, str, int]]) -> "Engine":
        engine = cls()
        where = engine._where
        for number, (name, halted, seq, last, bids, asks, closed) in enumerate(markets):
            if name in engine._books:
                raise ValueError(f"market {name!r} appears twice")
            book = Book(name, number, seq, last)
            book.halted = halted
            book.load_side("buy", bids, where)
            book.load_side("sell", asks, where)
            if len(closed) % 2:
                raise ValueError(f"closed ids and owners of {name!r} do not pair up")
            records = map(or_, map(lshift, closed[1::2], repeat(_BOOK_BITS)), repeat(number))
            where.update(zip(closed[::2], records, strict=False))
            engine._books[name] = book
            engine._book_list.append(book)
        for oid, market, user in early:
            engine._early.setdefault(oid, set()).add((engine._books[market].market, user))
        return engine

    def state_digest(self) -> str:
        """sha256 of a canonical rendering of every book, sequence and id record."""
        markets, early = self._state()
        rendering = [
            [name, halted, seq, last.hex(), bids, asks, sorted(zip(closed[::2], closed[1::2], strict=True))]
            for name, halted, seq, last, bids, asks, closed in sorted(markets, key=lambda m: m[0])
        ]
        text = json.dumps([rendering, early], separators=(",", ":"))
        return sha256(text.encode()).hexdigest()


_HANDLERS: dict[type, Callable[[Engine, Any], list[Event]]] = {
    NewOrder: Engine._new,
    CancelOrder: Engine._cancel,
    CancelAll: Engine._cancel_all,
    AddMarket: Engine._add_market,
    HaltMarket: Engine._halt_market,
    ResumeMarket: Engine._resume_market,
}
