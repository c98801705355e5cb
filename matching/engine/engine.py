"""The matching engine: many books, one deterministic ``apply`` per command."""

import gc
import io
import json
import pickle
from collections.abc import Callable
from hashlib import sha256
from itertools import chain as concat
from typing import Any

from .book import Book, RestingOrder
from .commands import (
    AddMarket,
    CancelAll,
    CancelOrder,
    Command,
    HaltMarket,
    NewOrder,
    ResumeMarket,
)
from .events import Chain, Event, unchained_rejection

SNAPSHOT_VERSION = 1
_SNAPSHOT_MAGIC = "matching.engine.snapshot"


class _PlainUnpickler(pickle.Unpickler):
    """Loads plain containers only: a snapshot never names a class, so refusing
    every global keeps a tampered snapshot from running code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"snapshot refers to {module}.{name}")


class Engine:
    __slots__ = ("_books", "_early", "_where")

    def __init__(self) -> None:
        self._books: dict[str, Book] = {}
        # Book of every order id the engine has accepted or rejected on its
        # merits, across all markets: ids are unique engine-wide.
        self._where: dict[int, Book] = {}
        # Cancels that arrived before their order: order id -> {(market, user)}.
        self._early: dict[int, set[tuple[str, int]]] = {}

    def apply(self, cmd: Command) -> list[Event]:
        kind = type(cmd)
        # The two commands that make up nearly all traffic skip the table.
        if kind is NewOrder:
            return self._new(cmd)  # type: ignore[arg-type]
        if kind is CancelOrder:
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
            return [book.chain.rejected(cmd.ts, oid, cmd.user_id, "new", "duplicate_order_id")]
        where[oid] = book
        # A cancel that came first is used up once its id is known, whatever
        # happens to the order.
        pending = self._early.pop(oid, None) if self._early else None
        out: list[Event] = []
        if book.halted:
            book.reject_new(cmd, "market_halted", out)
        elif (cmd.order_type == "market" and (cmd.time_in_force == "GTC" or cmd.post_only)) or (
            cmd.post_only and cmd.time_in_force != "GTC"
        ):
            # A market order cannot rest, and a post-only order must be able to.
            book.reject_new(cmd, "invalid", out)
        elif pending is not None and (cmd.market, cmd.user_id) in pending:
            book.accept_cancelled(cmd, out)
        else:
            book.submit(cmd, out)
        return out

    def _cancel(self, cmd: CancelOrder) -> list[Event]:
        book = self._books.get(cmd.market)
        if book is None:
            return [unchained_rejection(cmd.market, cmd.ts, cmd.order_id, cmd.user_id, "cancel")]
        oid = cmd.order_id
        home = self._where.get(oid)
        if home is None:
            # The book's own name object, so that snapshots pickle identically
            # however the name reached the engine.
            self._early.setdefault(oid, set()).add((book.market, cmd.user_id))
            reason = "unknown_order"
        elif home is not book:
            reason = "unknown_order"
        else:
            order = book.orders.get(oid)
            if order is not None:
                if order.user_id == cmd.user_id:
                    out: list[Event] = []
                    book.cancel(order, cmd.ts, out)
                    return out
                reason = "not_owner"
            elif book.closed[oid] != cmd.user_id:
                reason = "not_owner"
            else:
                reason = "already_done"
        return [book.chain.rejected(cmd.ts, oid, cmd.user_id, "cancel", reason)]

    def _cancel_all(self, cmd: CancelAll) -> list[Event]:
        book = self._books.get(cmd.market)
        if book is None:
            return [unchained_rejection(cmd.market, cmd.ts, None, cmd.user_id, "cancel_all")]
        out: list[Event] = []
        if not book.cancel_all(cmd.user_id, cmd.ts, out):
            out.append(book.chain.rejected(cmd.ts, None, cmd.user_id, "cancel_all", "unknown_order"))
        return out

    def _add_market(self, cmd: AddMarket) -> list[Event]:
        book = self._books.get(cmd.market)
        if book is not None:
            return [book.chain.rejected(cmd.ts, None, None, "add_market", "market_exists")]
        chain = Chain(cmd.market)
        self._books[cmd.market] = Book(chain)
        return [chain.market_added(cmd.ts)]

    def _halt_market(self, cmd: HaltMarket) -> list[Event]:
        book = self._books.get(cmd.market)
        if book is None:
            return [unchained_rejection(cmd.market, cmd.ts, None, None, "halt_market")]
        if book.halted:
            return [book.chain.rejected(cmd.ts, None, None, "halt_market", "invalid")]
        book.halted = True
        return [book.chain.market_halted(cmd.ts)]

    def _resume_market(self, cmd: ResumeMarket) -> list[Event]:
        book = self._books.get(cmd.market)
        if book is None:
            return [unchained_rejection(cmd.market, cmd.ts, None, None, "resume_market")]
        if not book.halted:
            return [book.chain.rejected(cmd.ts, None, None, "resume_market", "invalid")]
        book.halted = False
        return [book.chain.market_resumed(cmd.ts)]

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

    def market_state(self, market: str) -> tuple[str, int, str]:
        """(``"active"`` or ``"halted"``, last seq, last hash) of a market."""
        book = self._book(market)
        return ("halted" if book.halted else "active", book.chain.seq, book.chain.last_hash)

    def depth(self, market: str, limit: int) -> tuple[int, list[tuple[int, int]], list[tuple[int, int]]]:
        """(seq, bids, asks): up to ``limit`` (price, lots) levels per side, best first."""
        if type(limit) is not int or limit < 0:
            raise ValueError(f"limit must be a non-negative int, got {limit!r}")
        book = self._book(market)
        bids, asks = book.depth(limit)
        return book.chain.seq, bids, asks

    def open_orders(self, market: str) -> list[RestingOrder]:
        """Resting orders in priority order: bids best first, then asks best first."""
        return list(self._book(market).open_orders())

    # --- state --------------------------------------------------------------------

    def _state(self) -> tuple[list[tuple[Any, ...]], list[tuple[int, str, int]]]:
        markets = [
            (
                book.market,
                book.halted,
                book.chain.seq,
                book.chain.last,
                book.side_state("buy"),
                book.side_state("sell"),
                list(concat.from_iterable(book.closed.items())),
            )
            for book in self._books.values()
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
        for name, halted, seq, last, bids, asks, closed in markets:
            book = Book(Chain(name, seq, last))
            book.halted = halted
            book.load_side("buy", bids)
            book.load_side("sell", asks)
            book.closed = dict(zip(closed[::2], closed[1::2], strict=True))
            where.update(dict.fromkeys(book.orders, book))
            where.update(dict.fromkeys(book.closed, book))
            engine._books[name] = book
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
