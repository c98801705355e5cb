"""What settlement checks before it applies an engine event.

The hash chain proves that events arrive complete and in order, not who wrote them: it has no key,
so anyone who can write to the events topic can append a correctly chained event. Every event is
therefore checked against the orders PostgreSQL holds (the market, the sides, the users, the limit
prices, what each order has left, its status) before it moves anything. The checks read only the
orders `market_settle` has already locked for the batch, as the earlier events of the batch left
them in memory: they cost no query.
"""

from dataclasses import dataclass
from decimal import Decimal

from matching.engine import Event, OrderAccepted, OrderCancelled, OrderDone, OrderRejected, Trade
from matching.models import Market, Order
from matching.services import order_command
from settlement.models import Alert

# Rejections that do not mean "this order is refused": a copy of an order the engine already has.
INFORMATIONAL_REJECTIONS = {"duplicate_order_id"}

_ACCEPTED = (Order.Status.OPEN, Order.Status.PARTIALLY_FILLED)
_ACCEPTED_FIELDS = ("side", "order_type", "price", "quantity", "quote_quantity", "time_in_force", "post_only", "stp")


@dataclass(frozen=True)
class Refusal:
    kind: str
    reason: str


_ORDER_ID_FIELDS = ("order_id", "maker_order_id", "taker_order_id")


def order_ids(event: Event) -> list[int]:
    """The orders an event names (read off its attributes: building its whole dict for them was a
    twentieth of settlement's CPU)."""
    return [oid for name in _ORDER_ID_FIELDS if (oid := getattr(event, name, None)) is not None]


def rejection_effective(event: OrderRejected) -> bool:
    """Whether a rejection refuses a new order (and so releases its funds); the others change nothing."""
    return event.request == "new" and event.reason not in INFORMATIONAL_REJECTIONS


def event_refusal(market: Market, orders: dict[int, Order], event: Event) -> Refusal | None:
    """Why `event` must not be applied to `orders` (by id, as the batch's earlier events left them),
    or None when PostgreSQL agrees with it."""
    check = _CHECKS.get(type(event))
    if check is None:
        return None  # market events: the database's market status is the operator's
    missing = sorted({oid for oid in order_ids(event) if oid not in orders})
    if missing and not (isinstance(event, OrderRejected) and not rejection_effective(event)):
        return Refusal(Alert.Kind.UNKNOWN_REFERENCE, f"names order(s) {missing} the database does not have")
    reason = check(market, orders, event)
    return Refusal(Alert.Kind.FAILED_CHECK, reason) if reason else None


def _amount(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _owned(market: Market, order: Order, user_id: int | None) -> str:
    if order.market_id != market.symbol:
        return f"order {order.pk} belongs to market {order.market_id}"
    if order.user_id != user_id:
        return f"order {order.pk} belongs to user {order.user_id}, not {user_id}"
    return ""


def _in(order: Order, statuses: tuple[str, ...]) -> str:
    if order.status not in statuses:
        return f"order {order.pk} is {order.status}, not {' or '.join(statuses)}"
    return ""


def _accepted(market: Market, orders: dict[int, Order], event: OrderAccepted) -> str:
    order = orders[event.order_id]
    problem = _owned(market, order, event.user_id) or _in(order, (Order.Status.PENDING,))
    if problem:
        return problem
    placed = order_command(order)
    for name in _ACCEPTED_FIELDS:
        said, has = getattr(event, name), getattr(placed, name)
        if said != has:
            return f"says {name} {said}, the order has {has}"
    return ""


def _left(order: Order, price: Decimal, quantity: Decimal) -> str:
    """Whether `order` has room for `quantity` at `price`: lots left, or quote left to spend."""
    if order.quantity is not None:
        left = order.quantity - order.filled
        if quantity > left:
            return f"quantity {_amount(quantity)} is more than order {order.pk} has left ({_amount(left)})"
        return ""
    left = (order.quote_quantity or Decimal(0)) - order.filled_quote
    if price * quantity > left:
        return f"costs {_amount(price * quantity)}, more than order {order.pk} has left to spend ({_amount(left)})"
    return ""


def _trade(market: Market, orders: dict[int, Order], event: Trade) -> str:
    maker, taker = orders[event.maker_order_id], orders[event.taker_order_id]
    for order, user_id in ((maker, event.maker_user_id), (taker, event.taker_user_id)):
        problem = _owned(market, order, user_id) or _in(order, _ACCEPTED)
        if problem:
            return problem
    if maker.pk == taker.pk:
        return "maker and taker are the same order"
    if taker.side != event.taker_side:
        return f"the taker order {taker.pk} is a {taker.side} order, not {event.taker_side}"
    if maker.side == taker.side:
        return f"maker and taker are both {maker.side} orders"
    if maker.user_id == taker.user_id:
        return "maker and taker belong to the same user"
    if event.price <= 0 or event.quantity <= 0:
        return "price and quantity must be positive"
    price, quantity = market.from_ticks(event.price), market.from_lots(event.quantity)
    if maker.order_type != Order.Type.LIMIT:
        return f"the maker order {maker.pk} is a {maker.order_type} order, which never rests"
    if price != maker.price:
        return f"price {_amount(price)} is not the maker's price {_amount(maker.price)}"
    if taker.order_type == Order.Type.LIMIT:
        if taker.side == Order.Side.BUY and price > taker.price:
            return f"price {_amount(price)} is above the taker's limit {_amount(taker.price)}"
        if taker.side == Order.Side.SELL and price < taker.price:
            return f"price {_amount(price)} is below the taker's limit {_amount(taker.price)}"
    problem = _left(maker, price, quantity) or _left(taker, price, quantity)
    if problem:
        return problem
    buy, sell = (taker, maker) if taker.side == Order.Side.BUY else (maker, taker)
    needs = {buy: buy.price * quantity if buy.order_type == Order.Type.LIMIT else price * quantity, sell: quantity}
    for order, used in needs.items():
        if used > order.locked:
            return f"order {order.pk} holds {_amount(order.locked)} locked, the trade needs {_amount(used)}"
    return ""


def _done(market: Market, orders: dict[int, Order], event: OrderDone) -> str:
    order = orders[event.order_id]
    problem = _owned(market, order, event.user_id) or _in(order, _ACCEPTED)
    if problem:
        return problem
    if order.quantity is not None and order.filled != order.quantity:
        return f"order {order.pk} is not filled ({_amount(order.filled)} of {_amount(order.quantity)})"
    if order.quantity is None and order.filled_quote != order.quote_quantity:
        return (
            f"order {order.pk} has not spent its budget "
            f"({_amount(order.filled_quote)} of {_amount(order.quote_quantity or Decimal(0))})"
        )
    return ""


def _cancelled(market: Market, orders: dict[int, Order], event: OrderCancelled) -> str:
    order = orders[event.order_id]
    return _owned(market, order, event.user_id) or _in(order, _ACCEPTED)


def _rejected(market: Market, orders: dict[int, Order], event: OrderRejected) -> str:
    order = orders.get(event.order_id) if event.order_id is not None else None
    if order is None:
        return ""  # a rejection that changes nothing (an early cancel, a cancel-all with nothing to cancel)
    problem = _owned(market, order, event.user_id)
    if problem or not rejection_effective(event):
        return problem
    return _in(order, (Order.Status.PENDING,))


_CHECKS = {
    OrderAccepted: _accepted,
    Trade: _trade,
    OrderDone: _done,
    OrderCancelled: _cancelled,
    OrderRejected: _rejected,
}
