"""The order book of one market: price-time priority on integer ticks and lots.

Each side keeps a dict price -> Level and a plain sorted list of keys with the
best price LAST, so the best level is read, and removed, at the cheap end of
the list.  Bid keys are prices; ask keys are negated prices.  A key of the
opposite side is therefore "at or better than" an incoming order's limit when
``key >= bound`` with ``bound = limit * sign`` on both sides.

Cancelled orders are removed lazily: their ``remaining`` drops to 0 and they
stay in their level's deque until they reach its front, because removing from
the middle of a deque is linear.  ``Level.lots`` only counts live lots, so a
level is deleted as soon as its last live order goes.
"""

from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterator
from itertools import repeat
from typing import NamedTuple

from .commands import NewOrder
from .events import Chain, Event


class Order:
    __slots__ = ("order_id", "price", "remaining", "side", "user_id")

    def __init__(self, order_id: int, user_id: int, side: str, price: int, remaining: int) -> None:
        self.order_id = order_id
        self.user_id = user_id
        self.side = side
        self.price = price
        self.remaining = remaining


class Level(deque[Order]):
    __slots__ = ("lots",)

    def __init__(self) -> None:
        super().__init__()
        self.lots = 0


class RestingOrder(NamedTuple):
    order_id: int
    user_id: int
    side: str
    price: int
    remaining: int


# A snapshot of one side: [(price, [order_id, user_id, remaining, ...]), ...] best first.
SideState = list[tuple[int, list[int]]]


class Book:
    __slots__ = ("ask_keys", "asks", "bid_keys", "bids", "chain", "closed", "halted", "market", "orders")

    def __init__(self, chain: Chain) -> None:
        self.market = chain.market
        self.chain = chain
        self.halted = False
        # Live resting orders by id.
        self.orders: dict[int, Order] = {}
        # Every other order id this market has seen, with its owner, so that a
        # late cancel can tell "not yours" from "already finished".
        self.closed: dict[int, int] = {}
        self.bids: dict[int, Level] = {}
        self.bid_keys: list[int] = []
        self.asks: dict[int, Level] = {}
        self.ask_keys: list[int] = []

    # --- new orders ---------------------------------------------------------

    def submit(self, cmd: NewOrder, out: list[Event]) -> None:
        """Run a new order that passed the engine's id and market checks."""
        chain = self.chain
        oid = cmd.order_id
        user = cmd.user_id
        if cmd.side == "buy":
            opposite = self.ask_keys
            sign = -1
        else:
            opposite = self.bid_keys
            sign = 1

        if cmd.order_type == "market":
            # Every key of the opposite side is >= its smallest one, so this
            # bound lets the shared code run without a price limit.
            bound = opposite[0] if opposite else 0
            if cmd.time_in_force == "FOK" and not (
                self._fillable(cmd, bound) if cmd.quantity is not None else self._budget_fillable(cmd)
            ):
                self.reject_new(cmd, "fok_not_fillable", out)
                return
            out.append(chain.accepted(cmd))
            if cmd.quantity is None:
                self._market_buy_by_quote(cmd, out)
                return
            qty = cmd.quantity
            left, self_trade = self._match(cmd, bound, qty, out)
            if not left:
                self.closed[oid] = user
                out.append(chain.done(cmd.ts, oid, user))
                return
            if self_trade:
                reason = "self_trade"
            elif left == qty:
                reason = "no_liquidity"
            else:
                reason = "ioc"
            self.closed[oid] = user
            out.append(chain.cancelled(cmd.ts, oid, user, left, None, reason))
            return

        price: int = cmd.price  # type: ignore[assignment]
        bound = price * sign
        crosses = bool(opposite) and opposite[-1] >= bound
        if crosses and cmd.post_only:
            self.reject_new(cmd, "post_only_would_cross", out)
            return
        tif = cmd.time_in_force
        if tif == "FOK" and not self._fillable(cmd, bound):
            self.reject_new(cmd, "fok_not_fillable", out)
            return
        out.append(chain.accepted(cmd))
        left = cmd.quantity
        if crosses:
            left, self_trade = self._match(cmd, bound, left, out)
            if not left:
                self.closed[oid] = user
                out.append(chain.done(cmd.ts, oid, user))
                return
            if self_trade:
                self.closed[oid] = user
                out.append(chain.cancelled(cmd.ts, oid, user, left, None, "self_trade"))
                return
        if tif != "GTC":
            self.closed[oid] = user
            out.append(chain.cancelled(cmd.ts, oid, user, left, None, "ioc"))
            return
        order = Order(oid, user, cmd.side, price, left)
        self.orders[oid] = order
        if cmd.side == "buy":
            levels = self.bids
            key = price
            keys = self.bid_keys
        else:
            levels = self.asks
            key = -price
            keys = self.ask_keys
        level = levels.get(price)
        if level is None:
            level = levels[price] = Level()
            insort(keys, key)
        level.append(order)
        level.lots += left

    def accept_cancelled(self, cmd: NewOrder, out: list[Event]) -> None:
        """Accept an order whose cancel arrived first, and cancel it at once."""
        self.closed[cmd.order_id] = cmd.user_id
        out.append(self.chain.accepted(cmd))
        out.append(self.chain.cancelled(cmd.ts, cmd.order_id, cmd.user_id, cmd.quantity, cmd.quote_quantity, "user"))

    def reject_new(self, cmd: NewOrder, reason: str, out: list[Event]) -> None:
        self.closed[cmd.order_id] = cmd.user_id
        out.append(self.chain.rejected(cmd.ts, cmd.order_id, cmd.user_id, "new", reason))

    def _match(self, cmd: NewOrder, bound: int, qty: int, out: list[Event]) -> tuple[int, bool]:
        """Fill ``qty`` lots against the opposite side at keys >= ``bound``.

        Returns the lots left and whether self-trade prevention stopped the
        incoming order.
        """
        if cmd.side == "buy":
            levels = self.asks
            keys = self.ask_keys
            sign = -1
        else:
            levels = self.bids
            keys = self.bid_keys
            sign = 1
        oid = cmd.order_id
        user = cmd.user_id
        side = cmd.side
        ts = cmd.ts
        trade = self.chain.trade
        done = self.chain.done
        orders = self.orders
        closed = self.closed
        append = out.append
        while keys:
            key = keys[-1]
            if key < bound:
                break
            price = key * sign
            level = levels[price]
            while True:
                maker = level[0]
                left = maker.remaining
                if not left:
                    level.popleft()
                    continue
                maker_user = maker.user_id
                if maker_user == user:
                    if cmd.stp == "cancel_incoming":
                        return qty, True
                    emptied = self._cancel_front(level, levels, keys, ts, out)
                    if cmd.stp == "cancel_both":
                        return qty, True
                    if emptied:
                        break
                    continue
                if qty < left:
                    # The incoming order ends inside this maker.
                    left -= qty
                    maker.remaining = left
                    level.lots -= qty
                    append(trade(ts, maker.order_id, maker_user, oid, user, side, price, qty, left, 0, None))
                    return 0, False
                qty -= left
                level.popleft()
                level.lots -= left
                maker_id = maker.order_id
                del orders[maker_id]
                closed[maker_id] = maker_user
                append(trade(ts, maker_id, maker_user, oid, user, side, price, left, 0, qty, None))
                append(done(ts, maker_id, maker_user))
                if not level.lots:
                    del levels[price]
                    keys.pop()
                    break
                if not qty:
                    return 0, False
            if not qty:
                return 0, False
        return qty, False

    def _market_buy_by_quote(self, cmd: NewOrder, out: list[Event]) -> None:
        """Spend at most ``quote_quantity`` on whole lots, cheapest asks first."""
        chain = self.chain
        levels = self.asks
        keys = self.ask_keys
        oid = cmd.order_id
        user = cmd.user_id
        ts = cmd.ts
        budget: int = cmd.quote_quantity  # type: ignore[assignment]
        self_trade = False
        # Asks only get dearer further in, so once one lot at the best price is
        # unaffordable the order is finished.
        while keys and budget >= -keys[-1] and not self_trade:
            price = -keys[-1]
            level = levels[price]
            while True:
                maker = level[0]
                left = maker.remaining
                if not left:
                    level.popleft()
                    continue
                if maker.user_id == user:
                    if cmd.stp == "cancel_incoming":
                        self_trade = True
                        break
                    emptied = self._cancel_front(level, levels, keys, ts, out)
                    if cmd.stp == "cancel_both":
                        self_trade = True
                        break
                    if emptied:
                        break
                    continue
                fill = min(budget // price, left)
                left -= fill
                budget -= fill * price
                maker.remaining = left
                level.lots -= fill
                maker_id = maker.order_id
                out.append(chain.trade(ts, maker_id, maker.user_id, oid, user, "buy", price, fill, left, None, budget))
                if not left:
                    level.popleft()
                    del self.orders[maker_id]
                    self.closed[maker_id] = maker.user_id
                    out.append(chain.done(ts, maker_id, maker.user_id))
                if not level.lots:
                    del levels[price]
                    keys.pop()
                    break
                if budget < price:
                    break
        self.closed[oid] = user
        if not budget:
            out.append(chain.done(ts, oid, user))
            return
        if self_trade:
            reason = "self_trade"
        elif budget == cmd.quote_quantity:
            reason = "no_liquidity"
        else:
            reason = "ioc"
        out.append(chain.cancelled(ts, oid, user, None, budget, reason))

    def _cancel_front(self, level: Level, levels: dict[int, Level], keys: list[int], ts: int, out: list[Event]) -> bool:
        """Cancel the live order at the front of the best level for self-trade
        prevention; return True if that emptied the level."""
        maker = level.popleft()
        left = maker.remaining
        maker.remaining = 0
        level.lots -= left
        del self.orders[maker.order_id]
        self.closed[maker.order_id] = maker.user_id
        out.append(self.chain.cancelled(ts, maker.order_id, maker.user_id, left, None, "self_trade"))
        if level.lots:
            return False
        del levels[maker.price]
        keys.pop()
        return True

    def _fillable(self, cmd: NewOrder, bound: int) -> bool:
        """Whether matching ``cmd`` now would fill it completely.

        Mirrors _match: the user's own resting orders are skipped under
        cancel_resting (matching would cancel them and go on) and end the walk
        under the other modes (matching would stop there).
        """
        if cmd.side == "buy":
            levels = self.asks
            keys = self.ask_keys
            sign = -1
        else:
            levels = self.bids
            keys = self.bid_keys
            sign = 1
        wanted: int = cmd.quantity  # type: ignore[assignment]
        user = cmd.user_id
        skip_own = cmd.stp == "cancel_resting"
        for key in reversed(keys):
            if key < bound:
                return False
            for maker in levels[key * sign]:
                left = maker.remaining
                if not left:
                    continue
                if maker.user_id == user:
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
        for key in reversed(self.ask_keys):
            price = -key
            for maker in self.asks[price]:
                left = maker.remaining
                if not left:
                    continue
                if budget < price:
                    return True
                if maker.user_id == user:
                    if skip_own:
                        continue
                    return False
                budget -= min(budget // price, left) * price
                last = price
        return last > 0 and budget < last

    # --- cancels --------------------------------------------------------------

    def cancel(self, order: Order, ts: int, out: list[Event]) -> None:
        """Remove a live resting order at its owner's request."""
        oid = order.order_id
        del self.orders[oid]
        self.closed[oid] = order.user_id
        left = order.remaining
        order.remaining = 0
        price = order.price
        if order.side == "buy":
            levels = self.bids
            keys = self.bid_keys
            key = price
        else:
            levels = self.asks
            keys = self.ask_keys
            key = -price
        level = levels[price]
        level.lots -= left
        if not level.lots:
            del levels[price]
            if keys[-1] == key:
                keys.pop()
            else:
                del keys[bisect_left(keys, key)]
        out.append(self.chain.cancelled(ts, oid, order.user_id, left, None, "user"))

    def cancel_all(self, user_id: int, ts: int, out: list[Event]) -> int:
        """Cancel every resting order of ``user_id`` in order-id order.

        This scans the market's live orders; cancel-all is rare enough that a
        per-user index, which every rest and fill would have to maintain, does
        not pay for itself.
        """
        mine = sorted(oid for oid, order in self.orders.items() if order.user_id == user_id)
        orders = self.orders
        for oid in mine:
            self.cancel(orders[oid], ts, out)
        return len(mine)

    # --- queries ----------------------------------------------------------------

    def depth(self, limit: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        bids = [(key, self.bids[key].lots) for key in reversed(self.bid_keys[-limit:])] if limit else []
        asks = [(-key, self.asks[-key].lots) for key in reversed(self.ask_keys[-limit:])] if limit else []
        return bids, asks

    def open_orders(self) -> Iterator[RestingOrder]:
        """Live orders: bids best first, then asks best first, FIFO within a level."""
        for levels, keys, sign in ((self.bids, self.bid_keys, 1), (self.asks, self.ask_keys, -1)):
            for key in reversed(keys):
                for order in levels[key * sign]:
                    if order.remaining:
                        yield RestingOrder(order.order_id, order.user_id, order.side, order.price, order.remaining)

    # --- snapshots ------------------------------------------------------------

    def side_state(self, side: str) -> SideState:
        if side == "buy":
            levels, keys, sign = self.bids, self.bid_keys, 1
        else:
            levels, keys, sign = self.asks, self.ask_keys, -1
        state: SideState = []
        for key in reversed(keys):
            flat: list[int] = []
            extend = flat.extend
            for order in levels[key * sign]:
                if order.remaining:
                    extend((order.order_id, order.user_id, order.remaining))
            state.append((key * sign, flat))
        return state

    def load_side(self, side: str, state: SideState) -> None:
        """Rebuild one side from ``side_state`` output on an empty book."""
        if side == "buy":
            levels, keys, sign = self.bids, self.bid_keys, 1
        else:
            levels, keys, sign = self.asks, self.ask_keys, -1
        orders = self.orders
        for price, flat in state:
            oids = flat[0::3]
            remaining = flat[2::3]
            level = Level()
            level.extend(map(Order, oids, flat[1::3], repeat(side), repeat(price), remaining))
            level.lots = sum(remaining)
            orders.update(zip(oids, level, strict=True))
            levels[price] = level
            keys.append(price * sign)
        keys.reverse()
