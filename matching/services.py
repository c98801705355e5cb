"""Writes to markets and orders. Each public function is one transaction; Kafka hears about it only
after commit, through the outbox."""

import atexit
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal

import structlog
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import AMOUNT_LIMIT, Asset, LedgerEntry, User
from accounts.services import audit_record, funds_lock, operator_check
from core.bulk import unnest_rows
from core.errors import Conflict, Forbidden, InvalidRequest, NotFound
from core.kafka import client, topics
from matching import schemas
from matching.engine import AddMarket, CancelAll, CancelOrder, Command, Engine, HaltMarket, NewOrder, ResumeMarket
from matching.models import EngineSnapshot, Market, Order, OutboxMessage
from matching.publisher import EXIT_WAIT_SECONDS, OutboxPublisher

log = structlog.get_logger(__name__)


def millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def steps(value: Decimal, step: Decimal, *, field: str, what: str) -> int:
    """`value` as a whole number of `step`s; anything in between is a precision error."""
    count, rest = divmod(value, step)
    if rest != 0:
        raise InvalidRequest("invalid_precision", f"{what} must be a multiple of {step.normalize():f}.", field=field)
    return int(count)


# --- Outbox ---------------------------------------------------------------------------------------


def outbox_add(command: Command) -> OutboxMessage:
    """Queue a command for the engine in the caller's transaction; it is sent once that commits."""
    message = OutboxMessage.objects.create(
        topic=topics.ORDERS, key=command.market, payload=schemas.encode_command(command)
    )
    transaction.on_commit(lambda: publisher.submit([message.pk]))
    return message


def outbox_publish(*, ids: list[int]) -> int:
    """Send the given outbox rows that are not yet acknowledged; mark each one the broker accepted.

    Runs outside any transaction. A row sent twice (a crash after send, before marking) is dropped
    by the engine as a duplicate order id.
    """
    sent = 0
    for message in OutboxMessage.objects.filter(pk__in=ids, published_at__isnull=True).order_by("pk"):
        try:
            client.send(message.topic, message.key, bytes(message.payload))
        except Exception as exc:  # noqa: BLE001 - any broker failure leaves the row to the relay
            log.warning("outbox_publish_failed", outbox_id=message.pk, error=repr(exc))
            OutboxMessage.objects.filter(pk=message.pk).update(
                attempts=message.attempts + 1, last_error=repr(exc)[:255]
            )
            client.reset_producer()
            break
        sent += OutboxMessage.objects.filter(pk=message.pk, published_at__isnull=True).update(
            published_at=timezone.now(), attempts=message.attempts + 1
        )
    return sent


publisher = OutboxPublisher(lambda ids: outbox_publish(ids=ids))
atexit.register(publisher.drain, EXIT_WAIT_SECONDS)


def outbox_relay(*, older_than: float = 1.0, limit: int = 1000) -> int:
    """Publish what the after-commit hook did not (the process died, the broker was away), and send
    again commands that the broker acknowledged but the engine never acted on."""
    cutoff = timezone.now() - timedelta(seconds=older_than)
    ids = list(
        OutboxMessage.objects.filter(published_at__isnull=True, created_at__lt=cutoff)
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
    sent = outbox_publish(ids=ids) if ids else 0
    return sent + orders_resend_stale(limit=limit)


def _resend_due(order: Order, now: datetime) -> bool:
    """Each resend of the same order waits twice as long as the one before (capped), so an engine
    that is merely slow to answer, or a settlement that is stopped, is not flooded with copies."""
    since = order.resent_at or order.cancel_requested_at or order.created_at
    wait = settings.OUTBOX_RETRY_SECONDS * 2 ** min(order.resends, 8)
    return (now - since).total_seconds() >= wait


def orders_resend_stale(*, limit: int = 1000) -> int:
    """A broker that lost acknowledged messages (a crash before its disk write) would leave orders
    pending or cancels unapplied forever; the database knows better, so it asks again. The engine
    drops a copy of an order it already has."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.OUTBOX_RETRY_SECONDS)
    stale = (
        Order.objects.filter(
            Q(status=Order.Status.PENDING, created_at__lt=cutoff)
            | Q(status__in=Order.LIVE_STATUSES, cancel_requested_at__lt=cutoff)
        )
        .select_related("market")
        .order_by("pk")[:limit]
    )
    resent = 0
    for order in stale:
        if not _resend_due(order, now):
            continue
        commands: list[Command] = []
        if order.status == Order.Status.PENDING:
            commands.append(order_command(order))
        if order.cancel_requested_at is not None:
            commands.append(
                CancelOrder(
                    market=order.market_id,
                    order_id=order.pk,
                    user_id=order.user_id,
                    ts=millis(order.cancel_requested_at),
                )
            )
        for command in commands:
            try:
                client.send(topics.ORDERS, command.market, schemas.encode_command(command))
            except Exception as exc:  # noqa: BLE001 - the next sweep tries again
                log.warning("order_resend_failed", order_id=order.pk, error=repr(exc))
                client.reset_producer()
                return resent
        Order.objects.filter(pk=order.pk).update(resent_at=now, resends=F("resends") + 1)
        resent += 1
    if resent:
        log.info("orders_resent", count=resent)
    return resent


# --- Markets --------------------------------------------------------------------------------------


@transaction.atomic
def market_create(
    *,
    symbol: str,
    base: Asset,
    quote: Asset,
    tick_size: Decimal,
    lot_size: Decimal,
    min_notional: Decimal,
    maker_fee: Decimal = Decimal("0.001"),
    taker_fee: Decimal = Decimal("0.002"),
    acting_user: User | None = None,
) -> Market:
    """Create a market and tell the engine to open a book for it."""
    if acting_user is not None:
        operator_check(acting_user, "matching.add_market")
    if lot_size != lot_size.quantize(base.quantum):
        raise InvalidRequest("invalid_precision", f"Lot size is finer than {base.pk} allows.", field="lot_size")
    if tick_size * lot_size != (tick_size * lot_size).quantize(quote.quantum):
        raise InvalidRequest("invalid_precision", f"Tick x lot is finer than {quote.pk} allows.", field="tick_size")
    market = Market.objects.create(
        symbol=symbol,
        base=base,
        quote=quote,
        tick_size=tick_size,
        lot_size=lot_size,
        min_notional=min_notional,
        maker_fee=maker_fee,
        taker_fee=taker_fee,
    )
    outbox_add(AddMarket(market=symbol, ts=millis(market.created_at)))
    audit_record(actor=acting_user, action="market_create", target=f"market:{symbol}")
    return market


def _market_set_status(*, symbol: str, status: str, acting_user: User | None) -> Market:
    if acting_user is not None:
        operator_check(acting_user, "matching.halt_market")
    market = Market.objects.select_for_update().get(pk=symbol)
    if market.status == status:
        return market
    market.status = status
    market.save(update_fields=["status"])
    command_type = HaltMarket if status == Market.Status.HALTED else ResumeMarket
    outbox_add(command_type(market=symbol, ts=millis(timezone.now())))
    action = "market_halt" if status == Market.Status.HALTED else "market_resume"
    audit_record(actor=acting_user, action=action, target=f"market:{symbol}")
    return market


@transaction.atomic
def market_halt(*, symbol: str, acting_user: User | None) -> Market:
    return _market_set_status(symbol=symbol, status=Market.Status.HALTED, acting_user=acting_user)


@transaction.atomic
def market_resume(*, symbol: str, acting_user: User | None) -> Market:
    return _market_set_status(symbol=symbol, status=Market.Status.ACTIVE, acting_user=acting_user)


# --- Orders ---------------------------------------------------------------------------------------


def order_command(order: Order) -> NewOrder:
    market = order.market
    return NewOrder(
        market=market.symbol,
        order_id=order.pk,
        user_id=order.user_id,
        side=str(order.side),
        order_type=str(order.order_type),
        price=int(order.price / market.tick_size) if order.price is not None else None,
        quantity=int(order.quantity / market.lot_size) if order.quantity is not None else None,
        quote_quantity=(int(order.quote_quantity / market.quote_unit) if order.quote_quantity is not None else None),
        time_in_force=str(order.time_in_force),
        post_only=order.post_only,
        stp=str(order.stp),
        ts=millis(order.created_at),
    )


def _order_validate(
    *,
    market: Market,
    side: str,
    order_type: str,
    price: Decimal | None,
    quantity: Decimal | None,
    quote_quantity: Decimal | None,
    time_in_force: str,
    post_only: bool,
) -> Decimal:
    """Check the order against the market's rules; return what it must lock."""
    if market.status != Market.Status.ACTIVE:
        raise InvalidRequest("market_halted", f"Market {market.symbol} is halted.", field="symbol")

    def positive(value: Decimal | None, field: str) -> Decimal:
        if value is None:
            raise InvalidRequest("required", f"{field} is required for this order.", field=field)
        if value <= 0:
            raise InvalidRequest("invalid_amount", f"{field} must be greater than zero.", field=field)
        return value

    if order_type == Order.Type.LIMIT:
        price = positive(price, "price")
        quantity = positive(quantity, "quantity")
        if quote_quantity is not None:
            raise InvalidRequest("not_allowed", "quote_quantity is only for market buys.", field="quote_quantity")
        steps(price, market.tick_size, field="price", what="Price")
        steps(quantity, market.lot_size, field="quantity", what="Quantity")
        notional = price * quantity
        if notional >= AMOUNT_LIMIT:
            raise InvalidRequest(
                "amount_too_large", f"Price x quantity must be below {AMOUNT_LIMIT:f}.", field="quantity"
            )
        if notional < market.min_notional:
            raise InvalidRequest(
                "below_min_notional",
                f"Price x quantity must be at least {market.min_notional.normalize():f} {market.quote_id}.",
                field="quantity",
            )
        return notional if side == Order.Side.BUY else quantity

    if price is not None:
        raise InvalidRequest("not_allowed", "A market order has no price.", field="price")
    if post_only:
        raise InvalidRequest("not_allowed", "post_only applies to limit orders only.", field="post_only")
    if time_in_force == Order.TimeInForce.GTC:
        raise InvalidRequest("not_allowed", "A market order never rests: use IOC or FOK.", field="time_in_force")
    if side == Order.Side.SELL:
        quantity = positive(quantity, "quantity")
        if quote_quantity is not None:
            raise InvalidRequest("not_allowed", "A market sell is given by quantity.", field="quote_quantity")
        steps(quantity, market.lot_size, field="quantity", what="Quantity")
        return quantity
    quote_quantity = positive(quote_quantity, "quote_quantity")
    if quantity is not None:
        raise InvalidRequest("not_allowed", "A market buy is given by quote_quantity.", field="quantity")
    steps(quote_quantity, market.quote_unit, field="quote_quantity", what="Quote quantity")
    if quote_quantity < market.min_notional:
        raise InvalidRequest(
            "below_min_notional",
            f"quote_quantity must be at least {market.min_notional.normalize():f} {market.quote_id}.",
            field="quote_quantity",
        )
    return quote_quantity


def _open_orders_check(*, user: User) -> None:
    """Refuse an order that takes the user past MAX_OPEN_ORDERS_PER_USER live orders, counting the one
    being placed.

    Called after `funds_lock`, whose conditional update holds the user's account row until commit: a
    concurrent placement locking the same asset waits there and then counts this order, so two
    cannot both pass the cap. Placements locking different assets (a buy and a sell) do not wait for
    each other and may pass it by one each. One statement on the (user, status) index, stopped at
    cap + 1 rows.
    """
    cap = settings.MAX_OPEN_ORDERS_PER_USER
    if Order.objects.filter(user=user, status__in=Order.LIVE_STATUSES)[: cap + 1].count() > cap:
        raise Conflict(
            "too_many_open_orders", f"At most {cap} orders may be open at once; cancel one or wait for fills."
        )


def order_place(
    *,
    user: User,
    cid: str,
    symbol: str,
    side: str,
    order_type: str,
    price: Decimal | None = None,
    quantity: Decimal | None = None,
    quote_quantity: Decimal | None = None,
    time_in_force: str = Order.TimeInForce.GTC,
    post_only: bool = False,
    stp: str = Order.SelfTrade.CANCEL_INCOMING,
) -> tuple[Order, bool]:
    """Validate, lock the funds, save the order and queue it for the engine, all or nothing.

    A cid the user already used returns that first order (`created` False) and changes nothing.
    """
    existing = Order.objects.filter(user=user, cid=cid).first()
    if existing is not None:
        return existing, False
    if user.trading_restricted:
        raise Forbidden("trading_restricted", "Trading is restricted on this account.")
    market = Market.objects.select_related("base", "quote").filter(pk=symbol).first()
    if market is None:
        raise InvalidRequest("unknown_symbol", f"No market {symbol!r}.", field="symbol")
    if order_type == Order.Type.MARKET and time_in_force == Order.TimeInForce.GTC:
        time_in_force = Order.TimeInForce.IOC
    to_lock = _order_validate(
        market=market,
        side=side,
        order_type=order_type,
        price=price,
        quantity=quantity,
        quote_quantity=quote_quantity,
        time_in_force=time_in_force,
        post_only=post_only,
    )
    try:
        with transaction.atomic():
            order = Order.objects.create(
                user=user,
                market=market,
                cid=cid,
                side=side,
                order_type=order_type,
                time_in_force=time_in_force,
                post_only=post_only,
                stp=stp,
                price=price,
                quantity=quantity,
                quote_quantity=quote_quantity,
                locked=to_lock,
                maker_fee_rate=market.maker_fee,
                taker_fee_rate=market.taker_fee,
            )
            funds_lock(
                user=user,
                asset=market.quote if side == Order.Side.BUY else market.base,
                amount=to_lock,
                kind=LedgerEntry.Kind.ORDER_LOCK,
                reference=f"order:{order.pk}",
            )
            _open_orders_check(user=user)
            outbox_add(order_command(order))
    except IntegrityError:
        # The same cid raced in from a second request; the first one won.
        existing = Order.objects.filter(user=user, cid=cid).first()
        if existing is None:
            raise
        return existing, False
    return order, True


@transaction.atomic
def order_cancel(*, user: User, order_id: int, acting_user: User | None = None) -> Order:
    """Ask the engine to cancel; the order is cancelled when settlement applies the engine's answer.

    `acting_user` is the operator when the cancel comes from the admin; it is audited.
    """
    order = Order.objects.select_for_update().filter(pk=order_id, user=user).first()
    if order is None:
        raise NotFound("not_found", "No such order.")
    if not order.is_live:
        raise Conflict("order_closed", f"Order {order.pk} is already {order.status}.")
    if order.cancel_requested_at is None:
        order.cancel_requested_at = timezone.now()
        order.save(update_fields=["cancel_requested_at", "updated_at"])
        outbox_add(
            CancelOrder(
                market=order.market_id, order_id=order.pk, user_id=user.pk, ts=millis(order.cancel_requested_at)
            )
        )
    if acting_user is not None:
        operator_check(acting_user, "matching.cancel_order")
        audit_record(actor=acting_user, action="order_cancel", target=f"order:{order.pk}")
    return order


@transaction.atomic
def orders_cancel_all(
    *, user: User | None = None, market: str | None = None, acting_user: User | None = None, reason: str = ""
) -> int:
    """Cancel every live order of a user, of a market, or of a user in a market, through the engine's
    cancel-all; return how many orders it asked to cancel.

    Each order is also marked as asked to cancel, so an order the engine has not seen yet (still
    pending, or published after the cancel-all) is cancelled one by one by the relay's resend.
    `acting_user` is the operator when this comes from the admin; it is checked and audited.
    """
    if user is None and market is None:
        raise InvalidRequest("invalid", "Name a user, a market, or both.")
    if acting_user is not None:
        operator_check(acting_user, "matching.cancel_order")
        if user is None:
            operator_check(acting_user, "matching.halt_market")
    if market is not None and not Market.objects.filter(pk=market).exists():
        raise InvalidRequest("unknown_symbol", f"No market {market!r}.", field="symbol")
    live = Order.objects.select_for_update().filter(status__in=Order.LIVE_STATUSES).order_by("pk")
    if user is not None:
        live = live.filter(user=user)
    if market is not None:
        live = live.filter(market_id=market)
    now = timezone.now()
    rows = list(live.values_list("pk", "market_id", "user_id"))
    Order.objects.filter(pk__in=[pk for pk, _, _ in rows], cancel_requested_at__isnull=True).update(
        cancel_requested_at=now, updated_at=now
    )
    pairs = {(market_id, user_id) for _, market_id, user_id in rows}
    count = len(rows)
    for market_id, user_id in sorted(pairs):
        outbox_add(CancelAll(market=market_id, user_id=user_id, ts=millis(now)))
    if acting_user is not None:
        target = f"user:{user.pk}" if user is not None else f"market:{market}"
        audit_record(
            actor=acting_user, action="orders_cancel_all", target=target, market=market, count=count, reason=reason
        )
    return count


# --- Orders as the engine's output changes them ----------------------------------------------------
#
# Settlement applies a batch of engine events to the orders it has locked (`select_for_update`) in
# its transaction. The first three change one order in memory, so that the batch's later events are
# checked against the order as the earlier ones left it; `orders_settle_apply` then writes every
# order the batch changed in one statement. Matching alone decides how an event changes an order
# and writes it; the ledger lines that move the money are the caller's.


def order_open(*, order: Order) -> None:
    """The engine accepted the order and it rests on the book."""
    order.status = Order.Status.OPEN


def order_fill_apply(*, order: Order, quantity: Decimal, quote: Decimal, fee: Decimal, lock_used: Decimal) -> None:
    """A trade filled `quantity` (worth `quote`) of the order, charged `fee` and spent `lock_used`
    of what it locked."""
    order.filled += quantity
    order.filled_quote += quote
    order.fee += fee
    order.locked -= lock_used
    if order.status in (Order.Status.PENDING, Order.Status.OPEN):
        order.status = Order.Status.PARTIALLY_FILLED


def order_release(*, order: Order, status: str, reason: str = "") -> Decimal:
    """The order is finished (`status`: filled, cancelled or rejected); returns what it still
    locked, which goes back to its owner's available balance."""
    held = order.locked
    order.locked = Decimal(0)
    order.status = status
    order.reason = reason
    return held


_SETTLED_FIELDS = [
    ("id", "bigint"),
    ("status", "varchar"),
    ("filled", "numeric"),
    ("filled_quote", "numeric"),
    ("fee", "numeric"),
    ("locked", "numeric"),
    ("reason", "varchar"),
]


def orders_settle_apply(*, orders: Iterable[Order]) -> int:
    """Write what settlement changed of these orders (status, fills, fees, what they lock, reason)
    in one statement however many they are; the caller holds their row locks. Returns how many."""
    rows = [(o.pk, o.status, o.filled, o.filled_quote, o.fee, o.locked, o.reason) for o in orders]
    if not rows:
        return 0
    source, params = unnest_rows(_SETTLED_FIELDS, rows)
    columns = ", ".join(f"{name} = u.{name}" for name, _ in _SETTLED_FIELDS[1:])
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Order._meta.db_table} AS o SET {columns}, updated_at = %s FROM {source} WHERE o.id = u.id",  # noqa: S608 - names from the model
            [timezone.now(), *params],
        )
        return cursor.rowcount


# --- Engine snapshots -----------------------------------------------------------------------------

SNAPSHOTS_KEPT = 3


def _snapshots_lock(worker: str) -> None:
    """Serialise, until the transaction ends, everything that writes this worker's snapshots."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"engine-snapshot:{worker}"])


def engine_snapshot_rewound(*, worker: str, since: int) -> bool:
    """Whether an operator rewound `worker` after its snapshot `since` (see `engine_rewind`)."""
    return EngineSnapshot.objects.filter(worker=worker, pk__gt=since).exists()


def _settled(sequences: dict[str, int], settled: dict[str, int]) -> bool:
    return bool(sequences) and all(seq <= settled.get(market, 0) for market, seq in sequences.items())


@transaction.atomic
def engine_snapshot_save(
    *,
    worker: str,
    offsets: dict[int, int],
    commands: int,
    sequences: dict[str, int],
    data: bytes,
    since: int,
    settled: dict[str, int],
) -> EngineSnapshot | None:
    """Store the worker's books at its input position, with each market's sequence in them.

    Kept: the newest few, and the newest one that settlement has wholly applied (`settled`: each
    market's last settled sequence), or else the oldest one there is. So however far settlement
    lags, a snapshot from before its next event remains to rewind to (`engine_rewind`).

    `since` is the snapshot the worker last restored or wrote. When a newer one exists, an operator
    or the worker's own gap check has rewound the worker: nothing is written (it would undo the
    rewind) and None is returned, so the worker restarts from the rewind instead.
    """
    _snapshots_lock(worker)
    if engine_snapshot_rewound(worker=worker, since=since):
        return None
    saved = EngineSnapshot.objects.create(
        worker=worker,
        offsets={str(p): o for p, o in offsets.items()},
        commands=commands,
        sequences=sequences,
        data=data,
    )
    older = list(EngineSnapshot.objects.filter(worker=worker).order_by("-id").values_list("pk", "sequences"))
    keep = {pk for pk, _ in older[:SNAPSHOTS_KEPT]}
    anchor = next((pk for pk, seqs in older if _settled(seqs, settled)), older[-1][0])
    EngineSnapshot.objects.filter(worker=worker).exclude(pk__in=keep | {anchor}).delete()
    return saved


def _sequences(snapshot: EngineSnapshot) -> dict[str, int]:
    """Each market's sequence in a snapshot (read from its books for rows stored without them)."""
    if snapshot.sequences:
        return snapshot.sequences
    return Engine.restore(bytes(snapshot.data)).sequences()


def _worker_partitions(worker: str) -> list[int]:
    """The partitions of the orders topic a worker id names ("orders:0,1,2")."""
    return [int(p) for p in worker.partition(":")[2].split(",") if p]


@transaction.atomic
def engine_rewind(
    *, market: str, seq: int, earliest_offsets: dict[int, int], acting_user: User | None = None
) -> tuple[EngineSnapshot, int]:
    """Make the matching worker that owns `market` replay from before that market's event `seq`.

    For when the event stream lost events the engine had already emitted (a broker that lost
    acknowledged writes): settlement then waits at a gap that a plain restart cannot fill, because
    the worker's latest snapshot is past it. This picks the newest kept snapshot in which the
    market's sequence is below `seq` (or the empty book at the start of the input) and stores a copy
    of it as the worker's newest snapshot. The worker notices within a second, restores it and
    replays the orders topic from its offsets; the engine being deterministic, every event from
    there on is emitted again identically, and settlement keeps one copy of each.

    Refused when the orders topic no longer holds the input from that snapshot on
    (`earliest_offsets`: the first offset the broker still has, per partition), since a replay from
    a later offset would not reproduce the same events. Returns the new snapshot and the market's
    sequence in it.
    """
    if seq < 1:
        raise InvalidRequest("invalid", "The sequence number must be at least 1.", field="seq")
    if not Market.objects.filter(pk=market).exists():
        raise NotFound("unknown_market", f"No market {market}.")
    workers = list(EngineSnapshot.objects.values_list("worker", flat=True).distinct().order_by("worker"))
    for worker in workers:
        _snapshots_lock(worker)
    candidates: dict[str, list[tuple[EngineSnapshot, dict[str, int]]]] = {}
    owner = None
    for worker in workers:
        kept = list(EngineSnapshot.objects.filter(worker=worker).order_by("-id"))
        candidates[worker] = [(snapshot, _sequences(snapshot)) for snapshot in kept]
        if market in candidates[worker][0][1]:
            owner = worker
    if owner is None and len(workers) == 1:
        owner = workers[0]  # the market was added after the worker's latest snapshot
    if owner is None:
        raise NotFound("unknown_market", f"No matching worker's snapshot knows market {market}.")

    source, source_sequences = next(
        ((snapshot, sequences) for snapshot, sequences in candidates[owner] if sequences.get(market, 0) < seq),
        (None, {}),
    )
    at = source_sequences.get(market, 0)
    partitions = _worker_partitions(owner)
    offsets = {p: 0 for p in partitions}
    if source is not None:
        offsets.update({int(p): int(o) for p, o in source.offsets.items()})
    missing = {p: earliest_offsets.get(p, 0) for p in partitions if earliest_offsets.get(p, 0) > offsets[p]}
    if missing:
        raise Conflict(
            "replay_unavailable",
            f"The orders topic no longer holds the input from offsets {offsets} on "
            f"(it starts at {missing}); the events cannot be re-emitted.",
        )
    rewound = EngineSnapshot.objects.create(
        worker=owner,
        offsets={str(p): o for p, o in offsets.items()},
        commands=source.commands if source is not None else 0,
        sequences=source_sequences,
        data=bytes(source.data) if source is not None else Engine().snapshot(),
    )
    audit_record(
        actor=acting_user,
        action="engine_rewind",
        target=f"market:{market}",
        seq=seq,
        worker=owner,
        source_snapshot=source.pk if source is not None else None,
        snapshot=rewound.pk,
        market_seq=at,
    )
    log.warning("engine_rewind", market=market, seq=seq, worker=owner, snapshot=rewound.pk, market_seq=at)
    return rewound, at
