"""Settlement: engine events into the inbox, then from the inbox into orders, trades and balances.

Two transactions, each idempotent, each a fixed number of statements however large its batch:
- `events_ingest` (the consumer process) stores a Kafka batch in the inbox, unique by
  (market, seq), with the Kafka offsets it came from. Seeing an event twice stores it once.
- `market_settle` (a Celery task) applies the next contiguous events of one market: it checks the
  hash chain and each event against the orders in the database (`settlement.checks`) in memory,
  then writes the trades, ledger entries, balances, orders and the market's cursor with set-based
  statements in the same transaction. Running it twice, or concurrently, applies each event once.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import NamedTuple

import structlog
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from psycopg.types.json import Jsonb

from accounts.models import Account, Asset, LedgerEntry, User
from accounts.services import (
    AccountKey,
    Move,
    Posting,
    accounts_lock_keys,
    accounts_open,
    audit_record,
    ledger_post_many,
    operator_check,
)
from core import sql
from matching import schemas
from matching.engine import ChainCheck, ChainError, Event, event_from_dict
from matching.models import Market, Order
from matching.services import order_fill_apply, order_open, order_release, orders_settle_apply
from settlement.checks import event_refusal, order_ids, rejection_effective
from settlement.models import Alert, ConsumerOffset, EngineEvent, SettlementCursor, Trade

log = structlog.get_logger(__name__)

GENESIS = "0" * 64


@dataclass
class ReceivedMessage:
    partition: int
    offset: int
    value: bytes


# --- Inbox ----------------------------------------------------------------------------------------


def alert_raise(*, kind: str, market: str, message: str) -> None:
    """Open an alert unless the same one is already open."""
    alerts_raise([(kind, market, message)])


def alerts_raise(alerts: Iterable[tuple[str, str, str]]) -> None:
    """Open each (kind, market, message) alert that is not already open: two statements for any
    number."""
    wanted = list(dict.fromkeys(alerts))
    if not wanted:
        return
    source, params = sql.unnest_rows(
        [("kind", "varchar"), ("market", "varchar"), ("message", "text")], wanted, alias="w"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT a.kind, a.market, a.message FROM {Alert._meta.db_table} a
            JOIN {source} ON a.kind = w.kind AND a.market = w.market AND a.message = w.message
            WHERE a.resolved_at IS NULL
            """,  # noqa: S608 - names from the model; every value is a parameter
            params,
        )
        already = set(cursor.fetchall())
    fresh = [alert for alert in wanted if alert not in already]
    for kind, market, message in fresh:
        log.error("settlement_alert", kind=kind, market=market, message=message)
    Alert.objects.bulk_create(Alert(kind=kind, market=market, message=message) for kind, market, message in fresh)


@transaction.atomic
def events_ingest(*, topic: str, messages: list[ReceivedMessage]) -> set[str]:
    """Store a batch of engine events and the offsets after them; return the markets that got new
    events. At most seven statements, however many messages, markets and partitions the batch has."""
    alerts: list[tuple[str, str, str]] = []
    sequenced: list[Event] = []
    for message in messages:
        try:
            event = schemas.decode_event(message.value)
            _storable_check(event)
        except schemas.SchemaError as exc:
            alerts.append((Alert.Kind.BAD_MESSAGE, "", f"{topic}[{message.partition}]@{message.offset}: {exc}"))
            continue
        if event.seq == 0:
            alerts.append(_unsequenced_ignore(event))
        else:
            sequenced.append(event)

    touched: set[str] = set()
    if sequenced:
        stored = _stored_hashes({(e.market, e.seq) for e in sequenced})
        received_at = timezone.now()
        fresh: dict[tuple[str, int], str] = {}  # (market, seq) → hash, of the events new to the inbox
        rows = []  # their rows, in _INBOX_FIELDS' order
        for event in sequenced:
            key = (event.market, event.seq)
            known = stored.get(key) or fresh.get(key)
            if known is None:
                fields = event.to_dict()
                fresh[key] = event.hash
                rows.append((event.market, event.seq, fields["type"], Jsonb(fields), event.hash, received_at))
            elif known != event.hash:
                alerts.append(
                    (
                        Alert.Kind.DIVERGENT_EVENT,
                        event.market,
                        f"event #{event.seq} arrived again with a different hash ({event.hash} != {known})",
                    )
                )
        sql.rows_insert(
            sql.table(EngineEvent), sql.columns(EngineEvent, _INBOX_FIELDS), rows, suffix="ON CONFLICT DO NOTHING"
        )
        highest: dict[str, int] = {}
        for market, seq in fresh:
            highest[market] = max(highest.get(market, 0), seq)
        _cursors_receive(highest)
        touched = set(highest)

    last: dict[int, int] = {}
    for message in messages:
        last[message.partition] = max(last.get(message.partition, -1), message.offset)
    _offsets_store(topic, {partition: offset + 1 for partition, offset in last.items()})
    alerts_raise(alerts)
    return touched


# The inbox's columns as the consumer writes them, in the order of `events_ingest`'s rows.
_INBOX_FIELDS = ("market", "seq", "type", "payload", "hash", "received_at")


def _stored_hashes(keys: set[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """The hash the inbox already holds for each of these (market, seq)."""
    source, params = sql.unnest_rows([("market", "varchar"), ("seq", "bigint")], sorted(keys), alias="k")
    with sql.cursor() as cursor:
        cursor.execute(
            f"SELECT e.market, e.seq, e.hash FROM {EngineEvent._meta.db_table} e "  # noqa: S608 - the model's name
            f"JOIN {source} ON e.market = k.market AND e.seq = k.seq",
            params,
        )
        return {(market, seq): digest for market, seq, digest in cursor.fetchall()}


def _cursors_receive(highest: dict[str, int]) -> None:
    """Raise each market's `received_seq` to the highest sequence stored, opening its cursor on the
    first event; markets in name order, so two consumers never deadlock."""
    if not highest:
        return
    table = SettlementCursor._meta.db_table
    source, params = sql.unnest_rows([("market", "varchar"), ("received_seq", "bigint")], sorted(highest.items()))
    with sql.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} AS c (market, seq, hash, received_seq, status, updated_at)
            SELECT u.market, 0, %s, u.received_seq, %s, %s FROM {source}
            ON CONFLICT (market) DO UPDATE SET received_seq = GREATEST(c.received_seq, EXCLUDED.received_seq)
            """,  # noqa: S608 - names from the model; every value is a parameter
            [GENESIS, SettlementCursor.Status.OK, timezone.now(), *params],
        )


def _offsets_store(topic: str, offsets: dict[int, int]) -> None:
    """Store the next offset to read for each partition."""
    if not offsets:
        return
    source, params = sql.unnest_rows([("partition", "integer"), ("offset", "bigint")], sorted(offsets.items()))
    with sql.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {ConsumerOffset._meta.db_table} (topic, partition, "offset", updated_at)
            SELECT %s, u.partition, u."offset", %s FROM {source}
            ON CONFLICT (topic, partition) DO UPDATE SET "offset" = EXCLUDED."offset", updated_at = EXCLUDED.updated_at
            """,  # noqa: S608 - names from the model; every value is a parameter
            [topic, timezone.now(), *params],
        )


_MARKET_LENGTH = EngineEvent._meta.get_field("market").max_length
_LARGEST_SEQ = 2**63 - 1  # PostgreSQL's bigint


def _storable_check(event: Event) -> None:
    """An event the inbox cannot hold would fail the whole batch's transaction again and again."""
    if len(event.market) > _MARKET_LENGTH or event.seq > _LARGEST_SEQ:
        raise schemas.SchemaError(f"event of market {event.market[:_MARKET_LENGTH]!r}... #{event.seq} cannot be stored")


def _unsequenced_ignore(event: Event) -> tuple[str, str, str]:
    """The engine rejects commands for a market it does not know outside any chain (sequence 0).

    Nothing vouches for such an event, so it changes nothing: an order it names stays pending with
    its funds, and the relay sends it again (`orders_resend_stale`) until the engine, which by then
    has the market, answers within the chain. An operator hears of it once per market.
    """
    log.warning("unsequenced_event_ignored", fields=event.to_dict())
    return (
        Alert.Kind.UNCHAINED_EVENT,
        event.market[:_MARKET_LENGTH],
        "events outside the hash chain (sequence 0) were ignored; see the settlement log",
    )


# --- Applying events ------------------------------------------------------------------------------


@dataclass
class _Batch:
    """One batch of a market's events as applied in memory: the orders it locked, the accounts its
    postings move (locked when it writes), the orders as its events left them, and what it will
    write."""

    market: Market
    orders: dict[int, Order]
    accounts: dict[AccountKey, Account] = field(default_factory=dict)
    postings: list[Posting] = field(default_factory=list)
    trades: list[tuple] = field(default_factory=list)
    changed: dict[int, Order] = field(default_factory=dict)

    def account(self, user_id: int | None, asset: str, kind: str) -> Account:
        """The account as the postings name it; its id is filled in when the batch locks it."""
        key = (user_id, asset, kind)
        if key not in self.accounts:
            self.accounts[key] = Account(user_id=user_id, asset_id=asset, kind=kind)
        return self.accounts[key]

    def release(self, order: Order, status: str, reason: str = "") -> None:
        """Close the order; what it still locks goes back to its owner's available balance."""
        held = order_release(order=order, status=status, reason=reason)
        if held > 0:
            asset = order.lock_asset_id
            moves: list[Move] = [
                (self.account(order.user_id, asset, Account.Kind.LOCKED), -held),
                (self.account(order.user_id, asset, Account.Kind.AVAILABLE), held),
            ]
            self.postings.append((LedgerEntry.Kind.ORDER_RELEASE, f"order:{order.pk}", moves))
        self.changed[order.pk] = order


def _moment(ts: int) -> datetime:
    return datetime.fromtimestamp(ts / 1000, tz=UTC)


def _fee(amount: Decimal, rate: Decimal, quantum: Decimal) -> Decimal:
    # Rounded down to the asset's smallest unit: a fee never exceeds its rate.
    return (amount * rate).quantize(quantum, rounding=ROUND_DOWN)


def _apply_accepted(batch: _Batch, event: Event) -> None:
    order = batch.orders[event.order_id]
    order_open(order=order)
    batch.changed[order.pk] = order


def _apply_trade(batch: _Batch, event: Event) -> None:
    market = batch.market
    maker, taker = batch.orders[event.maker_order_id], batch.orders[event.taker_order_id]
    buy, sell = (taker, maker) if event.taker_side == Order.Side.BUY else (maker, taker)
    price = market.from_ticks(event.price)
    quantity = market.from_lots(event.quantity)
    quote = price * quantity
    # The rates each order was placed under, whatever the market's rates are now.
    buyer_rate = buy.taker_fee_rate if buy is taker else buy.maker_fee_rate
    seller_rate = sell.taker_fee_rate if sell is taker else sell.maker_fee_rate
    buyer_fee = _fee(quantity, buyer_rate, market.base.quantum)
    seller_fee = _fee(quote, seller_rate, market.quote.quantum)
    # A limit buy locked its own price for every lot; it pays the maker's price and gets the rest back.
    buy_lock_used = buy.price * quantity if buy.order_type == Order.Type.LIMIT else quote

    base, quote_asset = market.base_id, market.quote_id
    account = batch.account
    moves: list[Move] = [
        (account(buy.user_id, quote_asset, Account.Kind.LOCKED), -buy_lock_used),
        (account(buy.user_id, quote_asset, Account.Kind.AVAILABLE), buy_lock_used - quote),
        (account(sell.user_id, quote_asset, Account.Kind.AVAILABLE), quote - seller_fee),
        (account(None, quote_asset, Account.Kind.FEES), seller_fee),
        (account(sell.user_id, base, Account.Kind.LOCKED), -quantity),
        (account(buy.user_id, base, Account.Kind.AVAILABLE), quantity - buyer_fee),
        (account(None, base, Account.Kind.FEES), buyer_fee),
    ]
    batch.postings.append((LedgerEntry.Kind.TRADE, f"trade:{market.symbol}:{event.seq}", moves))
    batch.trades.append(
        (
            market.symbol,
            event.seq,
            price,
            quantity,
            quote,
            event.taker_side,
            buy.pk,
            sell.pk,
            buy.user_id,
            sell.user_id,
            buyer_fee,
            seller_fee,
            _moment(event.ts),
        )
    )
    order_fill_apply(order=buy, quantity=quantity, quote=quote, fee=buyer_fee, lock_used=buy_lock_used)
    order_fill_apply(order=sell, quantity=quantity, quote=quote, fee=seller_fee, lock_used=quantity)
    batch.changed[buy.pk] = buy
    batch.changed[sell.pk] = sell


def _apply_done(batch: _Batch, event: Event) -> None:
    batch.release(batch.orders[event.order_id], Order.Status.FILLED)


def _apply_cancelled(batch: _Batch, event: Event) -> None:
    batch.release(batch.orders[event.order_id], Order.Status.CANCELLED, event.reason)


def _apply_rejected(batch: _Batch, event: Event) -> None:
    if rejection_effective(event):
        batch.release(batch.orders[event.order_id], Order.Status.REJECTED, event.reason)


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

_TRADE_COLUMNS = sql.columns(
    Trade,
    (
        "market", "seq", "price", "quantity", "quote_amount", "taker_side", "buy_order", "sell_order", "buyer",
        "seller", "buyer_fee", "seller_fee", "executed_at", "settled_at",
    ),
)  # fmt: skip


# What settlement neither checks nor changes of an order: left unread.
_ORDER_FIELDS_UNUSED = ("cid", "cancel_requested_at", "resends", "resent_at", "updated_at")
_ORDER_COLUMNS, _ORDER_NAMES = sql.select_list(Order, "o", omit=_ORDER_FIELDS_UNUSED)
_ORDERS_LOCK_SQL = (
    f"SELECT {_ORDER_COLUMNS} FROM {sql.table(Order)} o WHERE o.id = ANY(%s::bigint[]) ORDER BY o.id FOR UPDATE"  # noqa: S608 - the model's names
)

# The market with its two assets, each field as the models hold it, in one read.
_MARKET_COLUMNS, _MARKET_NAMES = sql.select_list(Market, "m")
_ASSET_COLUMNS = {alias: sql.select_list(Asset, alias) for alias in ("b", "q")}
_MARKET_SQL = f"""
SELECT {_MARKET_COLUMNS}, {_ASSET_COLUMNS["b"][0]}, {_ASSET_COLUMNS["q"][0]}
FROM {sql.table(Market)} m
JOIN {sql.table(Asset)} b ON b.symbol = m.base_id
JOIN {sql.table(Asset)} q ON q.symbol = m.quote_id
WHERE m.symbol = %s
"""  # noqa: S608 - the models' names


def _market_read(symbol: str) -> Market | None:
    """The market and its base and quote assets (one prepared statement), or None."""
    with sql.cursor() as cursor:
        cursor.execute(_MARKET_SQL, [symbol])
        row = cursor.fetchone()
    if row is None:
        return None
    market_end, asset_width = len(_MARKET_NAMES), len(_ASSET_COLUMNS["b"][1])
    market = sql.instance(Market, _MARKET_NAMES, row[:market_end])
    market.base = sql.instance(Asset, _ASSET_COLUMNS["b"][1], row[market_end : market_end + asset_width])
    market.quote = sql.instance(Asset, _ASSET_COLUMNS["q"][1], row[market_end + asset_width :])
    return market


def _batch_prepare(market: Market, events: list[Event]) -> _Batch:
    """Lock every order the batch touches, in primary-key order, and open the accounts it may move
    (two statements however many); the accounts are locked only when the batch writes them."""
    ids = sorted({oid for event in events for oid in order_ids(event)})
    with sql.cursor() as cursor:
        cursor.execute(_ORDERS_LOCK_SQL, [ids])
        orders = {row[0]: sql.instance(Order, _ORDER_NAMES, row) for row in cursor.fetchall()}
    for order in orders.values():
        if order.market_id == market.symbol:
            order.market = market  # what the checks and the releases read of it, without a query
    # An order of another market is never applied here (the checks refuse it): its owner's accounts
    # are left alone.
    users = {o.user_id for o in orders.values() if o.market_id == market.symbol}
    assets = (market.base_id, market.quote_id)
    accounts_open(
        keys=[
            *((user, asset, kind) for user in users for asset in assets for kind in Account.USER_KINDS),
            *((None, asset, Account.Kind.FEES) for asset in assets),
        ]
    )
    return _Batch(market=market, orders=orders)


def _batch_write(batch: _Batch) -> None:
    """Everything the applied events did, in one statement per table: ledger entries, their lines
    and the balances (`accounts.services`), trades, and the orders (`matching.services`). The
    accounts are locked here, in primary-key order, not when the batch began: an order placement
    that locks one of them waits for these writes only."""
    if batch.postings:
        ids = accounts_lock_keys(batch.accounts)
        for key, account in batch.accounts.items():
            account.pk = ids[key]
    ledger_post_many(postings=batch.postings)
    now = timezone.now()
    sql.rows_insert(Trade._meta.db_table, _TRADE_COLUMNS, [(*trade, now) for trade in batch.trades])
    orders_settle_apply(orders=batch.changed.values())


_CURSOR_COLUMNS, _CURSOR_NAMES = sql.select_list(SettlementCursor, "c")
_CURSOR_SQL = f"SELECT {_CURSOR_COLUMNS} FROM {sql.table(SettlementCursor)} c WHERE c.market = %s"  # noqa: S608
_CURSOR_SAVE_SQL = (
    f"UPDATE {sql.table(SettlementCursor)} SET seq = %s, hash = %s, status = %s, updated_at = %s WHERE market = %s"  # noqa: S608
)
# The next events of a market after its cursor, in order; and marking a run of them settled.
_EVENTS_SQL = f"""
SELECT seq, hash, payload, received_at FROM {sql.table(EngineEvent)}
WHERE market = %s AND seq > %s ORDER BY seq LIMIT %s
"""  # noqa: S608 - the model's names
_EVENTS_SETTLED_SQL = f"UPDATE {sql.table(EngineEvent)} SET settled_at = %s WHERE market = %s AND seq BETWEEN %s AND %s"  # noqa: S608


class _Inboxed(NamedTuple):
    """What settling reads of an inbox row."""

    seq: int
    hash: str
    payload: dict
    received_at: datetime


def _cursor_lock(market: str) -> SettlementCursor:
    """Serialise the settlement of one market, then read its cursor.

    The lock is a transaction-scoped advisory lock on the market, not the cursor row's: the
    consumer raises the cursor's `received_seq` in transactions of its own, and a row lock held for
    a whole batch made every store of that market's events wait for the batch to commit. The
    cursor is read after the lock is held, so it is the one the previous batch committed; the batch
    writes back only what it owns of the row (`seq`, `hash`, `status`).
    """
    with sql.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('settlement'), hashtext(%s))", [market])
        cursor.execute(_CURSOR_SQL, [market])
        row = cursor.fetchone()
    if row is None:  # a market nothing was received for yet
        found, _ = SettlementCursor.objects.get_or_create(market=market)
        return found
    return sql.instance(SettlementCursor, _CURSOR_NAMES, row)


def _cursor_save(cursor: SettlementCursor) -> None:
    """Write back what a batch owns of the cursor: its position and status (`received_seq` is the
    consumer's)."""
    with sql.cursor() as db:
        db.execute(_CURSOR_SAVE_SQL, [cursor.seq, cursor.hash, cursor.status, timezone.now(), cursor.market])


def market_settle(*, market: str, limit: int | None = None) -> int:
    """Apply the next contiguous engine events of one market (at most `limit`, by default
    `SETTLEMENT_BATCH_SIZE`); return how many were applied.

    One transaction of at most fourteen statements, however many events, trades, orders and
    accounts the batch holds: lock the market and read its cursor (two), read the events, read the
    market, lock the orders, open and lock the accounts (two); then, the events checked and applied
    in memory, write the balances, the ledger entries, their lines, the trades, the orders, the
    events' `settled_at` and the cursor. A write with nothing to write is skipped; a batch that
    stops at a bad event adds the two statements of its alert.
    """
    limit = limit or settings.SETTLEMENT_BATCH_SIZE
    with transaction.atomic():
        cursor = _cursor_lock(market)
        if cursor.status in (SettlementCursor.Status.BROKEN_CHAIN, SettlementCursor.Status.INCONSISTENT):
            return 0
        with sql.cursor() as db:
            db.execute(_EVENTS_SQL, [market, cursor.seq, limit])
            # Django reads jsonb as text, for JSONField to decode.
            rows = [_Inboxed(seq, hash_, json.loads(payload), received) for seq, hash_, payload, received in db]
        if not rows:
            return 0
        if rows[0].seq != cursor.seq + 1:
            _gap_check(cursor, rows[0])
            return 0

        events: list[tuple[_Inboxed, Event]] = []
        links = ChainCheck(market, cursor.seq, cursor.hash)
        for row in rows:
            if row.seq != links.seq + 1:
                break
            event = event_from_dict(row.payload, row.hash)
            try:
                links.extend(event)
            except ChainError:
                cursor.status = SettlementCursor.Status.BROKEN_CHAIN
                alert_raise(
                    kind=Alert.Kind.BROKEN_CHAIN,
                    market=market,
                    message=f"event #{row.seq} does not chain onto #{row.seq - 1}; settlement stopped",
                )
                break
            events.append((row, event))

        applied: list[_Inboxed] = []
        market_obj = _market_read(market) if events else None
        if events and market_obj is None:
            _settlement_stop(cursor, Alert.Kind.UNKNOWN_REFERENCE, f"the database has no market {market}")
        elif events:
            batch = _batch_prepare(market_obj, [event for _, event in events])
            for row, event in events:
                kind = event.TYPE
                refusal = event_refusal(batch.market, batch.orders, event)
                if refusal is not None:
                    _settlement_stop(cursor, refusal.kind, f"event #{row.seq} ({kind}): {refusal.reason}")
                    break
                _HANDLERS[kind](batch, event)
                applied.append(row)
            _batch_write(batch)
        if applied:
            cursor.seq, cursor.hash = applied[-1].seq, applied[-1].hash
            with sql.cursor() as db:
                db.execute(_EVENTS_SETTLED_SQL, [timezone.now(), market, applied[0].seq, cursor.seq])
        if cursor.status == SettlementCursor.Status.GAP:
            cursor.status = SettlementCursor.Status.OK
        _cursor_save(cursor)
        return len(applied)


def _settlement_stop(cursor: SettlementCursor, kind: str, problem: str) -> None:
    """An event the database contradicts (an engine fed another exchange's input, a database restored
    without its Kafka topics, or someone writing to the events topic): settlement of the market stops
    there, with an alert, rather than guessing. Everything before the event stays applied."""
    cursor.status = SettlementCursor.Status.INCONSISTENT
    alert_raise(kind=kind, market=cursor.market, message=f"{problem}; settlement stopped")


def _gap_check(cursor: SettlementCursor, first_waiting: _Inboxed) -> None:
    """Events after a hole wait for the hole to fill; if it stays open, an operator hears of it.

    Settlement never skips: it resumes by itself once the missing event arrives.
    """
    age = timezone.now() - first_waiting.received_at
    if age < timedelta(seconds=settings.SETTLEMENT_GAP_ALERT_SECONDS):
        return
    if cursor.status != SettlementCursor.Status.GAP:
        cursor.status = SettlementCursor.Status.GAP
        _cursor_save(cursor)
    alert_raise(
        kind=Alert.Kind.SEQUENCE_GAP,
        market=cursor.market,
        message=f"settled up to #{cursor.seq}, next received is #{first_waiting.seq}; waiting for the gap",
    )


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
