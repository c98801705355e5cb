"""The order book of one market: price-time priority on integer ticks and lots.

Levels are keyed by a signed key: the price for a bid, the negated price for
an ask (prices are at least 1, so the sign tells the side).  One dict holds
the levels of both sides; each side also keeps a plain sorted list of its keys
with the best price LAST, so the best level is read, and removed, at the cheap
end of the list.  A key of the opposite side is "at or better than" an
incoming order's limit when ``key >= bound`` with ``bound = limit * sign`` on
both sides.

A resting order is a tuple ``(remaining, order_id, user_id, key)``, replaced
by a new tuple when a fill leaves it smaller.  A tuple is built faster than an
object with attributes, is read by index as fast, and holds only ints, so the
garbage collector stops tracking it at its first collection instead of
re-scanning every resting order in each older-generation collection (which
touches each order's int objects, cold in memory, and cost about 8% of the
time on a long stream).

An order is live exactly while ``orders`` maps its id to it (an id is only
ever accepted once, so a level never holds two entries with one id).
Cancelled orders are removed lazily: they leave ``orders`` but stay in their
level's deque until they reach its front, because removing from the middle of
a deque is linear.  ``Level.lots`` only counts live lots, so a level is
deleted as soon as its last live order goes.
"""

from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterator
from itertools import chain as concat
from itertools import repeat
from operator import itemgetter, lshift, or_
from typing import NamedTuple

from .chain import Chain
from .commands import NewOrder
from .events import _GENESIS_RAW, Event

# A resting order: (remaining lots, order_id, user_id, level key).
Order = tuple[int, int, int, int]

# The engine records each order id it has seen as (owner << _BOOK_BITS) |
# book number: one int per id, set once when the id is first seen, so nothing
# has to be written again when the order finishes, and the dict holds no
# references for the garbage collector to scan.  2**32 markets cannot be held
# in memory, so a book number always fits.
_BOOK_BITS = 32
_BOOK_MASK = (1 << _BOOK_BITS) - 1


_remaining = itemgetter(0)
_id_owner_remaining = itemgetter(1, 2, 0)


class Level(deque[Order]):
    """The FIFO queue of one price level and its live lot count."""

    __slots__ = ("lots",)


class RestingOrder(NamedTuple):
    order_id: int
    user_id: int
    side: str
    price: int
    remaining: int


# A snapshot of one side: [(price, [order_id, user_id, remaining, ...]), ...] best first.
SideState = list[tuple[int, list[int]]]


class Book(Chain):
    """One market: its order book, and (as a Chain) its sequence and hash chain.

    Every event comes from one of the Chain's builders, one per event type.
    """

    __slots__ = ("ask_keys", "bid_keys", "halted", "levels", "number", "orders")

    def __init__(self, market: str, number: int, seq: int = 0, last: bytes = _GENESIS_RAW) -> None:
        super().__init__(market, seq, last)
        # The book's index in its engine, which records the book of every
        # order id it has seen by this number.
        self.number = number
        self.halted = False
        # Live resting orders by id.  Every other id the market has decided on
        # is recorded by the engine only, with its owner.
        self.orders: dict[int, Order] = {}
        # Signed key -> level, both sides.
        self.levels: dict[int, Level] = {}
        self.bid_keys: list[int] = []
        self.ask_keys: list[int] = []

    # --- new orders ---------------------------------------------------------

    def submit(self, cmd: NewOrder) -> list[Event]:
        """Run a new order that passed the engine's id, market and validity checks."""
        if cmd.order_type == "market":
            return self._submit_market(cmd)
        return self.submit_limit(cmd)

    def submit_limit(self, cmd: NewOrder) -> list[Event]:
        """Run a new limit order that passed the engine's checks: match what
        crosses, then rest what a GTC order has left."""
        price: int = cmd.price  # type: ignore[assignment]
        side = cmd.side
        if side == "buy":
            opposite = self.ask_keys
            key = price
        else:
            opposite = self.bid_keys
            key = -price
        # An opposite key at or above -key is at or through this order's price.
        if opposite and opposite[-1] >= -key:
            out, qty = self._submit_crossing(cmd, opposite, -key)
            if not qty:
                return out
        elif cmd.time_in_force != "GTC":
            if cmd.time_in_force == "FOK":
                return self.reject_new(cmd, "fok_not_fillable")
            return [
                self.accepted(cmd),
                self.cancelled(cmd.ts, cmd.order_id, cmd.user_id, cmd.quantity, None, "ioc"),
            ]
        else:
            # The common case: an order near the touch that rests whole.
            out = [self.accepted(cmd)]
            qty = cmd.quantity  # type: ignore[assignment]
        oid = cmd.order_id
        order = (qty, oid, cmd.user_id, key)
        self.orders[oid] = order
        level = self.levels.get(key)
        if level is None:
            level = self.levels[key] = Level()
            level.lots = qty
            insort(self.bid_keys if key > 0 else self.ask_keys, key)
        else:
            level.lots += qty
        level.append(order)
        return out

    def _submit_crossing(self, cmd: NewOrder, opposite: list[int], bound: int) -> tuple[list[Event], int]:
        """A limit order whose price reaches the best opposite level: its
        events, and the lots it leaves to rest (0 unless a GTC order is left
        with some after matching)."""
        if cmd.post_only:
            return self.reject_new(cmd, "post_only_would_cross"), 0
        tif = cmd.time_in_force
        if tif == "FOK" and not self._fillable(cmd, opposite, bound):
            return self.reject_new(cmd, "fok_not_fillable"), 0
        out = [self.accepted(cmd)]
        oid = cmd.order_id
        user = cmd.user_id
        left, self_trade = self._match(cmd, opposite, bound, cmd.quantity, out)  # type: ignore[arg-type]
        if not left:
            out.append(self.done(cmd.ts, oid, user))
        elif self_trade:
            out.append(self.cancelled(cmd.ts, oid, user, left, None, "self_trade"))
        elif tif == "GTC":
            return out, left
        else:
            out.append(self.cancelled(cmd.ts, oid, user, left, None, "ioc"))
        return out, 0

    def _submit_market(self, cmd: NewOrder) -> list[Event]:
        opposite = self.ask_keys if cmd.side == "buy" else self.bid_keys
        # Every key of the opposite side is >= its smallest one, so this bound
        # lets the shared code run without a price limit.
        bound = opposite[0] if opposite else 0
        qty = cmd.quantity
        if cmd.time_in_force == "FOK" and not (
            self._fillable(cmd, opposite, bound) if qty is not None else self._budget_fillable(cmd)
        ):
            return self.reject_new(cmd, "fok_not_fillable")
        out = [self.accepted(cmd)]
        if qty is None:
            self._market_buy_by_quote(cmd, out)
            return out
        oid = cmd.order_id
        user = cmd.user_id
        left, self_trade = self._match(cmd, opposite, bound, qty, out)
        if not left:
            out.append(self.done(cmd.ts, oid, user))
            return out
        if self_trade:
            reason = "self_trade"
        elif left == qty:
            reason = "no_liquidity"
        else:
            reason = "ioc"
        out.append(self.cancelled(cmd.ts, oid, user, left, None, reason))
        return out

    def accept_cancelled(self, cmd: NewOrder) -> list[Event]:
        """Accept an order whose cancel arrived first, and cancel it at once."""
        return [
            self.accepted(cmd),
            self.cancelled(cmd.ts, cmd.order_id, cmd.user_id, cmd.quantity, cmd.quote_quantity, "user"),
        ]

    def reject_new(self, cmd: NewOrder, reason: str) -> list[Event]:
        return [self.rejected(cmd.ts, cmd.order_id, cmd.user_id, "new", reason)]

    def _match(self, cmd: NewOrder, keys: list[int], bound: int, qty: int, out: list[Event]) -> tuple[int, bool]:
        """Fill ``qty`` lots against the opposite side (``keys``) at keys >= ``bound``.

        Returns the lots left and whether self-trade prevention stopped the
        incoming order.
        """
        side = cmd.side
        sign = -1 if side == "buy" else 1
        oid = cmd.order_id
        user = cmd.user_id
        ts = cmd.ts
        levels = self.levels
        orders = self.orders
        append = out.append
        while keys:
            key = keys[-1]
            if key < bound:
                break
            price = key * sign
            level = levels[key]
            while True:
                maker = level[0]
                left, maker_id, maker_user, _ = maker
                if maker_id not in orders:
                    level.popleft()
                    continue
                if maker_user == user:
                    if cmd.stp == "cancel_incoming":
                        return qty, True
                    emptied = self._cancel_front(level, keys, ts, out)
                    if cmd.stp == "cancel_both":
                        return qty, True
                    if emptied:
                        break
                    continue
                if qty < left:
                    # The incoming order ends inside this maker.
                    fill = qty
                    left -= qty
                    level[0] = orders[maker_id] = (left, maker_id, maker_user, key)
                    qty = 0
                else:
                    fill = left
                    left = 0
                    qty -= fill
                    level.popleft()
                    del orders[maker_id]
                level.lots -= fill
                append(self.trade(ts, maker_id, maker_user, oid, user, side, price, fill, left, qty, None))
                if left:
                    return 0, False
                append(self.done(ts, maker_id, maker_user))
                if not level.lots:
                    del levels[key]
                    keys.pop()
                    break
                if not qty:
                    return 0, False
            if not qty:
                return 0, False
        return qty, False

    def _market_buy_by_quote(self, cmd: NewOrder, out: list[Event]) -> None:
        """Spend at most ``quote_quantity`` on whole lots, cheapest asks first."""
        levels = self.levels
        keys = self.ask_keys
        orders = self.orders
        oid = cmd.order_id
        user = cmd.user_id
        ts = cmd.ts
        budget: int = cmd.quote_quantity  # type: ignore[assignment]
        self_trade = False
        # Asks only get dearer further in, so once one lot at the best price is
        # unaffordable the order is finished.
        while keys and budget >= -keys[-1] and not self_trade:
            key = keys[-1]
            price = -key
            level = levels[key]
            while True:
                maker = level[0]
                left, maker_id, maker_user, _ = maker
                if maker_id not in orders:
                    level.popleft()
                    continue
                if maker_user == user:
                    if cmd.stp == "cancel_incoming":
                        self_trade = True
                        break
                    emptied = self._cancel_front(level, keys, ts, out)
                    if cmd.stp == "cancel_both":
                        self_trade = True
                        break
                    if emptied:
                        break
                    continue
                fill = min(budget // price, left)
                left -= fill
                budget -= fill * price
                level.lots -= fill
                out.append(self.trade(ts, maker_id, maker_user, oid, user, "buy", price, fill, left, None, budget))
                if left:
                    level[0] = orders[maker_id] = (left, maker_id, maker_user, key)
                else:
                    level.popleft()
                    del orders[maker_id]
                    out.append(self.done(ts, maker_id, maker_user))
                if not level.lots:
                    del levels[key]
                    keys.pop()
                    break
                if budget < price:
                    break
        if not budget:
            out.append(self.done(ts, oid, user))
            return
        if self_trade:
            reason = "self_trade"
        elif budget == cmd.quote_quantity:
            reason = "no_liquidity"
        else:
            reason = "ioc"
        out.append(self.cancelled(ts, oid, user, None, budget, reason))

    def _cancel_front(self, level: Level, keys: list[int], ts: int, out: list[Event]) -> bool:
        """Cancel the live order at the front of the best level for self-trade
        prevention; return True if that emptied the level."""
        left, oid, user, key = level.popleft()
        level.lots -= left
        del self.orders[oid]
        out.append(self.cancelled(ts, oid, user, left, None, "self_trade"))
        if level.lots:
            return False
        del self.levels[key]
        keys.pop()
        return True

    def _fillable(self, cmd: NewOrder, keys: list[int], bound: int) -> bool:
        """Whether matching ``cmd`` now would fill it completely.

        Mirrors _match: the user's own resting orders are skipped under
        cancel_resting (matching would cancel them and go on) and end the walk
        under the other modes (matching would stop there).
        """
        wanted: int = cmd.quantity  # type: ignore[assignment]
        user = cmd.user_id
        skip_own = cmd.stp == "cancel_resting"
        levels = self.levels
        orders = self.orders
        for key in reversed(keys):
            if key < bound:
                return False
            for left, maker_id, maker_user, _ in levels[key]:
                if maker_id not in orders:
                    continue
                if maker_user == user:
                    if skip_own:
                        continue
                    return False
                wanted -= left
                if wanted <= 0:
                    return True
        return False

    def _budget_fillable(self, cmd: NewOrder) -> bool:
        """Whether a market buy by quote would spend its budget now.

        It would if matching stops because the budget cannot pay one more lot
        at the next price (or at the last price, when it empties the book), and
        not because the book ran out or self-trade prevention stopped it.
        """
        budget: int = cmd.quote_quantity  # type: ignore[assignment]
        user = cmd.user_id
        skip_own = cmd.stp == "cancel_resting"
        last = 0
        orders = self.orders
        for key in reversed(self.ask_keys):
            price = -key
            for left, maker_id, maker_user, _ in self.levels[key]:
                if maker_id not in orders:
                    continue
                if budget < price:
                    return True
                if maker_user == user:
                    if skip_own:
                        continue
                    return False
                budget -= min(budget // price, left) * price
                last = price
        return last > 0 and budget < last

    # --- cancels --------------------------------------------------------------

    def cancel(self, order: Order, ts: int) -> list[Event]:
        """Remove a live resting order at its owner's request."""
        left, oid, user, key = order
        del self.orders[oid]
        level = self.levels[key]
        level.lots -= left
        if not level.lots:
            del self.levels[key]
            keys = self.bid_keys if key > 0 else self.ask_keys
            if keys[-1] == key:
                keys.pop()
            else:
                del keys[bisect_left(keys, key)]
        return [self.cancelled(ts, oid, user, left, None, "user")]

    def cancel_all(self, user_id: int, ts: int) -> list[Event]:
        """Cancel every resting order of ``user_id`` in order-id order.

        This scans the market's live orders; cancel-all is rare enough that a
        per-user index, which every rest and fill would have to maintain, does
        not pay for itself.
        """
        orders = self.orders
        out: list[Event] = []
        for oid in sorted(oid for oid, order in orders.items() if order[2] == user_id):
            out += self.cancel(orders[oid], ts)
        return out

    # --- queries ----------------------------------------------------------------

    def _side(self, side: str) -> tuple[list[int], int]:
        return (self.bid_keys, 1) if side == "buy" else (self.ask_keys, -1)

    def depth(self, limit: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        levels = self.levels
        bids = [(key, levels[key].lots) for key in reversed(self.bid_keys[-limit:])] if limit else []
        asks = [(-key, levels[key].lots) for key in reversed(self.ask_keys[-limit:])] if limit else []
        return bids, asks

    def open_orders(self) -> Iterator[RestingOrder]:
        """Live orders: bids best first, then asks best first, FIFO within a level."""
        orders = self.orders
        for side in ("buy", "sell"):
            keys, sign = self._side(side)
            for key in reversed(keys):
                for left, oid, user, _ in self.levels[key]:
                    if oid in orders:
                        yield RestingOrder(oid, user, side, key * sign, left)

    # --- snapshots ------------------------------------------------------------

    def side_state(self, side: str) -> SideState:
        keys, sign = self._side(side)
        orders = self.orders
        state: SideState = []
        for key in reversed(keys):
            level = self.levels[key]
            # Every entry holds at least one lot, so a level whose entries add
            # up to its live lots holds no cancelled ones and is copied without
            # looking each id up.
            if sum(map(_remaining, level)) == level.lots:
                flat = list(concat.from_iterable(map(_id_owner_remaining, level)))
            else:
                flat = []
                extend = flat.extend
                for left, oid, user, _ in level:
                    if oid in orders:
                        extend((oid, user, left))
            state.append((key * sign, flat))
        return state

    def load_side(self, side: str, state: SideState, seen: dict[int, int]) -> None:
        """Rebuild one side from ``side_state`` output on an empty book, and
        record its orders in the engine's ``seen`` map."""
        keys, sign = self._side(side)
        orders = self.orders
        number = self.number
        for price, flat in state:
            if len(flat) % 3:
                raise ValueError(f"level {price} does not hold (id, owner, lots) triples")
            key = price * sign
            oids = flat[0::3]
            owners = flat[1::3]
            remaining = flat[2::3]
            level = Level(zip(remaining, oids, owners, repeat(key), strict=False))
            level.lots = sum(remaining)
            orders.update(zip(oids, level, strict=True))
            seen.update(zip(oids, map(or_, map(lshift, owners, repeat(_BOOK_BITS)), repeat(number)), strict=False))
            self.levels[key] = level
            keys.append(key)
        keys.reverse()
