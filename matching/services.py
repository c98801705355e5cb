"""Writes to markets and orders. Each public function is one transaction; Kafka hears about it only
after commit, through the outbox."""

import operator
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import structlog
from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from redis.exceptions import RedisError

from accounts.models import AMOUNT_LIMIT, Account, Asset, LedgerEntry, User
from accounts.services import audit_record, funds_lock_steps, operator_check
from core import sql
from core.errors import Conflict, ExchangeError, Forbidden, InsufficientFunds, InvalidRequest, NotFound, Unauthorized
from core.kafka import client, topics
from matching import schemas
from matching.engine import AddMarket, CancelAll, CancelOrder, Command, Engine, HaltMarket, NewOrder, ResumeMarket
from matching.models import EngineSnapshot, Market, Order, OutboxMessage
from matching.progress import settlement_progress
from matching.selectors import ENGINE_STATE_KEY

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
    """Queue a command for the engine in the caller's transaction. The relay process finds the row
    once it is committed and publishes it; nothing is sent from here."""
    return OutboxMessage.objects.create(
        topic=topics.ORDERS, key=command.market, payload=schemas.encode_command(command)
    )


@dataclass(frozen=True, slots=True)
class OutboxPass:
    """What one pass of the relay did: rows it took, and how many of them, from the first on, the
    broker acknowledged (and were marked published)."""

    taken: int
    sent: int

    @property
    def failed(self) -> bool:
        return self.sent < self.taken


# The relay's statements. A pass's two are prepared once (`core.sql.cursor`): at one pass every few
# milliseconds, building them through the ORM each time cost the relay more CPU than sending the rows.
_OUTBOX_TAKE_SQL = f"""
SELECT id, topic, key, payload FROM {sql.table(OutboxMessage)}
WHERE published_at IS NULL ORDER BY id LIMIT %s
"""  # noqa: S608 - the model's table; the limit is a parameter
_OUTBOX_MARK_SQL = f"""
UPDATE {sql.table(OutboxMessage)} SET published_at = %s, attempts = attempts + 1
WHERE id = ANY(%s::bigint[]) AND published_at IS NULL
"""  # noqa: S608 - the model's table; every value is a parameter
# Whether anything waits to be published: one index-only scan of the partial index on the unpublished
# rows, which the relay runs on a connection of its own between passes.
OUTBOX_WAITING_SQL = f"SELECT 1 FROM {sql.table(OutboxMessage)} WHERE published_at IS NULL LIMIT 1"  # noqa: S608


def outbox_relay_batch(*, limit: int) -> OutboxPass:
    """Publish up to `limit` unpublished outbox rows, oldest first, as one batch: send them all,
    wait for the broker, then mark every acknowledged one in a single UPDATE. At the first row the
    broker did not acknowledge it stops: that row and every later one stay for the next pass.

    Two statements per pass (three when the broker fails). A row is marked only after the broker
    acknowledged it; if the process dies between the two, the row is sent again and the engine drops
    the copy (a duplicate order id). Only the relay process calls it (one at a time: see
    `run_outbox_relay`), outside any transaction.
    """
    with sql.cursor() as cursor:
        cursor.execute(_OUTBOX_TAKE_SQL, [limit])
        rows = cursor.fetchall()
    if not rows:
        return OutboxPass(taken=0, sent=0)
    sent, error = client.send_batch([(topic, key, bytes(payload)) for _, topic, key, payload in rows])
    if sent:
        with sql.cursor() as cursor:
            cursor.execute(_OUTBOX_MARK_SQL, [timezone.now(), [row[0] for row in rows[:sent]]])
    if sent < len(rows):
        failed = rows[sent][0]
        log.warning("outbox_publish_failed", outbox_id=failed, sent=sent, left=len(rows) - sent, error=repr(error))
        OutboxMessage.objects.filter(pk=failed).update(attempts=F("attempts") + 1, last_error=repr(error)[:255])
        client.reset_producer()
    return OutboxPass(taken=len(rows), sent=sent)


def _resend_due(order: Order, now: datetime) -> bool:
    """Each resend of the same order waits twice as long as the one before (capped), so an engine
    that is merely slow to answer, or a settlement that is stopped, is not flooded with copies."""
    since = order.resent_at or order.cancel_requested_at or order.created_at
    wait = settings.OUTBOX_RETRY_SECONDS * 2 ** min(order.resends, 8)
    return (now - since).total_seconds() >= wait


def _engine_read_past() -> dict[str, int] | None:
    """Per market, a time (ms) such that every command published before it has reached the
    matching worker: the later of the newest command it applied in that market and the last time it
    found its input read to the end, as it last published (`run_matching_engine`), and only for
    markets whose settlement has applied everything the engine had emitted by then. Markets not
    named are behind. None when the worker's state is unknown (Redis restarted, no worker ran yet):
    the sweep then goes by time alone."""
    try:
        state = cache.get(ENGINE_STATE_KEY)
    except (RedisError, OSError):
        return None
    if not state or "applied_ts" not in state:
        return None
    emitted: dict[str, int] = state.get("sequences", {})
    settled = settlement_progress().settled_sequences(markets=list(emitted))
    idle = state.get("caught_up_at") or 0
    return {
        market: max(idle, state["applied_ts"].get(market, 0))
        for market, seq in emitted.items()
        if settled.get(market, 0) >= seq
    }


def orders_resend_stale(*, limit: int = 1000) -> int:
    """A broker that lost acknowledged messages (a crash before its disk write) would leave orders
    pending or cancels unapplied forever; the database knows better, so it asks again. The engine
    drops a copy of an order it already has.

    A command is asked for again only once it is known to be lost, not merely waiting: the relay has
    published everything older than a second, the matching worker has read past the command's time
    by `OUTBOX_RETRY_SECONDS`, and settlement has applied what the worker emitted. Behind a backlog
    an order is pending because the pipeline is busy, and copies would only add to its work. The
    copies of one sweep go to the broker as one batch.
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.OUTBOX_RETRY_SECONDS)
    if OutboxMessage.objects.filter(published_at__isnull=True, created_at__lt=now - timedelta(seconds=1)).exists():
        return 0
    read_past = _engine_read_past()
    margin = int(settings.OUTBOX_RETRY_SECONDS * 1000)
    stale = (
        Order.objects.filter(
            Q(status=Order.Status.PENDING, created_at__lt=cutoff)
            | Q(status__in=Order.LIVE_STATUSES, cancel_requested_at__lt=cutoff)
        )
        .select_related("market")
        .order_by("pk")[:limit]
    )
    due: list[tuple[Order, list[Command]]] = []
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
        if read_past is not None:
            passed = read_past.get(order.market_id, 0)
            commands = [command for command in commands if command.ts + margin <= passed]
        if commands:
            due.append((order, commands))
    if not due:
        return 0
    messages = [
        (topics.ORDERS, command.market, schemas.encode_command(command)) for _, commands in due for command in commands
    ]
    sent, error = client.send_batch(messages)
    done, counted = [], 0
    for order, commands in due:
        counted += len(commands)
        if counted > sent:
            break
        done.append(order.pk)
    if sent < len(messages):
        log.warning("order_resend_failed", sent=sent, left=len(messages) - sent, error=repr(error))
        client.reset_producer()
    Order.objects.filter(pk__in=done).update(resent_at=now, resends=F("resends") + 1)
    if done:
        log.info("orders_resent", count=len(done))
    return len(done)


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


@dataclass(frozen=True)
class OrderRequest:
    """One order as a client asks for it (`POST /api/orders/`, or one item of a batch)."""

    cid: str
    symbol: str
    side: str
    order_type: str
    price: Decimal | None = None
    quantity: Decimal | None = None
    quote_quantity: Decimal | None = None
    time_in_force: str = Order.TimeInForce.GTC
    post_only: bool = False
    stp: str = Order.SelfTrade.CANCEL_INCOMING


@dataclass
class Placement:
    """What became of one request: the order (`created` False when its cid was already used), or the
    error that refused it, which changed nothing."""

    order: Order | None = None
    created: bool = False
    error: ExchangeError | None = None


@dataclass
class _Plan:
    request: OrderRequest
    market: Market
    time_in_force: str
    to_lock: Decimal

    @property
    def lock_asset_id(self) -> str:
        return self.market.quote_id if self.request.side == Order.Side.BUY else self.market.base_id


def _order_plan(request: OrderRequest, market: Market) -> _Plan:
    time_in_force = request.time_in_force
    if request.order_type == Order.Type.MARKET and time_in_force == Order.TimeInForce.GTC:
        time_in_force = Order.TimeInForce.IOC
    to_lock = _order_validate(
        market=market,
        side=request.side,
        order_type=request.order_type,
        price=request.price,
        quantity=request.quantity,
        quote_quantity=request.quote_quantity,
        time_in_force=time_in_force,
        post_only=request.post_only,
    )
    return _Plan(request=request, market=market, time_in_force=time_in_force, to_lock=to_lock)


# The first statement of a placement locks the owner's user row, reads the markets named, and locks
# the owner's available and locked accounts of the assets the orders lock, in primary-key order as
# every writer of balances locks them. A buy locks the quote asset's accounts and a sell the base
# asset's: the user row is what makes two placements of one user wait for each other whatever they
# lock, so the open-order cap holds between them (FOR NO KEY UPDATE: rows that refer to the user, such
# as orders, are still inserted meanwhile). The second, which starts once those locks are held and so
# sees everything committed by a placement that held them before, reads the owner's state: whether
# they may trade, how many orders they hold open (counted up to the cap), which of the cids they
# already used, their balances, and ids for the new orders.
_LOCK_SQL = f"""
SELECT
  (SELECT u.id FROM {sql.table(User)} u WHERE u.id = %(user)s FOR NO KEY UPDATE),
  (SELECT json_object_agg(m.symbol, json_build_array(m.base_id, m.quote_id, m.tick_size::text,
     m.lot_size::text, m.min_notional::text, m.maker_fee::text, m.taker_fee::text, m.status))
   FROM {sql.table(Market)} m WHERE m.symbol = ANY(%(symbols)s)),
  ARRAY(SELECT a.id FROM {sql.table(Account)} a
     WHERE a.user_id = %(user)s AND a.kind IN ('available', 'locked') AND a.asset_id IN (
       SELECT CASE WHEN r.side = 'buy' THEN m.quote_id ELSE m.base_id END
       FROM unnest(%(symbols)s::varchar[], %(sides)s::varchar[]) AS r(symbol, side)
       JOIN {sql.table(Market)} m USING (symbol))
     ORDER BY a.id FOR UPDATE)
"""  # noqa: S608 - the tables are the models'; every value is a parameter
_OWNER_SQL = f"""
SELECT u.is_active, u.trading_restricted,
  (SELECT count(*) FROM (
     SELECT 1 FROM {sql.table(Order)} o WHERE o.user_id = u.id AND o.status = ANY(%(live)s) LIMIT %(cap)s
   ) live),
  (SELECT json_object_agg(o.cid, o.id) FROM {sql.table(Order)} o WHERE o.user_id = u.id AND o.cid = ANY(%(cids)s)),
  (SELECT json_agg(json_build_array(a.id, a.asset_id, a.kind, a.balance::text))
     FROM {sql.table(Account)} a WHERE a.id = ANY(%(accounts)s)),
  ARRAY(SELECT nextval(pg_get_serial_sequence(%(orders)s, 'id')) FROM generate_series(1, %(count)s))
FROM {sql.table(User)} u WHERE u.id = %(user)s
"""  # noqa: S608 - the tables are the models'; every value is a parameter

_ORDER_FIELDS = (
    "id", "user", "market", "cid", "side", "order_type", "time_in_force", "post_only", "stp", "price",
    "quantity", "quote_quantity", "filled", "filled_quote", "fee", "locked", "maker_fee_rate",
    "taker_fee_rate", "status", "reason", "resends", "created_at", "updated_at",
)  # fmt: skip
_ORDER_VALUES = operator.attrgetter(*(Order._meta.get_field(name).attname for name in _ORDER_FIELDS))
_OUTBOX_FIELDS = ("topic", "key", "payload", "created_at", "attempts", "last_error")


def _placements_write(
    *, user_id: int, orders: list[Order], accounts: dict[tuple[str, str], int], now: datetime
) -> None:
    """One statement: the orders, their commands in the outbox, and what each locks moved from its
    owner's available account to their locked one (`funds_lock_steps`). The available accounts are
    the ones `_LOCK_SQL` locked and the balance check was made on; the database's non-negative
    constraint stands behind it."""
    orders_sql, orders_params = sql.insert_sql(
        sql.table(Order),
        sql.columns(Order, _ORDER_FIELDS),
        [_ORDER_VALUES(o) for o in orders],
    )
    outbox_sql, outbox_params = sql.insert_sql(
        sql.table(OutboxMessage),
        sql.columns(OutboxMessage, _OUTBOX_FIELDS),
        [(topics.ORDERS, o.market_id, schemas.encode_command(order_command(o)), now, 0, "") for o in orders],
    )
    funds_sql, funds_params = funds_lock_steps(
        user_id=user_id,
        moves=[(f"order:{o.pk}", o.lock_asset_id, o.locked) for o in orders],
        available={asset: pk for (asset, kind), pk in accounts.items() if kind == Account.Kind.AVAILABLE},
        kind=LedgerEntry.Kind.ORDER_LOCK,
        now=now,
    )
    statement = f"WITH new_orders AS ({orders_sql}), commands AS ({outbox_sql}), {funds_sql} SELECT count(*) FROM lines"  # noqa: S608
    with sql.cursor() as cursor:
        cursor.execute(statement, [*orders_params, *outbox_params, *funds_params])
        (lines,) = cursor.fetchone()
    if lines != 2 * len(orders):
        raise RuntimeError(f"order placement wrote {lines} ledger lines for {len(orders)} orders")


def _plans_make(requests: list[OrderRequest], markets: dict[str, list[str]]) -> list[_Plan | ExchangeError]:
    """Each request checked against its market as it is now, or the error that refuses it. The
    requests of one market share its one instance: a batch names few markets."""
    plans: list[_Plan | ExchangeError] = []
    built: dict[str, Market] = {}
    for request in requests:
        market = built.get(request.symbol)
        if market is None:
            row = markets.get(request.symbol)
            if row is None:
                plans.append(InvalidRequest("unknown_symbol", f"No market {request.symbol!r}.", field="symbol"))
                continue
            base, quote, *amounts, status = row
            tick_size, lot_size, min_notional, maker_fee, taker_fee = (Decimal(amount) for amount in amounts)
            market = built[request.symbol] = Market(
                symbol=request.symbol,
                base_id=base,
                quote_id=quote,
                tick_size=tick_size,
                lot_size=lot_size,
                min_notional=min_notional,
                maker_fee=maker_fee,
                taker_fee=taker_fee,
                status=status,
            )
        try:
            plans.append(_order_plan(request, market))
        except ExchangeError as exc:
            plans.append(exc)
    return plans


def _placements_decide(
    *, user_id: int, requests: list[OrderRequest], now: datetime
) -> tuple[list[Placement], dict[int, int]]:
    """Inside the transaction: lock, read the owner's state, then take the requests in order, each
    placed or refused on its own, and write every placed one in one statement. Returns the results
    and, by position, the ids of the earlier orders whose cids came again."""
    with sql.cursor() as cursor:
        cursor.execute(
            _LOCK_SQL, {"user": user_id, "symbols": [r.symbol for r in requests], "sides": [r.side for r in requests]}
        )
        _, markets, account_ids = cursor.fetchone()
        cursor.execute(
            _OWNER_SQL,
            {
                "user": user_id,
                "live": list(Order.LIVE_STATUSES),
                "cap": settings.MAX_OPEN_ORDERS_PER_USER,
                "cids": [r.cid for r in requests],
                "accounts": account_ids,
                "orders": Order._meta.db_table,
                "count": len(requests),
            },
        )
        row = cursor.fetchone()
    if row is None:
        raise Unauthorized("user_not_found", "The account of this token no longer exists.")
    is_active, restricted, open_count, used_cids, account_rows, ids = row
    used_cids, free_ids, cap = used_cids or {}, iter(ids), settings.MAX_OPEN_ORDERS_PER_USER
    accounts = {(asset, kind): pk for pk, asset, kind, _ in account_rows or []}
    available = {asset: Decimal(balance) for _, asset, kind, balance in account_rows or [] if kind == "available"}
    plans = _plans_make(requests, markets or {})

    results: list[Placement] = []
    earlier: dict[int, int] = {}
    placed: dict[str, Order] = {}
    for position, (request, plan) in enumerate(zip(requests, plans, strict=True)):
        if request.cid in placed:  # the same cid twice in one batch: the second is a retry of the first
            results.append(Placement(order=placed[request.cid]))
            continue
        if request.cid in used_cids:
            earlier[position] = used_cids[request.cid]
            results.append(Placement())
            continue
        if not is_active:
            results.append(Placement(error=Forbidden("account_disabled", "This account is disabled.")))
            continue
        if restricted:
            results.append(Placement(error=Forbidden("trading_restricted", "Trading is restricted on this account.")))
            continue
        if isinstance(plan, ExchangeError):
            results.append(Placement(error=plan))
            continue
        asset = plan.lock_asset_id
        if available.get(asset, Decimal(0)) < plan.to_lock:
            results.append(Placement(error=InsufficientFunds(asset=asset, needed=plan.to_lock)))
            continue
        if open_count >= cap:
            message = f"At most {cap} orders may be open at once; cancel one or wait for fills."
            results.append(Placement(error=Conflict("too_many_open_orders", message)))
            continue
        available[asset] -= plan.to_lock
        open_count += 1
        order = Order(
            pk=next(free_ids),
            user_id=user_id,
            market=plan.market,
            cid=request.cid,
            side=request.side,
            order_type=request.order_type,
            time_in_force=plan.time_in_force,
            post_only=request.post_only,
            stp=request.stp,
            price=request.price,
            quantity=request.quantity,
            quote_quantity=request.quote_quantity,
            locked=plan.to_lock,
            maker_fee_rate=plan.market.maker_fee,
            taker_fee_rate=plan.market.taker_fee,
            created_at=now,
            updated_at=now,
        )
        placed[request.cid] = order
        results.append(Placement(order=order, created=True))
    if placed:
        _placements_write(user_id=user_id, orders=list(placed.values()), accounts=accounts, now=now)
    return results, earlier


def orders_place(*, user: User, requests: list[OrderRequest]) -> list[Placement]:
    """Place each request on its own, in order: validated, its funds locked, saved and queued for the
    engine, or refused with an error that changes nothing. A cid the user already used answers that
    first order (`created` False), whatever the request says now.

    A fixed number of statements whatever the number of requests: one transaction of a read of the
    markets that locks the accounts (`_LOCK_SQL`), a read of the owner's state (`_OWNER_SQL`) and one
    write of every order placed (`_placements_write`); and a read of the earlier orders when a cid
    came again. A concurrent request with the same cid makes the write fail on the
    unique cid; the whole call then runs once more and answers that order.
    """
    for attempt in (1, 2):
        try:
            with transaction.atomic():
                results, earlier = _placements_decide(user_id=user.pk, requests=requests, now=timezone.now())
            break
        except IntegrityError as exc:
            constraint = getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None)
            if attempt == 2 or constraint != "order_unique_cid":
                raise
    if earlier:
        found = Order.objects.select_related("market").in_bulk(set(earlier.values()))
        for position, order_id in earlier.items():
            results[position].order = found[order_id]
    return results


def order_place(*, user: User, **request: object) -> tuple[Order, bool]:
    """Place one order (`orders_place` of one request); its error is raised. Returns the order and
    whether it is new."""
    (result,) = orders_place(user=user, requests=[OrderRequest(**request)])
    if result.error is not None:
        raise result.error
    return result.order, result.created


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


_SETTLED_FIELDS = sql.columns(Order, ("id", "status", "filled", "filled_quote", "fee", "locked", "reason"))


def orders_settle_apply(*, orders: Iterable[Order]) -> int:
    """Write what settlement changed of these orders (status, fills, fees, what they lock, reason)
    in one statement however many they are; the caller holds their row locks. Returns how many."""
    rows = [(o.pk, o.status, o.filled, o.filled_quote, o.fee, o.locked, o.reason) for o in orders]
    if not rows:
        return 0
    source, params = sql.unnest_rows(_SETTLED_FIELDS, rows)
    columns = ", ".join(f"{name} = u.{name}" for name, _ in _SETTLED_FIELDS[1:])
    with sql.cursor() as cursor:
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
