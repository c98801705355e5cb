from decimal import Decimal

import pghistory
from django.conf import settings
from django.db import models
from django.db.models import Q

from accounts.models import AmountField, Asset


@pghistory.track()
class Market(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        HALTED = "halted"

    symbol = models.CharField(max_length=32, primary_key=True)
    base = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    quote = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    tick_size = AmountField(help_text="Price step, in quote per base.")
    lot_size = AmountField(help_text="Quantity step, in base.")
    min_notional = AmountField(default=Decimal(0), help_text="Smallest price x quantity, in quote.")
    maker_fee = models.DecimalField(max_digits=8, decimal_places=6, default=Decimal("0.001"))
    taker_fee = models.DecimalField(max_digits=8, decimal_places=6, default=Decimal("0.002"))
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["symbol"]
        constraints = [
            models.CheckConstraint(condition=Q(tick_size__gt=0) & Q(lot_size__gt=0), name="market_steps_positive"),
            models.CheckConstraint(
                condition=Q(maker_fee__gte=0) & Q(maker_fee__lt=1) & Q(taker_fee__gte=0) & Q(taker_fee__lt=1),
                name="market_fees_in_range",
            ),
            models.CheckConstraint(condition=~Q(base=models.F("quote")), name="market_assets_differ"),
        ]
        permissions = [("halt_market", "Can halt and resume markets and cancel all orders in one")]

    def __str__(self) -> str:
        return self.symbol

    def to_ticks(self, price: Decimal) -> int:
        return int(price / self.tick_size)

    def to_lots(self, quantity: Decimal) -> int:
        return int(quantity / self.lot_size)

    def from_ticks(self, ticks: int) -> Decimal:
        return self.tick_size * ticks

    def from_lots(self, lots: int) -> Decimal:
        return self.lot_size * lots

    @property
    def quote_unit(self) -> Decimal:
        """The quote amount of one tick times one lot: the engine's unit for quote budgets."""
        return self.tick_size * self.lot_size


class Order(models.Model):
    class Side(models.TextChoices):
        BUY = "buy", "Buy"
        SELL = "sell", "Sell"

    class Type(models.TextChoices):
        LIMIT = "limit", "Limit"
        MARKET = "market", "Market"

    class TimeInForce(models.TextChoices):
        GTC = "GTC"
        IOC = "IOC"
        FOK = "FOK"

    class SelfTrade(models.TextChoices):
        CANCEL_INCOMING = "cancel_incoming"
        CANCEL_RESTING = "cancel_resting"
        CANCEL_BOTH = "cancel_both"

    class Status(models.TextChoices):
        PENDING = "pending"
        OPEN = "open"
        PARTIALLY_FILLED = "partially_filled"
        FILLED = "filled"
        CANCELLED = "cancelled"
        REJECTED = "rejected"

    LIVE_STATUSES = (Status.PENDING, Status.OPEN, Status.PARTIALLY_FILLED)
    FINAL_STATUSES = (Status.FILLED, Status.CANCELLED, Status.REJECTED)

    # Indexed by (user, status), (market, status) and the unique (user, cid) below.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="orders", db_index=False)
    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="orders", db_index=False)
    cid = models.CharField(max_length=32)
    side = models.CharField(max_length=4, choices=Side.choices)
    order_type = models.CharField(max_length=8, choices=Type.choices)
    time_in_force = models.CharField(max_length=3, choices=TimeInForce.choices, default=TimeInForce.GTC)
    post_only = models.BooleanField(default=False)
    stp = models.CharField(max_length=16, choices=SelfTrade.choices, default=SelfTrade.CANCEL_INCOMING)
    price = AmountField(null=True, blank=True)
    quantity = AmountField(null=True, blank=True)
    quote_quantity = AmountField(null=True, blank=True)
    filled = AmountField(default=Decimal(0), help_text="Base quantity traded.")
    filled_quote = AmountField(default=Decimal(0), help_text="Quote amount traded.")
    fee = AmountField(default=Decimal(0), help_text="Fees paid, in the asset received.")
    locked = AmountField(
        default=Decimal(0), help_text="What this order still holds locked (quote for a buy, base for a sell)."
    )
    # The market's rates when the order was placed: a later change of the market's fees applies to
    # orders placed after it, never to one already resting.
    maker_fee_rate = models.DecimalField(max_digits=8, decimal_places=6, help_text="Fee rate when it makes liquidity.")
    taker_fee_rate = models.DecimalField(max_digits=8, decimal_places=6, help_text="Fee rate when it takes liquidity.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING, db_index=True)
    reason = models.CharField(max_length=32, blank=True, help_text="Why it was cancelled or rejected.")
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    resends = models.PositiveIntegerField(default=0, help_text="Times the relay sent this order's command again.")
    resent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "cid"], name="order_unique_cid"),
            models.CheckConstraint(
                condition=Q(locked__gte=0) & Q(filled__gte=0) & Q(filled_quote__gte=0) & Q(fee__gte=0),
                name="order_amounts_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(locked=0) | Q(status__in=["pending", "open", "partially_filled"]),
                name="order_final_holds_nothing",
            ),
            models.CheckConstraint(
                condition=Q(maker_fee_rate__gte=0)
                & Q(maker_fee_rate__lt=1)
                & Q(taker_fee_rate__gte=0)
                & Q(taker_fee_rate__lt=1),
                name="order_fee_rates_in_range",
            ),
        ]
        indexes = [
            models.Index(fields=["user", "status"]),
            models.Index(fields=["market", "status"]),
            # The admin finds an order by the cid a trader quotes.
            models.Index(fields=["cid"], name="order_cid"),
        ]
        permissions = [("cancel_order", "Can cancel users' orders through the engine")]

    def __str__(self) -> str:
        return f"order {self.pk} {self.side} {self.market_id} ({self.status})"

    @property
    def lock_asset_id(self) -> str:
        return self.market.quote_id if self.side == self.Side.BUY else self.market.base_id

    @property
    def is_live(self) -> bool:
        return self.status in self.LIVE_STATUSES


# For the API schema's enum names (drf-spectacular's ENUM_NAME_OVERRIDES takes a module attribute).
ORDER_SIDES = Order.Side
ORDER_STATUSES = Order.Status
ORDER_TYPES = Order.Type
ORDER_TIMES_IN_FORCE = Order.TimeInForce
ORDER_SELF_TRADE = Order.SelfTrade
MARKET_STATUSES = Market.Status


class OutboxMessage(models.Model):
    """A Kafka message written in the same transaction as the change it announces.

    The relay process (`run_outbox_relay`) publishes it after commit, and marks it only once the
    broker acknowledged it, so a crash between commit and publish delays a message but never loses it.
    No trigger notifies the relay: PostgreSQL serialises the commits of every transaction that sent a
    NOTIFY behind one lock, held across the commit's flush, which halved single orders per second. The
    relay looks for new rows instead (`OUTBOX_POLL_SECONDS`).
    """

    topic = models.CharField(max_length=64)
    key = models.CharField(max_length=64)
    payload = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=255, blank=True)

    class Meta:
        indexes = [
            # What the relay reads, in the order it publishes: the unpublished rows by id.
            models.Index(fields=["id"], condition=Q(published_at__isnull=True), name="outbox_unpublished"),
        ]

    def __str__(self) -> str:
        return f"outbox {self.pk} {self.topic}/{self.key}"


class EngineSnapshot(models.Model):
    """The matching worker's books at a known input position, so a restart replays only the rest."""

    worker = models.CharField(max_length=64, help_text="Which partitions this worker owns.")
    offsets = models.JSONField(help_text="Next input offset per partition of the orders topic.")
    commands = models.BigIntegerField(default=0, help_text="Commands applied since the empty book.")
    sequences = models.JSONField(default=dict, help_text="Each market's last event sequence number in it.")
    data = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["worker", "-id"])]

    def __str__(self) -> str:
        return f"snapshot {self.pk} of {self.worker}"
