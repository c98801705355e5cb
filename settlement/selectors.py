"""Reads of trades and of how far settlement has come."""

from django.db.models import Q

from accounts.models import User
from matching.models import Market
from settlement.models import Trade


def trades_public(*, market: Market, limit: int = 100) -> list[Trade]:
    return list(Trade.objects.filter(market=market).order_by("-seq")[:limit])


def fills_for_user(*, user: User, symbol: str | None = None, limit: int = 100) -> list[dict]:
    """The user's side of each of their trades."""
    trades = Trade.objects.filter(Q(buyer=user) | Q(seller=user)).select_related("market")
    if symbol:
        trades = trades.filter(market_id=symbol)
    fills = []
    for trade in trades.order_by("-id")[:limit]:
        buying = trade.buyer_id == user.pk
        order_id = trade.buy_order_id if buying else trade.sell_order_id
        side = "buy" if buying else "sell"
        fills.append(
            {
                "id": trade.pk,
                "symbol": trade.market_id,
                "seq": trade.seq,
                "order_id": order_id,
                "side": side,
                "role": "taker" if trade.taker_side == side else "maker",
                "price": trade.price,
                "quantity": trade.quantity,
                "quote_amount": trade.quote_amount,
                "fee": trade.buyer_fee if buying else trade.seller_fee,
                "fee_asset": trade.market.base_id if buying else trade.market.quote_id,
                "executed_at": trade.executed_at,
            }
        )
    return fills
