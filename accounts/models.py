"""Users, assets and the double-entry ledger.

Every amount of money sits in an `Account`: each user has an `available` and a `locked` account per
asset, and each asset has three system accounts (`fees`, `deposits`, `withdrawals`). An account's
`balance` is a cache of its ledger lines; it only ever changes through `accounts.services.ledger_post`,
which writes the lines and the balances in the same transaction and refuses any set of lines that
does not sum to zero per asset.
"""

from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models import Q

AMOUNT_DIGITS = 38
AMOUNT_PLACES = 18


def AmountField(**kwargs) -> models.DecimalField:  # noqa: N802 - reads like a field class
    kwargs.setdefault("max_digits", AMOUNT_DIGITS)
    kwargs.setdefault("decimal_places", AMOUNT_PLACES)
    return models.DecimalField(**kwargs)


class User(AbstractUser):
    class Meta:
        db_table = "accounts_user"


class Asset(models.Model):
    symbol = models.CharField(max_length=16, primary_key=True)
    name = models.CharField(max_length=64, blank=True)
    decimals = models.PositiveSmallIntegerField(default=8, help_text="Smallest unit is 10^-decimals.")
    auto_credit_limit = AmountField(
        null=True,
        blank=True,
        help_text="Deposits up to this amount are credited automatically; larger ones wait for an "
        "operator. Empty: every deposit is credited automatically.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["symbol"]
        constraints = [
            models.CheckConstraint(condition=Q(decimals__lte=AMOUNT_PLACES), name="asset_decimals_fit"),
        ]

    def __str__(self) -> str:
        return self.symbol

    @property
    def quantum(self) -> Decimal:
        return Decimal(1).scaleb(-self.decimals)


class Account(models.Model):
    class Kind(models.TextChoices):
        AVAILABLE = "available", "available"
        LOCKED = "locked", "locked"
        FEES = "fees", "fees (system)"
        DEPOSITS = "deposits", "external deposits (system)"
        WITHDRAWALS = "withdrawals", "external withdrawals (system)"

    USER_KINDS = (Kind.AVAILABLE, Kind.LOCKED)
    SYSTEM_KINDS = (Kind.FEES, Kind.DEPOSITS, Kind.WITHDRAWALS)
    # The external deposit account is the mirror of every credited deposit, so it is the one
    # account whose balance is negative by design.
    MAY_BE_NEGATIVE = (Kind.DEPOSITS,)

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="accounts"
    )
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="accounts")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    balance = AmountField(default=Decimal(0))
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "asset", "kind"], condition=Q(user__isnull=False), name="account_unique_user"
            ),
            models.UniqueConstraint(
                fields=["asset", "kind"], condition=Q(user__isnull=True), name="account_unique_system"
            ),
            models.CheckConstraint(
                condition=Q(balance__gte=0) | Q(kind="deposits"), name="account_balance_not_negative"
            ),
            models.CheckConstraint(
                condition=(Q(user__isnull=False) & Q(kind__in=["available", "locked"]))
                | (Q(user__isnull=True) & Q(kind__in=["fees", "deposits", "withdrawals"])),
                name="account_kind_matches_owner",
            ),
        ]

    def __str__(self) -> str:
        owner = self.user.username if self.user_id else "system"
        return f"{owner}:{self.asset_id}:{self.kind}"


class LedgerEntry(models.Model):
    """One balanced money movement: its lines sum to zero per asset."""

    class Kind(models.TextChoices):
        DEPOSIT = "deposit"
        WITHDRAWAL_LOCK = "withdrawal_lock"
        WITHDRAWAL_SEND = "withdrawal_send"
        WITHDRAWAL_RETURN = "withdrawal_return"
        ORDER_LOCK = "order_lock"
        ORDER_RELEASE = "order_release"
        TRADE = "trade"

    kind = models.CharField(max_length=24, choices=Kind.choices)
    reference = models.CharField(max_length=64, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name_plural = "ledger entries"

    def __str__(self) -> str:
        return f"{self.kind} {self.reference}"


class LedgerLine(models.Model):
    entry = models.ForeignKey(LedgerEntry, on_delete=models.PROTECT, related_name="lines")
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="lines")
    # Copied from the account so that "the ledger sums to zero per asset" is one indexed query.
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    amount = AmountField()

    class Meta:
        indexes = [models.Index(fields=["account", "entry"]), models.Index(fields=["asset"])]
        constraints = [models.CheckConstraint(condition=~Q(amount=0), name="ledger_line_not_zero")]

    def __str__(self) -> str:
        return f"{self.account} {self.amount:+}"


class Deposit(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        AWAITING_APPROVAL = "awaiting_approval"
        CREDITED = "credited"
        REJECTED = "rejected"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="deposits")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="deposits")
    amount = AmountField()
    tx_id = models.CharField(max_length=128, null=True, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    credited_at = models.DateTimeField(null=True, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    note = models.CharField(max_length=255, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["asset", "tx_id"], condition=Q(tx_id__isnull=False), name="deposit_unique_tx"
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="deposit_amount_positive"),
        ]
        indexes = [models.Index(fields=["status", "created_at"])]

    def __str__(self) -> str:
        return f"deposit {self.pk} {self.amount} {self.asset_id} ({self.status})"


class Withdrawal(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="withdrawals")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="withdrawals")
    amount = AmountField()
    address = models.CharField(max_length=128)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    reviewed_at = models.DateTimeField(null=True, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    note = models.CharField(max_length=255, blank=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="withdrawal_amount_positive")]
        indexes = [models.Index(fields=["status", "created_at"])]

    def __str__(self) -> str:
        return f"withdrawal {self.pk} {self.amount} {self.asset_id} ({self.status})"


class AuditLog(models.Model):
    """What an operator (or the system on its own) did to money or markets, written in the same
    transaction as the change itself."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    action = models.CharField(max_length=64, db_index=True)
    target = models.CharField(max_length=128, db_index=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.action} {self.target}"
