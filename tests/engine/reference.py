"""A deliberately naive model of the engine's semantics, for property tests.

Resting orders sit in one unsorted list per market; the best maker is found by
scanning it with ``min``.  FOK fillability is decided by running the match on a
deep copy and looking at the result.  Events are plain dicts shaped like
``Event.to_dict()``; hashes are not modelled (the chain tests cover them).
"""

import copy
from dataclasses import dataclass, field
from typing import Any

from matching.engine import (
    AddMarket,
    CancelAll,
    CancelOrder,
    Command,
    HaltMarket,
    NewOrder,
    ResumeMarket,
)


@dataclass
class RefOrder:
    order_id: int
    user_id: int
    side: str
    price: int
    remaining: int
    arrival: int


@dataclass
class RefMarket:
    name: str
    halted: bool = False
    seq: int = 0
    resting: list[RefOrder] = field(default_factory=list)
    # order id -> owner of every order of this market that is not resting.
    finished: dict[int, int] = field(default_factory=dict)


class RefEngine:
    def __init__(self) -> None:
        self.markets: dict[str, RefMarket] = {}
        self.home: dict[int, str] = {}
        self.early: list[tuple[int, str, int]] = []
        self.arrival = 0

    # --- helpers ------------------------------------------------------------

    def _event(self, market: RefMarket, kind: str, ts: int, **fields: Any) -> dict[str, Any]:
        market.seq += 1
        return {"type": kind, "market": market.name, "seq": market.seq, "ts": ts, **fields}

    @staticmethod
    def _best(market: RefMarket, maker_side: str) -> RefOrder | None:
        makers = [o for o in market.resting if o.side == maker_side]
        if not makers:
            return None
        if maker_side == "sell":
            return min(makers, key=lambda o: (o.price, o.arrival))
        return min(makers, key=lambda o: (-o.price, o.arrival))

    def resting(self, name: str) -> list[tuple[int, int, str, int, int]]:
        market = self.markets[name]
        bids = sorted((o for o in market.resting if o.side == "buy"), key=lambda o: (-o.price, o.arrival))
        asks = sorted((o for o in market.resting if o.side == "sell"), key=lambda o: (o.price, o.arrival))
        return [(o.order_id, o.user_id, o.side, o.price, o.remaining) for o in bids + asks]

    # --- commands -------------------------------------------------------------

    def apply(self, cmd: Command) -> list[dict[str, Any]]:
        if isinstance(cmd, AddMarket):
            if cmd.market in self.markets:
                m = self.markets[cmd.market]
                return [self._rejected(m, cmd.ts, None, None, "add_market", "market_exists")]
            m = self.markets[cmd.market] = RefMarket(cmd.market)
            return [self._event(m, "market_added", cmd.ts)]
        market = self.markets.get(cmd.market)
        if market is None:
            return [self._unknown_market(cmd)]
        if isinstance(cmd, HaltMarket):
            if market.halted:
                return [self._rejected(market, cmd.ts, None, None, "halt_market", "invalid")]
            market.halted = True
            return [self._event(market, "market_halted", cmd.ts)]
        if isinstance(cmd, ResumeMarket):
            if not market.halted:
                return [self._rejected(market, cmd.ts, None, None, "resume_market", "invalid")]
            market.halted = False
            return [self._event(market, "market_resumed", cmd.ts)]
        if isinstance(cmd, CancelOrder):
            return self._cancel(market, cmd)
        if isinstance(cmd, CancelAll):
            return self._cancel_all(market, cmd)
        assert isinstance(cmd, NewOrder)
        return self._new(market, cmd)

    def _rejected(
        self, market: RefMarket, ts: int, order_id: int | None, user_id: int | None, request: str, reason: str
    ) -> dict[str, Any]:
        return self._event(market, "rejected", ts, order_id=order_id, user_id=user_id, request=request, reason=reason)

    @staticmethod
    def _unknown_market(cmd: Command) -> dict[str, Any]:
        request = {
            NewOrder: "new",
            CancelOrder: "cancel",
            CancelAll: "cancel_all",
            HaltMarket: "halt_market",
            ResumeMarket: "resume_market",
        }[type(cmd)]
        return {
            "type": "rejected",
            "market": cmd.market,
            "seq": 0,
            "ts": cmd.ts,
            "order_id": getattr(cmd, "order_id", None),
            "user_id": getattr(cmd, "user_id", None),
            "request": request,
            "reason": "unknown_market",
        }

    def _cancelled(self, market: RefMarket, ts: int, order: RefOrder, reason: str) -> dict[str, Any]:
        market.resting.remove(order)
        market.finished[order.order_id] = order.user_id
        return self._event(
            market,
            "cancelled",
            ts,
            order_id=order.order_id,
            user_id=order.user_id,
            remaining=order.remaining,
            remaining_quote=None,
            reason=reason,
        )

    def _cancel(self, market: RefMarket, cmd: CancelOrder) -> list[dict[str, Any]]:
        oid = cmd.order_id
        home = self.home.get(oid)
        if home is None:
            self.early.append((oid, cmd.market, cmd.user_id))
            reason = "unknown_order"
        elif home != market.name:
            reason = "unknown_order"
        else:
            live = [o for o in market.resting if o.order_id == oid]
            if live:
                if live[0].user_id == cmd.user_id:
                    return [self._cancelled(market, cmd.ts, live[0], "user")]
                reason = "not_owner"
            elif market.finished[oid] != cmd.user_id:
                reason = "not_owner"
            else:
                reason = "already_done"
        return [self._rejected(market, cmd.ts, oid, cmd.user_id, "cancel", reason)]

    def _cancel_all(self, market: RefMarket, cmd: CancelAll) -> list[dict[str, Any]]:
        mine = sorted((o for o in market.resting if o.user_id == cmd.user_id), key=lambda o: o.order_id)
        if not mine:
            return [self._rejected(market, cmd.ts, None, cmd.user_id, "cancel_all", "unknown_order")]
        return [self._cancelled(market, cmd.ts, o, "user") for o in mine]

    def _new(self, market: RefMarket, cmd: NewOrder) -> list[dict[str, Any]]:
        oid = cmd.order_id
        if oid in self.home:
            return [self._rejected(market, cmd.ts, oid, cmd.user_id, "new", "duplicate_order_id")]
        self.home[oid] = market.name
        market.finished[oid] = cmd.user_id
        early = [e for e in self.early if e[0] == oid]
        self.early = [e for e in self.early if e[0] != oid]
        if market.halted:
            return [self._rejected(market, cmd.ts, oid, cmd.user_id, "new", "market_halted")]
        is_market = cmd.order_type == "market"
        if (is_market and cmd.time_in_force == "GTC") or (cmd.post_only and (is_market or cmd.time_in_force != "GTC")):
            return [self._rejected(market, cmd.ts, oid, cmd.user_id, "new", "invalid")]
        if (oid, cmd.market, cmd.user_id) in early:
            return [
                self._accepted(market, cmd),
                self._event(
                    market,
                    "cancelled",
                    cmd.ts,
                    order_id=oid,
                    user_id=cmd.user_id,
                    remaining=cmd.quantity,
                    remaining_quote=cmd.quote_quantity,
                    reason="user",
                ),
            ]
        maker_side = "sell" if cmd.side == "buy" else "buy"
        best = self._best(market, maker_side)
        crosses = (
            not is_market
            and best is not None
            and (best.price <= cmd.price if cmd.side == "buy" else best.price >= cmd.price)
        )
        if cmd.post_only and crosses:
            return [self._rejected(market, cmd.ts, oid, cmd.user_id, "new", "post_only_would_cross")]
        quote = is_market and cmd.quantity is None
        if cmd.time_in_force == "FOK":
            left, stop, traded, last_price = self._match(copy.deepcopy(market), cmd, [])
            if quote:
                fillable = stop in ("done", "budget") or (stop == "exhausted" and traded and left < last_price)
            else:
                fillable = left == 0
            if not fillable:
                return [self._rejected(market, cmd.ts, oid, cmd.user_id, "new", "fok_not_fillable")]
        events = [self._accepted(market, cmd)]
        left, stop, traded, _ = self._match(market, cmd, events)
        if not left:
            events.append(self._event(market, "done", cmd.ts, order_id=oid, user_id=cmd.user_id, reason="filled"))
            return events
        if stop == "self_trade":
            reason = "self_trade"
        elif is_market:
            reason = "ioc" if traded else "no_liquidity"
        elif cmd.time_in_force == "GTC":
            del market.finished[oid]
            self.arrival += 1
            market.resting.append(RefOrder(oid, cmd.user_id, cmd.side, cmd.price, left, self.arrival))
            return events
        else:
            reason = "ioc"
        events.append(
            self._event(
                market,
                "cancelled",
                cmd.ts,
                order_id=oid,
                user_id=cmd.user_id,
                remaining=None if quote else left,
                remaining_quote=left if quote else None,
                reason=reason,
            )
        )
        return events

    def _accepted(self, market: RefMarket, cmd: NewOrder) -> dict[str, Any]:
        return self._event(
            market,
            "accepted",
            cmd.ts,
            order_id=cmd.order_id,
            user_id=cmd.user_id,
            side=cmd.side,
            order_type=cmd.order_type,
            price=cmd.price,
            quantity=cmd.quantity,
            quote_quantity=cmd.quote_quantity,
            time_in_force=cmd.time_in_force,
            post_only=cmd.post_only,
            stp=cmd.stp,
        )

    def _match(self, market: RefMarket, cmd: NewOrder, events: list[dict[str, Any]]) -> tuple[int, str, bool, int]:
        """Returns (lots or budget left, why it stopped, traded at all, last trade price).

        It stops on "done" (nothing left), "limit" (price limit), "budget" (a
        quote budget cannot pay the next lot), "exhausted" or "self_trade".
        """
        quote = cmd.order_type == "market" and cmd.quantity is None
        left = cmd.quote_quantity if quote else cmd.quantity
        assert left is not None
        maker_side = "sell" if cmd.side == "buy" else "buy"
        traded = False
        last_price = 0
        while left:
            maker = self._best(market, maker_side)
            if maker is None:
                return left, "exhausted", traded, last_price
            if cmd.order_type == "limit":
                assert cmd.price is not None
                if (cmd.side == "buy" and maker.price > cmd.price) or (cmd.side == "sell" and maker.price < cmd.price):
                    return left, "limit", traded, last_price
            if quote and left < maker.price:
                return left, "budget", traded, last_price
            if maker.user_id == cmd.user_id:
                if cmd.stp in ("cancel_resting", "cancel_both"):
                    events.append(self._cancelled(market, cmd.ts, maker, "self_trade"))
                if cmd.stp in ("cancel_incoming", "cancel_both"):
                    return left, "self_trade", traded, last_price
                continue
            lots = min(left // maker.price, maker.remaining) if quote else min(left, maker.remaining)
            maker.remaining -= lots
            left -= lots * maker.price if quote else lots
            traded = True
            last_price = maker.price
            events.append(
                self._event(
                    market,
                    "trade",
                    cmd.ts,
                    maker_order_id=maker.order_id,
                    maker_user_id=maker.user_id,
                    taker_order_id=cmd.order_id,
                    taker_user_id=cmd.user_id,
                    taker_side=cmd.side,
                    price=maker.price,
                    quantity=lots,
                    maker_remaining=maker.remaining,
                    taker_remaining=None if quote else left,
                    taker_remaining_quote=left if quote else None,
                )
            )
            if not maker.remaining:
                market.resting.remove(maker)
                market.finished[maker.order_id] = maker.user_id
                events.append(
                    self._event(market, "done", cmd.ts, order_id=maker.order_id, user_id=maker.user_id, reason="filled")
                )
        return left, "done", traded, last_price
