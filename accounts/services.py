"""Writes to users, balances, deposits and withdrawals. Each public function is one transaction."""

from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal

import structlog
from django.contrib.auth.password_validation import validate_password
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Account, Asset, AuditLog, Deposit, LedgerEntry, LedgerLine, User, Withdrawal
from exchange.errors import Conflict, InsufficientFunds, InvalidRequest

log = structlog.get_logger(__name__)

Move = tuple[Account, Decimal]


# --- Accounts and the ledger ----------------------------------------------------------------------


def account_get(*, user: User | None, asset: Asset | str, kind: str) -> Account:
    """The account of a user (or the system account when `user` is None), created on first use."""
    asset_id = asset.pk if isinstance(asset, Asset) else asset
    lookup = {"user": user, "asset_id": asset_id, "kind": kind}
    account = Account.objects.filter(**lookup).first()
    if account is not None:
        return account
    try:
        with transaction.atomic():
            return Account.objects.create(**lookup)
    except IntegrityError:
        # Someone else created it between our read and our insert.
        return Account.objects.get(**lookup)


def accounts_lock(account_ids: Iterable[int]) -> None:
    """Lock accounts in primary-key order, so that concurrent transactions never deadlock."""
    ids = sorted(set(account_ids))
    if ids:
        list(Account.objects.select_for_update().filter(pk__in=ids).order_by("pk").values_list("pk", flat=True))


def ledger_post(*, kind: str, reference: str, moves: Iterable[Move]) -> LedgerEntry:
    """Write one balanced ledger entry and apply it to the cached balances.

    Must run inside the caller's transaction. Debits are conditional updates
    (`balance >= amount`), applied in account order: a concurrent debit can never take an account
    below zero, and a short account raises `InsufficientFunds`, which rolls the caller back.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("ledger_post must run inside a transaction")
    per_account: dict[int, Decimal] = defaultdict(Decimal)
    accounts: dict[int, Account] = {}
    per_asset: dict[str, Decimal] = defaultdict(Decimal)
    for account, amount in moves:
        amount = Decimal(amount)
        per_account[account.pk] += amount
        accounts[account.pk] = account
        per_asset[account.asset_id] += amount
    unbalanced = {asset: total for asset, total in per_asset.items() if total != 0}
    if unbalanced:
        raise ValueError(f"ledger entry {kind} {reference} does not balance: {unbalanced}")

    entry = LedgerEntry.objects.create(kind=kind, reference=reference)
    lines = []
    for account_id in sorted(per_account):
        amount = per_account[account_id]
        if amount == 0:
            continue
        account = accounts[account_id]
        rows = Account.objects.filter(pk=account_id)
        if amount < 0 and account.kind not in Account.MAY_BE_NEGATIVE:
            rows = rows.filter(balance__gte=-amount)
        if rows.update(balance=F("balance") + amount, updated_at=timezone.now()) != 1:
            raise InsufficientFunds(asset=account.asset_id, needed=-amount)
        lines.append(LedgerLine(entry=entry, account_id=account_id, asset_id=account.asset_id, amount=amount))
    LedgerLine.objects.bulk_create(lines)
    return entry


def funds_lock(*, user: User, asset: Asset | str, amount: Decimal, kind: str, reference: str) -> LedgerEntry:
    """Move `amount` from the user's available to their locked account."""
    available = account_get(user=user, asset=asset, kind=Account.Kind.AVAILABLE)
    locked = account_get(user=user, asset=asset, kind=Account.Kind.LOCKED)
    return ledger_post(kind=kind, reference=reference, moves=[(available, -amount), (locked, amount)])


def funds_release(*, user: User, asset: Asset | str, amount: Decimal, kind: str, reference: str) -> LedgerEntry:
    """Move `amount` from the user's locked account back to available."""
    available = account_get(user=user, asset=asset, kind=Account.Kind.AVAILABLE)
    locked = account_get(user=user, asset=asset, kind=Account.Kind.LOCKED)
    return ledger_post(kind=kind, reference=reference, moves=[(locked, -amount), (available, amount)])


def audit_record(*, actor: User | None, action: str, target: str, **details: object) -> AuditLog:
    return AuditLog.objects.create(actor=actor, action=action, target=target, details=details)


# --- Users ----------------------------------------------------------------------------------------


def user_register(*, username: str, password: str, email: str) -> User:
    user = User(username=username, email=email)
    validate_password(password, user)
    user.set_password(password)
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError as exc:
        raise Conflict("username_taken", "A user with that username already exists.") from exc
    return user


# --- Deposits -------------------------------------------------------------------------------------


def amount_check(*, asset: Asset, amount: Decimal) -> None:
    if amount <= 0:
        raise InvalidRequest("invalid_amount", "Amount must be greater than zero.", field="amount")
    if amount != amount.quantize(asset.quantum):
        raise InvalidRequest(
            "invalid_precision", f"{asset.pk} amounts have at most {asset.decimals} decimal places.", field="amount"
        )


@transaction.atomic
def deposit_create(*, user: User, asset: Asset, amount: Decimal, tx_id: str | None = None) -> tuple[Deposit, bool]:
    """Record an incoming deposit. The same (asset, tx_id) is recorded once: the same user gets the
    first deposit back; another user is refused."""
    amount_check(asset=asset, amount=amount)
    if tx_id:
        existing = Deposit.objects.filter(asset=asset, tx_id=tx_id).first()
        if existing is not None:
            if existing.user_id != user.pk:
                raise Conflict("duplicate_tx_id", "This transaction id is already recorded.", field="tx_id")
            return existing, False
    try:
        with transaction.atomic():
            deposit = Deposit.objects.create(user=user, asset=asset, amount=amount, tx_id=tx_id or None)
    except IntegrityError:
        existing = Deposit.objects.get(asset=asset, tx_id=tx_id)
        if existing.user_id != user.pk:
            raise Conflict("duplicate_tx_id", "This transaction id is already recorded.", field="tx_id") from None
        return existing, False
    transaction.on_commit(lambda: _enqueue_deposit_credit(deposit.pk))
    return deposit, True


def _enqueue_deposit_credit(deposit_id: int) -> None:
    from accounts.tasks import deposit_credit_task

    try:
        deposit_credit_task.delay(deposit_id)
    except Exception:
        log.warning("deposit_enqueue_failed", deposit_id=deposit_id, exc_info=True)


def _deposit_apply(deposit: Deposit) -> None:
    user_account = account_get(user=deposit.user, asset=deposit.asset_id, kind=Account.Kind.AVAILABLE)
    external = account_get(user=None, asset=deposit.asset_id, kind=Account.Kind.DEPOSITS)
    ledger_post(
        kind=LedgerEntry.Kind.DEPOSIT,
        reference=f"deposit:{deposit.pk}",
        moves=[(external, -deposit.amount), (user_account, deposit.amount)],
    )


@transaction.atomic
def deposit_credit(*, deposit_id: int) -> Deposit:
    """Credit a pending deposit exactly once, or park it for an operator if it is above the asset's
    auto-credit limit. Safe to call any number of times."""
    deposit = Deposit.objects.select_for_update().select_related("asset").get(pk=deposit_id)
    if deposit.status != Deposit.Status.PENDING:
        return deposit
    limit = deposit.asset.auto_credit_limit
    if limit is not None and deposit.amount > limit:
        deposit.status = Deposit.Status.AWAITING_APPROVAL
        deposit.save(update_fields=["status"])
        return deposit
    _deposit_apply(deposit)
    deposit.status = Deposit.Status.CREDITED
    deposit.credited_at = timezone.now()
    deposit.save(update_fields=["status", "credited_at"])
    return deposit


@transaction.atomic
def deposit_approve(*, deposit_id: int, acting_user: User) -> Deposit:
    deposit = Deposit.objects.select_for_update().get(pk=deposit_id)
    if deposit.status != Deposit.Status.AWAITING_APPROVAL:
        raise Conflict("not_awaiting_approval", f"Deposit {deposit.pk} is {deposit.status}.")
    _deposit_apply(deposit)
    deposit.status = Deposit.Status.CREDITED
    deposit.credited_at = timezone.now()
    deposit.reviewed_by = acting_user
    deposit.save(update_fields=["status", "credited_at", "reviewed_by"])
    audit_record(
        actor=acting_user, action="deposit_approve", target=f"deposit:{deposit.pk}", amount=str(deposit.amount)
    )
    return deposit


@transaction.atomic
def deposit_reject(*, deposit_id: int, acting_user: User, note: str = "") -> Deposit:
    deposit = Deposit.objects.select_for_update().get(pk=deposit_id)
    if deposit.status not in (Deposit.Status.PENDING, Deposit.Status.AWAITING_APPROVAL):
        raise Conflict("already_final", f"Deposit {deposit.pk} is {deposit.status}.")
    deposit.status = Deposit.Status.REJECTED
    deposit.reviewed_by = acting_user
    deposit.note = note
    deposit.save(update_fields=["status", "reviewed_by", "note"])
    audit_record(actor=acting_user, action="deposit_reject", target=f"deposit:{deposit.pk}", note=note)
    return deposit


# --- Withdrawals ----------------------------------------------------------------------------------


@transaction.atomic
def withdrawal_request(*, user: User, asset: Asset, amount: Decimal, address: str) -> Withdrawal:
    """Lock the funds and wait for an operator. Not enough available: `InsufficientFunds`, nothing
    written."""
    amount_check(asset=asset, amount=amount)
    withdrawal = Withdrawal.objects.create(user=user, asset=asset, amount=amount, address=address)
    funds_lock(
        user=user,
        asset=asset,
        amount=amount,
        kind=LedgerEntry.Kind.WITHDRAWAL_LOCK,
        reference=f"withdrawal:{withdrawal.pk}",
    )
    return withdrawal


def _withdrawal_review(*, withdrawal_id: int, acting_user: User, approve: bool, note: str) -> Withdrawal:
    withdrawal = Withdrawal.objects.select_for_update().get(pk=withdrawal_id)
    if withdrawal.status != Withdrawal.Status.PENDING:
        raise Conflict("already_final", f"Withdrawal {withdrawal.pk} is {withdrawal.status}.")
    reference = f"withdrawal:{withdrawal.pk}"
    locked = account_get(user=withdrawal.user, asset=withdrawal.asset_id, kind=Account.Kind.LOCKED)
    if approve:
        external = account_get(user=None, asset=withdrawal.asset_id, kind=Account.Kind.WITHDRAWALS)
        ledger_post(
            kind=LedgerEntry.Kind.WITHDRAWAL_SEND,
            reference=reference,
            moves=[(locked, -withdrawal.amount), (external, withdrawal.amount)],
        )
    else:
        funds_release(
            user=withdrawal.user,
            asset=withdrawal.asset_id,
            amount=withdrawal.amount,
            kind=LedgerEntry.Kind.WITHDRAWAL_RETURN,
            reference=reference,
        )
    withdrawal.status = Withdrawal.Status.APPROVED if approve else Withdrawal.Status.REJECTED
    withdrawal.reviewed_at = timezone.now()
    withdrawal.reviewed_by = acting_user
    withdrawal.note = note
    withdrawal.save(update_fields=["status", "reviewed_at", "reviewed_by", "note"])
    audit_record(
        actor=acting_user,
        action="withdrawal_approve" if approve else "withdrawal_reject",
        target=reference,
        amount=str(withdrawal.amount),
        asset=withdrawal.asset_id,
        note=note,
    )
    return withdrawal


@transaction.atomic
def withdrawal_approve(*, withdrawal_id: int, acting_user: User, note: str = "") -> Withdrawal:
    return _withdrawal_review(withdrawal_id=withdrawal_id, acting_user=acting_user, approve=True, note=note)


@transaction.atomic
def withdrawal_reject(*, withdrawal_id: int, acting_user: User, note: str = "") -> Withdrawal:
    return _withdrawal_review(withdrawal_id=withdrawal_id, acting_user=acting_user, approve=False, note=note)
