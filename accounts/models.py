"""Users, assets and the double-entry ledger.

Every amount of money sits in an `Account`: each user has an `available` and a `locked` account per
asset, and each asset has three system accounts (`fees`, `deposits`, `withdrawals`). An account's
`balance` is a cache of its ledger lines; it only ever changes through `accounts.services.ledger_post`,
which writes the lines and the balances in the same transaction and refuses any set of lines that
does not sum to zero per asset.
"""

import uuid
from decimal import Decimal

import pghistory
import pgtrigger
from django.conf import settings
from django.contrib.auth.models import AbstractUser, Group
from django.contrib.auth.models import UserManager as DjangoUserManager
from django.db import models
from django.db.models import F, Q, Value
from django.db.models.functions import Lower

from core.amounts import AMOUNT_DIGITS, AMOUNT_PLACES

# Every amount a column holds is below this: NUMERIC(38, 18) leaves 20 digits before the point.
AMOUNT_LIMIT = Decimal(10) ** (AMOUNT_DIGITS - AMOUNT_PLACES)
# Digits of decimal arithmetic in every thread of every process (set by AccountsConfig.ready): the
# product of two amounts is exact, and a quantize or divmod of any amount to 10^-18 fits. Python's
# default of 28 digits raised InvalidOperation on ten billion of an 18-decimal asset, and rounded
# prices times quantities silently.
MONEY_PRECISION = 2 * AMOUNT_DIGITS


def append_only(name: str) -> pgtrigger.Protect:
    """PostgreSQL itself refuses to change or delete a row of the table (evidence must stay as it
    was written); only inserts go through."""
    return pgtrigger.Protect(name=name, operation=pgtrigger.Update | pgtrigger.Delete)


def plain(amount: Decimal) -> str:
    """0.5 and 15000, not the column's 0.500000000000000000."""
    return f"{amount.normalize():f}" if amount % 1 else f"{amount.quantize(Decimal(1)):f}"


def AmountField(**kwargs) -> models.DecimalField:  # noqa: N802 - reads like a field class
    kwargs.setdefault("max_digits", AMOUNT_DIGITS)
    kwargs.setdefault("decimal_places", AMOUNT_PLACES)
    return models.DecimalField(**kwargs)


class UserManager(DjangoUserManager):
    def get_by_natural_key(self, username: str) -> "User":
        """Usernames are one account whatever their case (`Alice` is `alice`), for every login."""
        return self.alias(username_lower=Lower("username")).get(username_lower=Lower(Value(username)))


@pghistory.track(
    # Staff accounts from their creation on; traders' accounts only once they become staff.
    pghistory.InsertEvent(condition=pghistory.Q(new__is_staff=True) | pghistory.Q(new__is_superuser=True)),
    pghistory.UpdateEvent(condition=pghistory.AnyChange("is_staff", "is_superuser", "is_active")),
    fields=["username", "is_staff", "is_superuser", "is_active"],
    model_name="StaffFlagsEvent",
)
class User(AbstractUser):
    objects = UserManager()

    # Caches of the user's active `UserRestriction` rows, written only by the restriction services in
    # the same transaction, so that placing an order or a withdrawal needs no extra query to check them.
    trading_restricted = models.BooleanField(default=False, editable=False)
    withdrawals_restricted = models.BooleanField(default=False, editable=False)

    class Meta:
        db_table = "accounts_user"
        constraints = [
            # One account per username and per email whatever the case; many users may have no email.
            models.UniqueConstraint(Lower("username"), name="user_username_ci_unique"),
            models.UniqueConstraint(Lower("email"), condition=~Q(email=""), name="user_email_ci_unique"),
        ]
        permissions = [
            ("restrict_user", "Can restrict or lift a user's trading and withdrawals"),
            ("manage_staff", "Can change staff flags, groups, permissions and other users' passwords"),
        ]

    @classmethod
    def from_token(cls, pk: object) -> "User":
        """The user a valid access token names, built from its id alone: a request that needs only the
        id (to filter its own orders, balances, trades) reads nothing. The first other field asked for
        reads the whole row (`refresh_from_db`)."""
        return cls.from_db(None, ["id"], [int(pk)])

    def refresh_from_db(self, using: str | None = None, fields: object = None, from_queryset: object = None) -> None:
        deferred = self.get_deferred_fields()
        if fields is not None and deferred and set(fields) <= deferred:
            fields = list(deferred)  # one read for the rest of the row, not one per field
        super().refresh_from_db(using=using, fields=fields, from_queryset=from_queryset)


class Login(models.Model):
    """One sign-in with a password, and every token refreshed from it since (a token family).

    Its id travels in every token of the family (`login` claim), so one row ends them all: a
    logout, a refresh token presented a second time, a new password. At most one refresh token of a
    login may still be used, `refresh_jti`; rotation replaces it under a row lock.
    """

    class EndReason(models.TextChoices):
        LOGOUT = "logout", "logged out"
        REUSED = "reused", "refresh token reused"
        PASSWORD_CHANGED = "password_changed", "password changed"
        EXPIRED = "expired", "absolute lifetime reached"
        DEACTIVATED = "deactivated", "user deactivated"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="logins")
    started_at = models.DateTimeField()
    expires_at = models.DateTimeField(help_text="No token of this login is valid after this, however refreshed.")
    refresh_jti = models.CharField(max_length=64, help_text="The one refresh token of this login still usable.")
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=16, choices=EndReason.choices, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["ended_at"], name="login_ended_at"),
            models.Index(fields=["expires_at"], name="login_expires_at"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(ended_at__isnull=True, end_reason="") | Q(ended_at__isnull=False) & ~Q(end_reason=""),
                name="login_end_has_reason",
            ),
        ]

    def __str__(self) -> str:
        return f"login {self.pk} of {self.user_id}"


DEFAULT_ADDRESS_REGEX = r"^[A-Za-z0-9]{8,128}$"


@pghistory.track()
class Asset(models.Model):
    symbol = models.CharField(max_length=16, primary_key=True)
    name = models.CharField(max_length=64, blank=True)
    decimals = models.PositiveSmallIntegerField(default=8, help_text="Smallest unit is 10^-decimals.")

    # Deposits: custody credits them once it has seen enough confirmations; big ones wait for a person.
    deposit_confirmations = models.PositiveSmallIntegerField(
        default=1, help_text="Confirmations custody must report before a deposit counts."
    )
    deposit_review_threshold = AmountField(
        default=Decimal(0),
        help_text="A confirmed deposit above this amount is held until a finance operator releases it "
        "(0: every deposit is held).",
    )

    # Withdrawals: off until someone decides the rules for the asset.
    withdrawals_enabled = models.BooleanField(default=False)
    withdrawal_min = AmountField(default=Decimal(0), help_text="Smallest amount a user may withdraw.")
    withdrawal_fee = AmountField(default=Decimal(0), help_text="Charged on top of the amount, to the fee account.")
    withdrawal_daily_limit = AmountField(
        null=True,
        blank=True,
        help_text="Most a user may withdraw in any 24 hours, fees excluded. Empty: no limit.",
    )
    withdrawal_four_eyes_threshold = AmountField(
        default=Decimal(0),
        help_text="Withdrawals above this amount need a second approval by another person (0: all of them).",
    )
    address_regex = models.CharField(
        max_length=200,
        default=DEFAULT_ADDRESS_REGEX,
        help_text="Withdrawal addresses must match this regular expression (whole address).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["symbol"]
        constraints = [
            models.CheckConstraint(condition=Q(decimals__lte=AMOUNT_PLACES), name="asset_decimals_fit"),
            models.CheckConstraint(condition=Q(deposit_confirmations__gte=1), name="asset_confirmations_positive"),
            models.CheckConstraint(
                condition=Q(deposit_review_threshold__gte=0)
                & Q(withdrawal_min__gte=0)
                & Q(withdrawal_fee__gte=0)
                & Q(withdrawal_four_eyes_threshold__gte=0)
                & (Q(withdrawal_daily_limit__isnull=True) | Q(withdrawal_daily_limit__gte=0)),
                name="asset_limits_not_negative",
            ),
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
        ADJUSTMENTS = "adjustments", "balance adjustments (system)"

    USER_KINDS = (Kind.AVAILABLE, Kind.LOCKED)
    SYSTEM_KINDS = (Kind.FEES, Kind.DEPOSITS, Kind.WITHDRAWALS, Kind.ADJUSTMENTS)
    # The external deposit account mirrors every credited deposit and the adjustments account every
    # approved correction, so they are the accounts whose balance is negative by design.
    MAY_BE_NEGATIVE = (Kind.DEPOSITS, Kind.ADJUSTMENTS)

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
                condition=Q(balance__gte=0) | Q(kind__in=["deposits", "adjustments"]),
                name="account_balance_not_negative",
            ),
            models.CheckConstraint(
                condition=(Q(user__isnull=False) & Q(kind__in=["available", "locked"]))
                | (Q(user__isnull=True) & Q(kind__in=["fees", "deposits", "withdrawals", "adjustments"])),
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
        ADJUSTMENT = "adjustment"

    kind = models.CharField(max_length=24, choices=Kind.choices)
    reference = models.CharField(max_length=64, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name_plural = "ledger entries"
        triggers = [append_only("ledger_entry_append_only")]

    def __str__(self) -> str:
        return f"{self.kind} {self.reference}"


class LedgerLine(models.Model):
    entry = models.ForeignKey(LedgerEntry, on_delete=models.PROTECT, related_name="lines")
    # Indexed by (account, entry) below.
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="lines", db_index=False)
    # Copied from the account so that "the ledger sums to zero per asset" is one indexed query (the
    # index on (asset) below).
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+", db_index=False)
    amount = AmountField()

    class Meta:
        indexes = [models.Index(fields=["account", "entry"]), models.Index(fields=["asset"])]
        constraints = [models.CheckConstraint(condition=~Q(amount=0), name="ledger_line_not_zero")]
        permissions = [("export_ledgerline", "Can export ledger lines")]
        triggers = [append_only("ledger_line_append_only")]

    def __str__(self) -> str:
        return f"{self.account} {self.amount:+}"


class DepositAddress(models.Model):
    """Where a user sends an asset: issued once by the custody adapter, then always the same."""

    # Indexed by their unique constraints below, (user, asset) and (asset, address).
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="deposit_addresses", db_index=False
    )
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="deposit_addresses", db_index=False)
    address = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "deposit addresses"
        constraints = [
            models.UniqueConstraint(fields=["user", "asset"], name="deposit_address_one_per_user"),
            models.UniqueConstraint(fields=["asset", "address"], name="deposit_address_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.asset_id} {self.address}"


class Deposit(models.Model):
    """Money arriving from outside. Only custody's signed word moves it past `declared`."""

    class Status(models.TextChoices):
        DECLARED = "declared", "declared by the user (nothing credited)"
        CONFIRMING = "confirming", "seen by custody, not yet confirmed"
        HELD = "held", "confirmed, held for a finance operator"
        CREDITED = "credited"
        UNMATCHED = "unmatched", "sent to an address nobody owns"
        REJECTED = "rejected"

    # Waiting for a finance operator: to release, or to assign to its owner.
    REVIEW_STATUSES = (Status.HELD, Status.UNMATCHED)

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="deposits",
        help_text="Empty while custody's deposit matches no user's address.",
        db_index=False,  # indexed by (user, -id) below
    )
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="deposits")
    amount = AmountField(help_text="Custody's amount once it has reported the transfer, else the declared one.")
    declared_amount = AmountField(null=True, blank=True, help_text="What the user said they sent.")
    tx_id = models.CharField(max_length=128, null=True, blank=True, help_text="The chain transaction, from custody.")
    declared_tx_id = models.CharField(max_length=128, null=True, blank=True, help_text="The user's own words.")
    address = models.CharField(max_length=128, blank=True)
    confirmations = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DECLARED)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    credited_at = models.DateTimeField(null=True, blank=True)
    assigned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The operator who released or rejected it.",
    )
    reason = models.CharField(max_length=255, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["asset", "tx_id"], condition=Q(tx_id__isnull=False), name="deposit_unique_tx"
            ),
            models.UniqueConstraint(
                fields=["user", "asset", "declared_tx_id"],
                condition=Q(declared_tx_id__isnull=False),
                name="deposit_unique_declared_tx",
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="deposit_amount_positive"),
            models.CheckConstraint(
                condition=Q(user__isnull=False) | Q(status__in=["unmatched", "rejected"]),
                name="deposit_owner_known",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["declared", "rejected"]) | Q(tx_id__isnull=False),
                name="deposit_reported_has_tx",
            ),
            models.CheckConstraint(
                condition=Q(decided_by__isnull=True) | Q(assigned_by__isnull=True) | ~Q(decided_by=F("assigned_by")),
                name="deposit_assign_and_release_differ",
            ),
        ]
        indexes = [models.Index(fields=["status", "created_at"]), models.Index(fields=["user", "-id"])]
        permissions = [
            ("release_deposit", "Can release, reject and assign held or unmatched deposits"),
            ("export_deposit", "Can export deposits"),
        ]

    def __str__(self) -> str:
        return f"deposit {self.pk} {plain(self.amount)} {self.asset_id} ({self.status})"


class Withdrawal(models.Model):
    class Status(models.TextChoices):
        REQUESTED = "requested"
        APPROVED = "approved"
        SECOND_APPROVED = "second_approved", "second approval given"
        SENT = "sent", "sent (handed to custody)"
        COMPLETED = "completed"
        FAILED = "failed"
        REJECTED = "rejected"

    # Statuses in which the amount and fee stay locked in the user's account.
    OPEN_STATUSES = (Status.REQUESTED, Status.APPROVED, Status.SECOND_APPROVED, Status.SENT)
    # An operator may reject until custody has the withdrawal.
    REJECTABLE_STATUSES = (Status.REQUESTED, Status.APPROVED, Status.SECOND_APPROVED)

    # Indexed by (user, asset, created_at) below.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="withdrawals", db_index=False
    )
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="withdrawals")
    amount = AmountField(help_text="What reaches the address.")
    fee = AmountField(default=Decimal(0), help_text="Charged on top of the amount.")
    address = models.CharField(max_length=128)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.REQUESTED)
    needs_second_approval = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    second_approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    second_approved_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    tx_id = models.CharField(max_length=128, null=True, blank=True, help_text="The chain transaction, from custody.")
    rejected_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reason = models.CharField(max_length=255, blank=True, help_text="Why it was rejected or failed.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0) & Q(fee__gte=0), name="withdrawal_amounts_valid"),
            # Nobody approves their own withdrawal, and the two approvals come from two people.
            models.CheckConstraint(
                condition=Q(approved_by__isnull=True) | ~Q(approved_by=F("user")), name="withdrawal_not_self_approved"
            ),
            models.CheckConstraint(
                condition=Q(second_approved_by__isnull=True)
                | (~Q(second_approved_by=F("user")) & ~Q(second_approved_by=F("approved_by"))),
                name="withdrawal_second_approver_differs",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "created_at"]),
            models.Index(fields=["user", "asset", "created_at"]),
        ]
        permissions = [
            ("approve_withdrawal", "Can approve and reject withdrawals"),
            ("export_withdrawal", "Can export withdrawals"),
        ]

    def __str__(self) -> str:
        return f"withdrawal {self.pk} {plain(self.amount)} {self.asset_id} ({self.status})"

    @property
    def total(self) -> Decimal:
        """What the user's account pays: the amount and the fee."""
        return self.amount + self.fee

    @property
    def ready_for_custody(self) -> bool:
        """The row's side of `WITHDRAWAL_READY_FOR_CUSTODY`."""
        return self.status == self.Status.SECOND_APPROVED or (
            self.status == self.Status.APPROVED and not self.needs_second_approval
        )


# For the API schema's enum names (drf-spectacular's ENUM_NAME_OVERRIDES takes a module attribute).
DEPOSIT_STATUSES = Deposit.Status
WITHDRAWAL_STATUSES = Withdrawal.Status

# Withdrawals custody may send: approved, where one approval is enough, or approved twice
# (`Withdrawal.ready_for_custody` says the same of one row).
WITHDRAWAL_READY_FOR_CUSTODY = Q(status=Withdrawal.Status.APPROVED, needs_second_approval=False) | Q(
    status=Withdrawal.Status.SECOND_APPROVED
)
# Withdrawals waiting for an approval: the first, or the second where the amount needs two.
WITHDRAWAL_AWAITING_APPROVAL = Q(status=Withdrawal.Status.REQUESTED) | Q(
    status=Withdrawal.Status.APPROVED, needs_second_approval=True
)


class BalanceAdjustment(models.Model):
    """A manual correction of a user's available balance: proposed by one operator, applied only when
    another approves it, as ledger lines against the adjustments system account."""

    class Category(models.TextChoices):
        CORRECTION = "correction", "correction of an error"
        COMPENSATION = "compensation"
        FEE_REFUND = "fee_refund", "fee refund"
        CHARGEBACK = "chargeback"
        OTHER = "other"

    class Status(models.TextChoices):
        PROPOSED = "proposed"
        APPROVED = "approved", "approved and applied"
        REJECTED = "rejected"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="adjustments")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    amount = AmountField(help_text="Added to the user's available balance; negative takes away.")
    category = models.CharField(max_length=16, choices=Category.choices)
    reason = models.TextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PROPOSED)
    proposed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    proposed_at = models.DateTimeField(auto_now_add=True, db_index=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.CharField(max_length=255, blank=True)
    ledger_entry = models.OneToOneField(
        LedgerEntry, null=True, blank=True, on_delete=models.PROTECT, related_name="adjustment"
    )

    class Meta:
        constraints = [
            models.CheckConstraint(condition=~Q(amount=0), name="adjustment_not_zero"),
            models.CheckConstraint(condition=~Q(reason=""), name="adjustment_has_reason"),
            models.CheckConstraint(condition=~Q(proposed_by=F("user")), name="adjustment_not_own_proposed"),
            models.CheckConstraint(
                condition=Q(decided_by__isnull=True) | (~Q(decided_by=F("proposed_by")) & ~Q(decided_by=F("user"))),
                name="adjustment_checker_differs",
            ),
            models.CheckConstraint(
                condition=Q(status="approved", ledger_entry__isnull=False)
                | (~Q(status="approved") & Q(ledger_entry__isnull=True)),
                name="adjustment_applied_iff_approved",
            ),
        ]
        indexes = [models.Index(fields=["status", "proposed_at"])]
        permissions = [
            ("propose_adjustment", "Can propose balance adjustments"),
            ("approve_adjustment", "Can approve and reject balance adjustments"),
        ]

    def __str__(self) -> str:
        sign = "+" if self.amount > 0 else ""
        return f"adjustment {self.pk} {sign}{plain(self.amount)} {self.asset_id} ({self.status})"


@pghistory.track()
class UserRestriction(models.Model):
    """A stop on one user's trading or withdrawals, with why, who and when; lifted, it stays as history."""

    class Kind(models.TextChoices):
        TRADING = "trading"
        WITHDRAWALS = "withdrawals"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="restrictions")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    reason = models.TextField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    lifted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    lifted_at = models.DateTimeField(null=True, blank=True)
    lift_reason = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "kind"], condition=Q(lifted_at__isnull=True), name="restriction_one_active"
            ),
            models.CheckConstraint(condition=~Q(reason=""), name="restriction_has_reason"),
        ]

    def __str__(self) -> str:
        state = "lifted" if self.lifted_at else "active"
        return f"{self.kind} restriction on {self.user_id} ({state})"


class IdempotencyKey(models.Model):
    """The first answer to a request sent with an `Idempotency-Key` header, to give again on a repeat."""

    # Indexed by the unique (user, scope, key) below.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    scope = models.CharField(max_length=32, help_text="Which endpoint the key belongs to.")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField()
    response_body = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "scope", "key"], name="idempotency_key_unique")]

    def __str__(self) -> str:
        return f"{self.scope} {self.key}"


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
        permissions = [("export_auditlog", "Can export audit rows")]
        triggers = [append_only("audit_log_append_only")]

    def __str__(self) -> str:
        return f"{self.action} {self.target}"


# Who is in which staff group and holds which permission: every grant and every removal, through
# proxies of the many-to-many tables (the way django-pghistory tracks them).
_GRANTS = (pghistory.InsertEvent("grant"), pghistory.DeleteEvent("revoke"))


@pghistory.track(*_GRANTS, obj_field=None, model_name="StaffGroupEvent")
class StaffGroup(User.groups.through):
    class Meta:
        proxy = True


@pghistory.track(*_GRANTS, obj_field=None, model_name="StaffPermissionEvent")
class StaffPermission(User.user_permissions.through):
    class Meta:
        proxy = True


@pghistory.track(*_GRANTS, obj_field=None, model_name="GroupPermissionEvent")
class GroupPermission(Group.permissions.through):
    class Meta:
        proxy = True
