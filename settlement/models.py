import pgtrigger
from django.conf import settings
from django.db import models
from django.db.models import Q

from accounts.models import AmountField, append_only
from matching.models import Market, Order


class EngineEvent(models.Model):
    """An event of the matching engine as it came off Kafka: the settlement inbox.

    Unique by (market, seq), so however often the consumer sees an event it is stored once; it is
    applied by the Celery settlement task in sequence order, and `SettlementCursor` says how far.
    """

    market = models.CharField(max_length=32)
    seq = models.BigIntegerField()
    type = models.CharField(max_length=24)
    payload = models.JSONField(help_text="The event's fields; its canonical bytes, and so its hash, follow from them.")
    hash = models.CharField(max_length=64)
    received_at = models.DateTimeField(auto_now_add=True)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["market", "seq"], name="engine_event_unique_seq"),
            models.CheckConstraint(condition=Q(seq__gt=0), name="engine_event_seq_positive"),
        ]
        triggers = [
            # An event is stored as the engine sent it, never deleted, and once settled never touched:
            # settling it may only set `settled_at`.
            pgtrigger.Protect(name="engine_event_not_deleted", operation=pgtrigger.Delete),
            pgtrigger.Protect(
                name="engine_event_content_final",
                operation=pgtrigger.Update,
                condition=pgtrigger.AnyChange(exclude=["settled_at"]),
            ),
            pgtrigger.Protect(
                name="engine_event_settled_final",
                operation=pgtrigger.Update,
                condition=pgtrigger.Q(old__settled_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.market}#{self.seq} {self.type}"


class SettlementCursor(models.Model):
    """How far settlement has gone in one market's event stream; moved in the same transaction as
    the effects of the events it passes."""

    class Status(models.TextChoices):
        OK = "ok"
        GAP = "gap", "stopped: sequence gap"
        BROKEN_CHAIN = "broken_chain", "stopped: hash chain broken"
        INCONSISTENT = "inconsistent", "stopped: an event the database contradicts"

    market = models.CharField(max_length=32, primary_key=True)
    seq = models.BigIntegerField(default=0, help_text="Last settled sequence number.")
    hash = models.CharField(max_length=64, default="0" * 64, help_text="Hash of the last settled event.")
    received_seq = models.BigIntegerField(default=0, help_text="Highest sequence number received.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OK)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.market} settled to #{self.seq}"

    @property
    def backlog(self) -> int:
        return max(self.received_seq - self.seq, 0)


class ChainCheckpoint(models.Model):
    """How far one market's hash chain is known to verify: the last event a reconciliation run
    verified, with every event before it from genesis. The next run verifies only the events after
    it, chained onto its hash; a full run (`RECONCILE_FULL_SECONDS`) verifies from genesis again and
    sets it anew, back before a break if it finds one. Written by reconciliation alone."""

    market = models.CharField(max_length=32, primary_key=True)
    seq = models.BigIntegerField(help_text="The last event verified.")
    hash = models.CharField(max_length=64, help_text="Its hash: the next run chains onto it.")
    verified_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.market} verified to #{self.seq}"


class ConsumerOffset(models.Model):
    """Next Kafka offset to read per partition, stored with the inbox rows it led to, so the
    consumer resumes from the database's own record whatever the broker remembers."""

    topic = models.CharField(max_length=128)
    partition = models.IntegerField()
    offset = models.BigIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["topic", "partition"], name="consumer_offset_unique")]

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


class Trade(models.Model):
    # Indexed by the unique (market, seq) below; buyer and seller by (buyer, -id) and (seller, -id).
    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="trades", db_index=False)
    seq = models.BigIntegerField(help_text="Sequence number of the engine event that made this trade.")
    price = AmountField()
    quantity = AmountField()
    quote_amount = AmountField()
    taker_side = models.CharField(max_length=4, choices=Order.Side.choices)
    buy_order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="buy_trades")
    sell_order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="sell_trades")
    buyer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", db_index=False)
    seller = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", db_index=False)
    buyer_fee = AmountField(help_text="In the base asset.")
    seller_fee = AmountField(help_text="In the quote asset.")
    executed_at = models.DateTimeField(help_text="Time of the order that took liquidity.")
    settled_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["market", "seq"], name="trade_unique_seq"),
            models.CheckConstraint(condition=~Q(buyer=models.F("seller")), name="trade_not_self"),
            models.CheckConstraint(condition=Q(price__gt=0) & Q(quantity__gt=0), name="trade_positive"),
        ]
        indexes = [
            models.Index(fields=["market", "-seq"]),
            models.Index(fields=["buyer", "-id"]),
            models.Index(fields=["seller", "-id"]),
            models.Index(fields=["executed_at"]),  # the dashboard's days, the admin's date range
        ]
        permissions = [("export_trade", "Can export trades")]
        triggers = [append_only("trade_append_only")]

    def __str__(self) -> str:
        return f"trade {self.market_id}#{self.seq} {self.quantity}@{self.price}"


class Alert(models.Model):
    """Something an operator must look at: settlement stopped, a chain broke, a check failed."""

    class Kind(models.TextChoices):
        SEQUENCE_GAP = "sequence_gap"
        BROKEN_CHAIN = "broken_chain"
        DIVERGENT_EVENT = "divergent_event"
        UNKNOWN_REFERENCE = "unknown_reference"
        FAILED_CHECK = "failed_check"
        UNCHAINED_EVENT = "unchained_event"
        BAD_MESSAGE = "bad_message"
        RECONCILIATION = "reconciliation"

    kind = models.CharField(max_length=24, choices=Kind.choices)
    market = models.CharField(max_length=32, blank=True)
    message = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        permissions = [("resolve_alert", "Can mark alerts resolved")]

    def __str__(self) -> str:
        return f"{self.kind} {self.market}"


class ReconciliationRun(models.Model):
    """One run of `manage.py reconcile` (or of its beat task): every invariant and what broke it."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    ok = models.BooleanField()
    full = models.BooleanField(
        default=True,
        help_text="The hash chains were verified from genesis, not from where the run before left them.",
    )
    checks = models.JSONField(help_text="[{check, ok, checked, problems, duration_ms}] for every invariant.")
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"reconciliation {self.created_at:%Y-%m-%d %H:%M:%S} {'ok' if self.ok else 'FAILED'}"
