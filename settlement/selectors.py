"""Reads of trades and of how far settlement has come."""

from collections.abc import Iterable
from datetime import timedelta

from django.core.cache import cache
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from accounts.models import WITHDRAWAL_AWAITING_APPROVAL, Deposit, User, Withdrawal
from matching.models import Market, Order, OutboxMessage
from matching.selectors import ENGINE_STATE_KEY
from settlement.models import Alert, ConsumerOffset, EngineEvent, ReconciliationRun, SettlementCursor, Trade


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


def operations_overview() -> dict:
    """What an operator watches: settlement progress per market and the work waiting for someone.

    Read from PostgreSQL and from the state the matching worker publishes, so every API process (the
    admin dashboard, `/metrics`) shows the same figures.
    """
    engine = cache.get(ENGINE_STATE_KEY) or {}
    emitted = engine.get("sequences", {})
    markets = []
    for cursor in SettlementCursor.objects.order_by("market"):
        engine_seq = max(emitted.get(cursor.market, 0), cursor.received_seq)
        markets.append(
            {
                "market": cursor.market,
                "settled": cursor.seq,
                "received": cursor.received_seq,
                "emitted": engine_seq,
                "lag": engine_seq - cursor.seq,
                "status": cursor.status,
            }
        )
    alerts = dict(Alert.objects.filter(resolved_at__isnull=True).values_list("kind").annotate(n=Count("id")).order_by())
    return {
        "markets": markets,
        "alerts": alerts,
        "alerts_total": sum(alerts.values()),
        "withdrawals_pending": Withdrawal.objects.filter(WITHDRAWAL_AWAITING_APPROVAL).count(),
        "deposits_awaiting": Deposit.objects.filter(status__in=Deposit.REVIEW_STATUSES).count(),
        "outbox_unpublished": OutboxMessage.objects.filter(published_at__isnull=True).count(),
        "orders": dict(Order.objects.values_list("status").annotate(n=Count("id")).order_by()),
        "engine_commands": engine.get("commands"),
        "last_reconciliation": ReconciliationRun.objects.order_by("-id").first(),
    }


def market_days(*, days: int = 30) -> list[dict]:
    """Per market and day over the last `days` days: volume and fee revenue, both in the market's
    quote asset (a buyer's fee, taken in the base asset, is valued at the trade's price)."""
    since = (timezone.now() - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = (
        Trade.objects.filter(executed_at__gte=since)
        .annotate(day=TruncDate("executed_at"))
        .values("market_id", "day")
        .annotate(
            volume=Sum("quote_amount"),
            fees=Sum(F("seller_fee") + F("buyer_fee") * F("price")),
        )
        .order_by("market_id", "day")
    )
    return list(rows)


# --- What the matching worker reads (matching.progress.SettlementProgress) -----------------------


def settled_sequences(*, markets: Iterable[str]) -> dict[str, int]:
    return dict(SettlementCursor.objects.filter(market__in=markets).values_list("market", "seq"))


def consumer_offsets(*, topic: str) -> dict[int, int]:
    return dict(ConsumerOffset.objects.filter(topic=topic).values_list("partition", "offset"))


def engine_event_received(*, market: str, seq: int) -> bool:
    return EngineEvent.objects.filter(market=market, seq=seq).exists()
