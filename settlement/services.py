"""Settlement: engine events into the inbox, then from the inbox into orders, trades and balances.

Two transactions, each idempotent:
- `events_ingest` (the consumer process) stores a Kafka batch in the inbox, unique by
  (market, seq), with the Kafka offsets it came from. Seeing an event twice stores it once.
- `market_settle` (a Celery task) applies the next contiguous events of one market, checks the hash
  chain as it goes, and moves the market's cursor in the same transaction as the effects. Running it
  twice, or concurrently, applies each event once.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Greatest
from django.utils import timezone

from accounts.models import Account, LedgerEntry, User
from accounts.services import account_get, accounts_lock, audit_record, funds_release, ledger_post, operator_check
from exchange.kafka import schemas
from matching.engine import Event, canonical, chain_hash, event_from_dict
from matching.models import Market, Order
from settlement.models import Alert, ConsumerOffset, EngineEvent, SettlementCursor, Trade

log = structlog.get_logger(__name__)

GENESIS = "0" * 64


@dataclass
class ReceivedMessage:
    partition: int
    offset: int
    value: bytes


# --- Inbox ----------------------------------------------------------------------------------------


def alert_raise(*, kind: str, market: str, message: str) -> Alert:
    """Open an alert unless the same one is already open."""
    existing = Alert.objects.filter(kind=kind, market=market, message=message, resolved_at__isnull=True).first()
    if existing is not None:
        return existing
    log.error("settlement_alert", kind=kind, market=market, message=message)
    return Alert.objects.create(kind=kind, market=market, message=message)


@transaction.atomic
def events_ingest(*, topic: str, messages: list[ReceivedMessage]) -> set[str]:
    """Store a batch of engine events and the offsets after them; return the markets that got new
    events."""
    events: list[Event] = []
    for message in messages:
        try:
            events.append(schemas.decode_event(message.value))
        except schemas.SchemaError as exc:
            alert_raise(
                kind=Alert.Kind.BAD_MESSAGE,
                market="",
                message=f"{topic}[{message.partition}]@{message.offset}: {exc}",
            )

    for event in events:
        if event.seq == 0:
            # Rejections for a market the engine does not know belong to no chain.
            _unsequenced_apply(event)

    sequenced = [e for e in events if e.seq > 0]
    touched: set[str] = set()
    if sequenced:
        stored = {
            (market, seq): digest
            for market, seq, digest in EngineEvent.objects.filter(
                _any_of((e.market, e.seq) for e in sequenced)
            ).values_list("market", "seq", "hash")
        }
        fresh: dict[tuple[str, int], EngineEvent] = {}
        for event in sequenced:
            key = (event.market, event.seq)
            known = stored.get(key) or (fresh[key].hash if key in fresh else None)
            if known is None:
                fresh[key] = EngineEvent(
                    market=event.market,
                    seq=event.seq,
                    type=event.to_dict()["type"],
                    payload=event.to_dict(),
                    hash=event.hash,
                )
            elif known != event.hash:
                alert_raise(
                    kind=Alert.Kind.DIVERGENT_EVENT,
                    market=event.market,
                    message=f"event #{event.seq} arrived again with a different hash ({event.hash} != {known})",
                )
        EngineEvent.objects.bulk_create(fresh.values(), ignore_conflicts=True)
        highest: dict[str, int] = {}
        for market, seq in fresh:
            highest[market] = max(highest.get(market, 0), seq)
        for market, seq in highest.items():
            SettlementCursor.objects.get_or_create(market=market)
            SettlementCursor.objects.filter(pk=market).update(received_seq=Greatest("received_seq", seq))
        touched = set(highest)

    last: dict[int, int] = {}
    for message in messages:
        last[message.partition] = max(last.get(message.partition, -1), message.offset)
    for partition, offset in last.items():
        ConsumerOffset.objects.update_or_create(topic=topic, partition=partition, defaults={"offset": offset + 1})
    return touched


def _any_of(keys: object) -> Q:
    condition = Q(pk__in=[])
    for market, seq in keys:
        condition |= Q(market=market, seq=seq)
    return condition


def consumer_offsets(*, topic: str) -> dict[int, int]:
    return dict(ConsumerOffset.objects.filter(topic=topic).values_list("partition", "offset"))


# --- Applying events ------------------------------------------------------------------------------


@dataclass
class _Batch:
    market: Market
    orders: dict[int, Order] = field(default_factory=dict)


def _moment(ts: int) -> datetime:
    return datetime.fromtimestamp(ts / 1000, tz=UTC)


def _fee(amount: Decimal, rate: Decimal, quantum: Decimal) -> Decimal:
    # Rounded down to the asset's smallest unit: a fee never exceeds its rate.
    return (amount * rate).quantize(quantum, rounding=ROUND_DOWN)


def _release_rest(order: Order, *, status: str, reason: str = "") -> None:
    if order.locked > 0:
        funds_release(
            user=order.user,
            asset=order.lock_asset_id,
            amount=order.locked,
            kind=LedgerEntry.Kind.ORDER_RELEASE,
            reference=f"order:{order.pk}",
        )
    order.locked = Decimal(0)
    order.status = status
    order.reason = reason
    order.save(update_fields=["locked", "status", "reason", "updated_at"])


def _apply_accepted(batch: _Batch, event: Event) -> None:
    order = batch.orders[event.order_id]
    if order.status == Order.Status.PENDING:
        order.status = Order.Status.OPEN
        order.save(update_fields=["status", "updated_at"])


def _apply_trade(batch: _Batch, event: Event) -> None:
    market = batch.market
    maker, taker = batch.orders[event.maker_order_id], batch.orders[event.taker_order_id]
    buy, sell = (taker, maker) if event.taker_side == Order.Side.BUY else (maker, taker)
    price = market.from_ticks(event.price)
    quantity = market.from_lots(event.quantity)
    quote = price * quantity
    buyer_rate = market.taker_fee if buy is taker else market.maker_fee
    seller_rate = market.taker_fee if sell is taker else market.maker_fee
    buyer_fee = _fee(quantity, buyer_rate, market.base.quantum)
    seller_fee = _fee(quote, seller_rate, market.quote.quantum)
    # A limit buy locked its own price for every lot; it pays the maker's price and gets the rest back.
    buy_lock_used = buy.price * quantity if buy.order_type == Order.Type.LIMIT else quote

    def acct(order: Order | None, asset_id: str, kind: str) -> Account:
        return account_get(user=order.user if order else None, asset=asset_id, kind=kind)

    base, quote_asset = market.base_id, market.quote_id
    ledger_post(
        kind=LedgerEntry.Kind.TRADE,
        reference=f"trade:{market.symbol}:{event.seq}",
        moves=[
            (acct(buy, quote_asset, Account.Kind.LOCKED), -buy_lock_used),
            (acct(buy, quote_asset, Account.Kind.AVAILABLE), buy_lock_used - quote),
            (acct(sell, quote_asset, Account.Kind.AVAILABLE), quote - seller_fee),
            (acct(None, quote_asset, Account.Kind.FEES), seller_fee),
            (acct(sell, base, Account.Kind.LOCKED), -quantity),
            (acct(buy, base, Account.Kind.AVAILABLE), quantity - buyer_fee),
            (acct(None, base, Account.Kind.FEES), buyer_fee),
        ],
    )
    Trade.objects.create(
        market=market,
        seq=event.seq,
        price=price,
        quantity=quantity,
        quote_amount=quote,
        taker_side=event.taker_side,
        buy_order=buy,
        sell_order=sell,
        buyer_id=buy.user_id,
        seller_id=sell.user_id,
        buyer_fee=buyer_fee,
        seller_fee=seller_fee,
        executed_at=_moment(event.ts),
    )
    for order, used, fee in ((buy, buy_lock_used, buyer_fee), (sell, quantity, seller_fee)):
        order.filled += quantity
        order.filled_quote += quote
        order.fee += fee
        order.locked -= used
        if order.status in (Order.Status.PENDING, Order.Status.OPEN):
            order.status = Order.Status.PARTIALLY_FILLED
        order.save(update_fields=["filled", "filled_quote", "fee", "locked", "status", "updated_at"])


def _apply_done(batch: _Batch, event: Event) -> None:
    _release_rest(batch.orders[event.order_id], status=Order.Status.FILLED)


def _apply_cancelled(batch: _Batch, event: Event) -> None:
    _release_rest(batch.orders[event.order_id], status=Order.Status.CANCELLED, reason=event.reason)


# Rejections that do not mean "this order is refused": a copy of an order the engine already has, or
# a cancel that came too late or too early (the engine remembers an early one).
_INFORMATIONAL_REJECTIONS = {"duplicate_order_id"}


def _apply_rejected(batch: _Batch, event: Event) -> None:
    if event.request != "new" or event.reason in _INFORMATIONAL_REJECTIONS:
        return
    order = batch.orders.get(event.order_id)
    if order is not None and order.status == Order.Status.PENDING:
        _release_rest(order, status=Order.Status.REJECTED, reason=event.reason)


def _apply_nothing(batch: _Batch, event: Event) -> None:
    """Market control events: the database's market status is set by the operator's action."""


_HANDLERS = {
    "accepted": _apply_accepted,
    "trade": _apply_trade,
    "done": _apply_done,
    "cancelled": _apply_cancelled,
    "rejected": _apply_rejected,
    "market_added": _apply_nothing,
    "market_halted": _apply_nothing,
    "market_resumed": _apply_nothing,
}


def _order_ids(event: Event) -> list[int]:
    fields = event.to_dict()
    return [fields[k] for k in ("order_id", "maker_order_id", "taker_order_id") if fields.get(k) is not None]


def _batch_prepare(market: Market, events: list[Event]) -> _Batch:
    """Lock every account and order the batch touches, in a fixed order, before changing any."""
    order_ids = sorted({oid for event in events for oid in _order_ids(event)})
    orders = {
        o.pk: o
        for o in Order.objects.select_for_update(of=("self",))
        .select_related("user", "market")
        .filter(pk__in=order_ids)
        .order_by("pk")
    }
    account_ids: list[int] = []
    users = {o.user for o in orders.values()}
    for user in users:
        for asset in (market.base_id, market.quote_id):
            for kind in Account.USER_KINDS:
                account_ids.append(account_get(user=user, asset=asset, kind=kind).pk)
    for asset in (market.base_id, market.quote_id):
        account_ids.append(account_get(user=None, asset=asset, kind=Account.Kind.FEES).pk)
    accounts_lock(account_ids)
    return _Batch(market=market, orders=orders)


def market_settle(*, market: str, limit: int | None = None) -> int:
    """Apply the next contiguous engine events of one market; return how many were applied."""
    limit = limit or settings.SETTLEMENT_BATCH_SIZE
    with transaction.atomic():
        cursor, _ = SettlementCursor.objects.get_or_create(market=market)
        cursor = SettlementCursor.objects.select_for_update().get(pk=market)
        if cursor.status in (SettlementCursor.Status.BROKEN_CHAIN, SettlementCursor.Status.INCONSISTENT):
            return 0
        rows = list(EngineEvent.objects.filter(market=market, seq__gt=cursor.seq).order_by("seq")[:limit])
        if not rows:
            return 0
        if rows[0].seq != cursor.seq + 1:
            _gap_check(cursor, rows[0])
            return 0

        events: list[tuple[EngineEvent, Event]] = []
        expected, previous = cursor.seq + 1, cursor.hash
        for row in rows:
            if row.seq != expected:
                break
            event = event_from_dict(row.payload, row.hash)
            if chain_hash(previous, canonical(event)) != row.hash:
                cursor.status = SettlementCursor.Status.BROKEN_CHAIN
                alert_raise(
                    kind=Alert.Kind.BROKEN_CHAIN,
                    market=market,
                    message=f"event #{row.seq} does not chain onto #{row.seq - 1}; settlement stopped",
                )
                break
            events.append((row, event))
            expected, previous = expected + 1, row.hash

        if events:
            events = _known_prefix(cursor, events)
        if events:
            market_obj = Market.objects.select_related("base", "quote").get(pk=market)
            batch = _batch_prepare(market_obj, [event for _, event in events])
            for _, event in events:
                _HANDLERS[event.to_dict()["type"]](batch, event)
            cursor.seq, cursor.hash = events[-1][0].seq, events[-1][0].hash
            EngineEvent.objects.filter(pk__in=[row.pk for row, _ in events]).update(settled_at=timezone.now())
        if cursor.status == SettlementCursor.Status.GAP:
            cursor.status = SettlementCursor.Status.OK
        cursor.save()
        return len(events)


def _known_prefix(cursor: SettlementCursor, events: list[tuple[EngineEvent, Event]]) -> list[tuple[EngineEvent, Event]]:
    """The events up to the first one that names a market or an order the database does not have.

    Such an event means the engine and the database disagree (an engine fed another exchange's
    input, a database restored without its Kafka topics): settlement of the market stops there, with
    an alert, rather than guessing.
    """
    if not Market.objects.filter(pk=cursor.market).exists():
        problem, cut = f"the database has no market {cursor.market}", 0
    else:
        wanted = {oid for _, event in events for oid in _order_ids(event)}
        known = set(Order.objects.filter(pk__in=wanted).values_list("pk", flat=True))
        problem, cut = "", len(events)
        for index, (row, event) in enumerate(events):
            # A rejection may name an order id nobody saved (an early cancel, a refused copy).
            missing = sorted(set(_order_ids(event)) - known) if event.to_dict()["type"] != "rejected" else []
            if missing:
                problem, cut = f"event #{row.seq} names order(s) {missing} the database does not have", index
                break
    if problem:
        cursor.status = SettlementCursor.Status.INCONSISTENT
        alert_raise(kind=Alert.Kind.UNKNOWN_REFERENCE, market=cursor.market, message=f"{problem}; settlement stopped")
    return events[:cut]


def _gap_check(cursor: SettlementCursor, first_waiting: EngineEvent) -> None:
    """Events after a hole wait for the hole to fill; if it stays open, an operator hears of it.

    Settlement never skips: it resumes by itself once the missing event arrives.
    """
    age = timezone.now() - first_waiting.received_at
    if age < timedelta(seconds=settings.SETTLEMENT_GAP_ALERT_SECONDS):
        return
    if cursor.status != SettlementCursor.Status.GAP:
        cursor.status = SettlementCursor.Status.GAP
        cursor.save(update_fields=["status", "updated_at"])
    alert_raise(
        kind=Alert.Kind.SEQUENCE_GAP,
        market=cursor.market,
        message=f"settled up to #{cursor.seq}, next received is #{first_waiting.seq}; waiting for the gap",
    )


def _unsequenced_apply(event: Event) -> None:
    if event.to_dict()["type"] != "rejected" or event.order_id is None:
        return
    order = Order.objects.select_for_update().select_related("market").filter(pk=event.order_id).first()
    if order is None:
        return
    market = order.market
    batch = _batch_prepare(market, [event])
    _apply_rejected(batch, event)


def markets_with_backlog() -> list[str]:
    return list(
        SettlementCursor.objects.filter(seq__lt=F("received_seq"))
        .exclude(status__in=[SettlementCursor.Status.BROKEN_CHAIN, SettlementCursor.Status.INCONSISTENT])
        .values_list("market", flat=True)
    )


@transaction.atomic
def alert_resolve(*, alert_id: int, acting_user: User) -> Alert:
    operator_check(acting_user, "settlement.resolve_alert")
    alert = Alert.objects.select_for_update().get(pk=alert_id)
    if alert.resolved_at is None:
        alert.resolved_at = timezone.now()
        alert.resolved_by = acting_user
        alert.save(update_fields=["resolved_at", "resolved_by"])
        audit_record(actor=acting_user, action="alert_resolve", target=f"alert:{alert.pk}", kind=alert.kind)
    return alert
