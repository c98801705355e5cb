"""The engine core and settlement glued together the way the worker and the consumer glue them,
without Kafka in between."""

from decimal import Decimal

import pytest

from accounts.models import Account
from matching import schemas
from matching.engine import AddMarket, Engine
from matching.models import Order, OutboxMessage
from matching.services import order_place
from settlement.services import ReceivedMessage, events_ingest, market_settle

TOPIC = "engine-events-under-test"


class Pipeline:
    """The engine and settlement glued together the way the worker and the consumer glue them."""

    def __init__(self, market: str) -> None:
        self.engine = Engine()
        self.market = market
        self.offset = 0
        self.emitted: list[bytes] = []
        self.feed(AddMarket(market=market, ts=0))

    def feed(self, command) -> list[bytes]:
        raw = [schemas.encode_event(e) for e in self.engine.apply(command)]
        self.emitted.extend(raw)
        return raw

    def feed_outbox(self) -> None:
        """Everything the API queued, in order, as the engine would receive it."""
        for message in OutboxMessage.objects.filter(published_at__isnull=True).order_by("pk"):
            self.feed(schemas.decode_command(bytes(message.payload)))
            message.published_at = message.created_at
            message.save()

    def deliver(self, raw: list[bytes]) -> None:
        messages = []
        for value in raw:
            messages.append(ReceivedMessage(partition=0, offset=self.offset, value=value))
            self.offset += 1
        events_ingest(topic=TOPIC, messages=messages)

    def settle(self) -> int:
        total = 0
        while count := market_settle(market=self.market):
            total += count
        return total

    def run(self) -> None:
        self.feed_outbox()
        self.deliver(self.emitted)
        self.emitted = []
        self.settle()


def balance(user, asset: str, kind: str = "available") -> Decimal:
    account = Account.objects.filter(user=user, asset_id=asset, kind=kind).first()
    return account.balance if account else Decimal(0)


def place(user, cid: str, side: str, price: str, quantity: str, **extra) -> Order:
    order, _ = order_place(
        user=user,
        cid=cid.ljust(16, "0"),
        symbol="BTC_USDT",
        side=side,
        order_type="limit",
        price=Decimal(price),
        quantity=Decimal(quantity),
        **extra,
    )
    return order


@pytest.fixture
def pipeline(btc_usdt) -> Pipeline:
    OutboxMessage.objects.all().delete()
    return Pipeline("BTC_USDT")


@pytest.fixture
def alice(make_user, fund):
    user = make_user(username="alice")
    fund(user, "BTC", "1")
    return user


@pytest.fixture
def bob(make_user, fund):
    user = make_user(username="bob")
    fund(user, "USDT", "1000")
    return user
