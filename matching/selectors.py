"""Reads of markets, orders and the engine's published book."""

from django.core.cache import cache
from redis.exceptions import RedisError

from accounts.models import User
from core.errors import NotFound, Unavailable
from matching.models import Market, Order

# What the matching worker publishes to the cache after each batch: per market its last sequence
# number, and how many commands it has applied.
ENGINE_STATE_KEY = "engine:state"


def market_get(*, symbol: str) -> Market:
    market = Market.objects.filter(pk=symbol).first()
    if market is None:
        raise NotFound("unknown_symbol", f"No market {symbol!r}.")
    return market


def depth_cache_key(symbol: str) -> str:
    return f"depth:{symbol}"


def market_depth(*, market: Market, limit: int) -> dict:
    """The book as the matching worker last published it, with the engine sequence it reflects."""
    try:
        published = cache.get(depth_cache_key(market.symbol))
    except (RedisError, OSError) as exc:
        raise Unavailable("depth_unavailable", "The order book is not available right now; try again.") from exc
    if published is None:
        return {"symbol": market.symbol, "sequence": None, "bids": [], "asks": []}
    return {
        "symbol": market.symbol,
        "sequence": published["sequence"],
        "bids": published["bids"][:limit],
        "asks": published["asks"][:limit],
    }


def orders_for_user(
    *, user: User, status: str | None = None, symbol: str | None = None, limit: int = 100
) -> list[Order]:
    orders = Order.objects.filter(user=user).select_related("market")
    if status:
        orders = orders.filter(status=status)
    if symbol:
        orders = orders.filter(market_id=symbol)
    return list(orders.order_by("-id")[:limit])


def orders_pending_count(*, at_most: int) -> int:
    """Orders accepted by the API and not yet confirmed by settlement (`pending`), counted up to
    `at_most`: one index read of at most that many entries."""
    return Order.objects.filter(status=Order.Status.PENDING).order_by()[:at_most].count()
