"""Short constructors for commands and engines used across the engine tests."""

from matching.engine import AddMarket, CancelAll, CancelOrder, Engine, Event, NewOrder

MARKET = "BTC-USD"


def limit(
    order_id: int,
    user_id: int,
    side: str,
    price: int,
    quantity: int,
    *,
    tif: str = "GTC",
    post_only: bool = False,
    stp: str = "cancel_incoming",
    market: str = MARKET,
    ts: int = 1_000,
) -> NewOrder:
    return NewOrder(market, order_id, user_id, side, "limit", price, quantity, None, tif, post_only, stp, ts)


def market(
    order_id: int,
    user_id: int,
    side: str,
    quantity: int | None = None,
    *,
    quote: int | None = None,
    stp: str = "cancel_incoming",
    market: str = MARKET,
    ts: int = 1_000,
) -> NewOrder:
    return NewOrder(market, order_id, user_id, side, "market", None, quantity, quote, "IOC", False, stp, ts)


def cancel(order_id: int, user_id: int, *, market: str = MARKET, ts: int = 2_000) -> CancelOrder:
    return CancelOrder(market, order_id, user_id, ts)


def cancel_all(user_id: int, *, market: str = MARKET, ts: int = 3_000) -> CancelAll:
    return CancelAll(market, user_id, ts)


def engine_with(*markets: str) -> Engine:
    engine = Engine()
    for name in markets or (MARKET,):
        engine.apply(AddMarket(name, 0))
    return engine


def shapes(events: list[Event]) -> list[tuple[object, ...]]:
    """A compact view of events for assertions: type plus the telling fields."""
    out: list[tuple[object, ...]] = []
    for event in events:
        d = event.to_dict()
        kind = d["type"]
        if kind == "trade":
            out.append(("trade", d["maker_order_id"], d["taker_order_id"], d["price"], d["quantity"]))
        elif kind in ("accepted", "done"):
            out.append((kind, d["order_id"]))
        elif kind == "cancelled":
            out.append(("cancelled", d["order_id"], d["reason"]))
        elif kind == "rejected":
            out.append(("rejected", d["order_id"], d["reason"]))
        else:
            out.append((kind,))
    return out
