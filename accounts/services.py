"""Writes to users, balances, deposits and withdrawals. Each public function is one transaction."""

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

import structlog
from django.conf import settings
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken, Token

from accounts import tokens
from accounts.custody import custody_adapter
from accounts.models import (
    Account,
    Asset,
    AuditLog,
    BalanceAdjustment,
    Deposit,
    DepositAddress,
    IdempotencyKey,
    LedgerEntry,
    LedgerLine,
    Login,
    User,
    UserRestriction,
    Withdrawal,
)
from core import sql
from core.api import decimal_str
from core.errors import Conflict, Forbidden, InsufficientFunds, InvalidRequest, NotFound, Unauthorized

log = structlog.get_logger(__name__)

Move = tuple[Account, Decimal]
# One ledger entry to write: its kind, its reference, its moves.
Posting = tuple[str, str, Iterable[Move]]
# An account by owner (None for the exchange's system accounts), asset and kind.
AccountKey = tuple[int | None, str, str]
_ACCOUNT_KEY = sql.columns(Account, ("user", "asset", "kind"))


# --- Accounts and the ledger ----------------------------------------------------------------------


def account_get(*, user: User | None, asset: Asset | str, kind: str) -> Account:
    """The account of a user (or the system account when `user` is None), created on first use.

    A user's `available` and `locked` accounts of an asset are created together: an order placement
    locks both before it reads the balance, and one created later, inside a transaction that
    already holds the other's lock, could wait on a concurrent withdrawal creating it while that
    withdrawal waits for the lock (a deadlock, seen as a 503)."""
    asset_id = asset.pk if isinstance(asset, Asset) else asset
    lookup = {"user": user, "asset_id": asset_id, "kind": kind}
    account = Account.objects.filter(**lookup).first()
    if account is not None:
        return account
    kinds = Account.USER_KINDS if user is not None and kind in Account.USER_KINDS else (kind,)
    try:
        with transaction.atomic():
            Account.objects.bulk_create(
                [Account(user=user, asset_id=asset_id, kind=each) for each in kinds], ignore_conflicts=True
            )
    except IntegrityError:
        pass  # a system account someone else created between our read and our insert
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


def funds_lock_steps(
    *, user_id: int, moves: list[tuple[str, str, Decimal]], available: dict[str, int], kind: str, now: datetime
) -> tuple[str, list]:
    """Move amounts of one user from available to locked, as steps of the caller's single statement:
    CTEs (`sql, params`) that move each `(reference, asset, amount)` from the available account (its
    id in `available`, which the caller has locked and checked) to the locked one, created on first
    use, with a balanced ledger entry per reference. The caller's statement ends with a query of `lines` (one row
    per ledger line written)."""
    per_asset: dict[str, Decimal] = defaultdict(Decimal)
    for _, asset, amount in moves:
        per_asset[asset] += amount
    account, entry, line = sql.table(Account), sql.table(LedgerEntry), sql.table(LedgerLine)
    # The tables are the models'; every value is a parameter.
    steps = f"""
  debits AS (
    UPDATE {account} a SET balance = a.balance - d.amount, updated_at = %s
    FROM unnest(%s::bigint[], %s::numeric[]) AS d(id, amount) WHERE a.id = d.id
  ),
  credits AS (
    INSERT INTO {account} (user_id, asset_id, kind, balance, updated_at)
    SELECT %s, d.asset, %s, d.amount, %s FROM unnest(%s::varchar[], %s::numeric[]) AS d(asset, amount)
    ON CONFLICT (user_id, asset_id, kind) WHERE user_id IS NOT NULL
    DO UPDATE SET balance = {account}.balance + EXCLUDED.balance, updated_at = EXCLUDED.updated_at
    RETURNING id, asset_id
  ),
  moves AS (
    SELECT * FROM unnest(%s::varchar[], %s::varchar[], %s::numeric[], %s::bigint[])
    AS m(reference, asset, amount, source)
  ),
  entries AS (
    INSERT INTO {entry} (kind, reference, created_at) SELECT %s, m.reference, %s FROM moves m
    RETURNING id, reference
  ),
  lines AS (
    INSERT INTO {line} (entry_id, account_id, asset_id, amount)
    SELECT e.id, d.account_id, m.asset, d.amount
    FROM entries e JOIN moves m USING (reference)
    JOIN LATERAL (
      SELECT m.source, -m.amount UNION ALL SELECT c.id, m.amount FROM credits c WHERE c.asset_id = m.asset
    ) AS d(account_id, amount) ON true
    RETURNING 1
  )"""  # noqa: S608
    params = [
        now,
        [available[asset] for asset in per_asset],
        list(per_asset.values()),
        user_id,
        Account.Kind.LOCKED,
        now,
        list(per_asset),
        list(per_asset.values()),
        [reference for reference, _, _ in moves],
        [asset for _, asset, _ in moves],
        [amount for _, _, amount in moves],
        [available[asset] for _, asset, _ in moves],
        kind,
        now,
    ]
    return steps, params


def accounts_open(*, keys: Iterable[AccountKey]) -> None:
    """Open (empty) the accounts of these keys, (user id, or None for a system account, asset,
    kind), that do not exist yet: one statement however many, and no lock. The caller locks them
    (`accounts_lock_keys`) right before it writes them, so that an order placement locking the same
    accounts waits only for those writes, not for all of the caller's work."""
    wanted = sorted(set(keys), key=lambda key: (key[0] is None, key[0] or 0, key[1], key[2]))
    if not wanted:
        return
    table = Account._meta.db_table
    source, params = sql.unnest_rows(_ACCOUNT_KEY, wanted, alias="w")
    with sql.cursor() as cursor:
        # Only the missing ones reach the insert, so an existing account costs no sequence number.
        cursor.execute(
            f"""
            INSERT INTO {table} (user_id, asset_id, kind, balance, updated_at)
            SELECT w.user_id, w.asset_id, w.kind, 0, %s FROM {source}
            WHERE NOT EXISTS (
                SELECT 1 FROM {table} a WHERE a.user_id = w.user_id AND a.asset_id = w.asset_id AND a.kind = w.kind
            ) AND NOT EXISTS (
                SELECT 1 FROM {table} a
                WHERE w.user_id IS NULL AND a.user_id IS NULL AND a.asset_id = w.asset_id AND a.kind = w.kind
            )
            ON CONFLICT DO NOTHING
            """,  # noqa: S608 - names from the models; every value is a parameter
            [timezone.now(), *params],
        )


_LOCK_KEYS_SQL = f"""
SELECT a.id, a.user_id, a.asset_id, a.kind FROM {sql.table(Account)} a
WHERE a.asset_id = ANY(%(assets)s::varchar[]) AND (
  (a.user_id = ANY(%(users)s::bigint[]) AND a.kind = ANY(%(user_kinds)s::varchar[]))
  OR (a.user_id IS NULL AND a.kind = ANY(%(system_kinds)s::varchar[]))
)
ORDER BY a.id FOR UPDATE
"""  # noqa: S608 - the table is the model's; every value is a parameter


def accounts_lock_keys(keys: Iterable[AccountKey]) -> dict[AccountKey, int]:
    """Lock the accounts of these keys in primary-key order (one prepared statement) and return their
    ids. The lock covers every user account of the users named in the assets named, and the system
    accounts of the kinds named in those assets."""
    keys = set(keys)
    params = {
        "assets": sorted({asset for _, asset, _ in keys}),
        "users": sorted({user for user, _, _ in keys if user is not None}),
        "user_kinds": [str(kind) for kind in Account.USER_KINDS],
        "system_kinds": sorted({str(kind) for user, _, kind in keys if user is None}),
    }
    with sql.cursor() as cursor:
        cursor.execute(_LOCK_KEYS_SQL, params)
        return {(user, asset, kind): pk for pk, user, asset, kind in cursor.fetchall()}


def ledger_post_many(*, postings: Sequence[Posting]) -> int:
    """Write many balanced ledger entries at once, in their order, and apply them to the cached
    balances: one update of the balances (each account's net change), one insert of the entries and
    one of their lines, however many there are. Returns how many entries were written.

    What `ledger_post` does for one entry, it does for each: an entry that does not sum to zero per
    asset is refused (`ValueError`, nothing written), its lines are one per account in account
    order, zero lines left out, and a debit that would take an account which may not be negative
    below zero raises `InsufficientFunds` for that entry, which rolls the caller back. The caller
    has locked the accounts in primary-key order (`accounts_lock`, `accounts_lock_keys`) within
    its transaction; the update returns each balance as it was, and the entries are replayed over
    those in order, so a debit is judged on the balance the entries before it left.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("ledger_post_many must run inside a transaction")
    entries: list[tuple[str, str]] = []
    lines: list[tuple[int, int, str, Decimal]] = []  # entry's index, account, asset, amount
    accounts: dict[int, Account] = {}
    for index, (kind, reference, moves) in enumerate(postings):
        per_account: dict[int, Decimal] = defaultdict(Decimal)
        per_asset: dict[str, Decimal] = defaultdict(Decimal)
        for account, amount in moves:
            amount = Decimal(amount)
            per_account[account.pk] += amount
            per_asset[account.asset_id] += amount
            accounts[account.pk] = account
        unbalanced = {asset: total for asset, total in per_asset.items() if total != 0}
        if unbalanced:
            raise ValueError(f"ledger entry {kind} {reference} does not balance: {unbalanced}")
        entries.append((kind, reference))
        for account_id in sorted(per_account):
            if per_account[account_id]:
                lines.append((index, account_id, accounts[account_id].asset_id, per_account[account_id]))
    if not entries:
        return 0

    now = timezone.now()
    net: dict[int, Decimal] = defaultdict(Decimal)
    for _, account_id, _, amount in lines:
        net[account_id] += amount
    balance = _balances_apply(net, now)
    for _, account_id, asset, amount in lines:
        balance[account_id] += amount
        if amount < 0 and balance[account_id] < 0 and accounts[account_id].kind not in Account.MAY_BE_NEGATIVE:
            raise InsufficientFunds(asset=asset, needed=-amount)

    entry_ids = sql.rows_insert(
        LedgerEntry._meta.db_table,
        sql.columns(LedgerEntry, ("kind", "reference", "created_at")),
        [(kind, reference, now) for kind, reference in entries],
        suffix="RETURNING id",
    )
    sql.rows_insert(
        LedgerLine._meta.db_table,
        sql.columns(LedgerLine, ("entry", "account", "asset", "amount")),
        [(entry_ids[index][0], account_id, asset, amount) for index, account_id, asset, amount in lines],
    )
    return len(entries)


def _balances_apply(net: dict[int, Decimal], now: datetime) -> dict[int, Decimal]:
    """Add each account's net change to its balance in one statement; return every balance as it
    was before. A net debit larger than the balance of an account that may not be negative is left
    out of the update: replaying the lines over the balances before finds the entry that is short."""
    if not net:
        return {}
    table = Account._meta.db_table
    source, params = sql.unnest_rows([("id", "bigint"), ("delta", "numeric")], sorted(net.items()), alias="d")
    with sql.cursor() as cursor:
        cursor.execute(
            f"""
            WITH d AS (SELECT * FROM {source}),
            before AS (SELECT a.id, a.balance FROM {table} a JOIN d ON a.id = d.id),
            applied AS (
                UPDATE {table} AS a SET balance = a.balance + d.delta, updated_at = %s FROM d
                WHERE a.id = d.id AND (d.delta >= 0 OR a.balance + d.delta >= 0 OR a.kind = ANY(%s::varchar[]))
            )
            SELECT id, balance FROM before
            """,  # noqa: S608 - names from the models; every value is a parameter
            [*params, now, list(Account.MAY_BE_NEGATIVE)],
        )
        before = dict(cursor.fetchall())
    if len(before) != len(net):
        raise ValueError(f"ledger lines name accounts that do not exist: {sorted(set(net) - set(before))}")
    return before


def funds_release(*, user: User, asset: Asset | str, amount: Decimal, kind: str, reference: str) -> LedgerEntry:
    """Move `amount` from the user's locked account back to available."""
    available = account_get(user=user, asset=asset, kind=Account.Kind.AVAILABLE)
    locked = account_get(user=user, asset=asset, kind=Account.Kind.LOCKED)
    return ledger_post(kind=kind, reference=reference, moves=[(locked, -amount), (available, amount)])


def audit_record(*, actor: User | None, action: str, target: str, **details: object) -> AuditLog:
    return AuditLog.objects.create(actor=actor, action=action, target=target, details=details)


# --- Users ----------------------------------------------------------------------------------------


# Which unique constraint a duplicate user broke, and what to tell the client.
USER_TAKEN = {
    "user_username_ci_unique": ("username_taken", "A user with that username already exists.", "username"),
    "accounts_user_username_key": ("username_taken", "A user with that username already exists.", "username"),
    "user_email_ci_unique": ("email_taken", "A user with that email already exists.", "email"),
}


def user_register(*, username: str, password: str, email: str) -> User:
    user = User(username=username, email=email)
    try:
        validate_password(password, user)
    except DjangoValidationError as exc:
        # A rule about the password's content, not its shape: its own code, so a client can tell it
        # from a malformed request (`invalid`).
        raise InvalidRequest("weak_password", exc.messages[0], fields={"password": exc.messages}) from exc
    user.set_password(password)
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError as exc:
        constraint = getattr(getattr(exc.__cause__, "diag", None), "constraint_name", None)
        code, message, field = USER_TAKEN.get(constraint, USER_TAKEN["user_username_ci_unique"])
        raise Conflict(code, message, field=field) from exc
    return user


def user_password_change(*, user: User, password: str) -> User:
    """Set a new password. Saving it ends every login of the user (`accounts.passwords`, which sees
    every password change, the admin's and `manage.py changepassword` included)."""
    validate_password(password, user)
    user.set_password(password)
    user.save(update_fields=["password"])
    return user


def operator_check(acting_user: User, permission: str) -> None:
    """Every operator action checks its own permission, whichever door it came through."""
    if not (acting_user.is_active and acting_user.is_staff and acting_user.has_perm(permission)):
        raise Forbidden("permission_denied", f"{acting_user.username} lacks the permission {permission}.")


def _reason_required(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise InvalidRequest("reason_required", "A reason is required.", field="reason")
    return reason


@transaction.atomic
def user_restrict(*, user: User, kind: str, reason: str, acting_user: User) -> UserRestriction:
    """Stop a user's trading or withdrawals until an operator lifts it. Orders already resting stay
    (cancel them with `orders_cancel_all`); new ones and new withdrawals answer 403."""
    operator_check(acting_user, "accounts.restrict_user")
    reason = _reason_required(reason)
    if kind not in UserRestriction.Kind.values:
        raise InvalidRequest("invalid", f"Unknown restriction {kind!r}.", field="kind")
    User.objects.select_for_update().filter(pk=user.pk).first()
    if UserRestriction.objects.filter(user=user, kind=kind, lifted_at__isnull=True).exists():
        raise Conflict("already_restricted", f"{user.username}'s {kind} is already restricted.")
    restriction = UserRestriction.objects.create(user=user, kind=kind, reason=reason, created_by=acting_user)
    User.objects.filter(pk=user.pk).update(**{f"{kind}_restricted": True})
    audit_record(actor=acting_user, action=f"restrict_{kind}", target=f"user:{user.pk}", reason=reason)
    return restriction


@transaction.atomic
def user_unrestrict(*, user: User, kind: str, reason: str, acting_user: User) -> UserRestriction:
    operator_check(acting_user, "accounts.restrict_user")
    reason = _reason_required(reason)
    User.objects.select_for_update().filter(pk=user.pk).first()
    restriction = UserRestriction.objects.filter(user=user, kind=kind, lifted_at__isnull=True).first()
    if restriction is None:
        raise Conflict("not_restricted", f"{user.username}'s {kind} is not restricted.")
    restriction.lifted_at = timezone.now()
    restriction.lifted_by = acting_user
    restriction.lift_reason = reason
    restriction.save(update_fields=["lifted_at", "lifted_by", "lift_reason"])
    User.objects.filter(pk=user.pk).update(**{f"{kind}_restricted": False})
    audit_record(actor=acting_user, action=f"unrestrict_{kind}", target=f"user:{user.pk}", reason=reason)
    return restriction


@transaction.atomic
def staff_account_seed(*, username: str, role: str, password: str) -> bool:
    """Make `username` a staff user in exactly the group `role`, not a superuser, with `password`.

    Development only (the seed_staff command refuses in production). Returns whether anything
    changed; a change is audited with no actor, as the system's own doing.
    """
    group = Group.objects.filter(name=role).first()
    if group is None:
        raise InvalidRequest("unknown_role", f"There is no group {role!r}: run `manage.py migrate` first.")
    user = User.objects.select_for_update().filter(username=username).first()
    created = user is None
    if created:
        user = User(username=username, email=f"{username}@localhost")
    changes = []
    if not user.is_staff or user.is_superuser or not user.is_active:
        user.is_staff, user.is_superuser, user.is_active = True, False, True
        changes.append("flags")
    if created or not user.check_password(password):
        user.set_password(password)
        changes.append("password")
    if changes:
        user.save()
    if list(user.groups.values_list("pk", flat=True)) != [group.pk]:
        user.groups.set([group])
        changes.append("groups")
    if changes:
        audit_record(
            actor=None,
            action="staff_seed",
            target=f"user:{user.pk}",
            username=username,
            role=role,
            created=created,
            changed=changes,
        )
    return bool(changes)


# --- Amounts --------------------------------------------------------------------------------------


def amount_check(*, asset: Asset, amount: Decimal) -> None:
    if amount <= 0:
        raise InvalidRequest("invalid_amount", "Amount must be greater than zero.", field="amount")
    if amount != amount.quantize(asset.quantum):
        raise InvalidRequest(
            "invalid_precision", f"{asset.pk} amounts have at most {asset.decimals} decimal places.", field="amount"
        )


# --- Deposits -------------------------------------------------------------------------------------


def deposit_address_get(*, user: User, asset: Asset) -> DepositAddress:
    """The user's address for `asset`: issued by the custody adapter on first use, then the same."""
    existing = DepositAddress.objects.filter(user=user, asset=asset).first()
    if existing is not None:
        return existing
    address = custody_adapter().address_for(user_id=user.pk, asset=asset.pk)
    try:
        with transaction.atomic():
            return DepositAddress.objects.create(user=user, asset=asset, address=address)
    except IntegrityError:
        return DepositAddress.objects.get(user=user, asset=asset)


@transaction.atomic
def deposit_declare(*, user: User, asset: Asset, amount: Decimal, tx_id: str | None = None) -> tuple[Deposit, bool]:
    """Record the user's word that a transfer is on its way. It credits nothing: only custody's
    report does. Declaring the same transaction again returns the first declaration."""
    amount_check(asset=asset, amount=amount)
    # Custody watches the address the user will send to, so the declaration carries it.
    address = deposit_address_get(user=user, asset=asset).address
    if tx_id:
        existing = (
            Deposit.objects.filter(user=user, asset=asset)
            .filter(Q(declared_tx_id=tx_id) | Q(tx_id=tx_id))
            .order_by("pk")
            .first()
        )
        if existing is not None:
            return existing, False
    try:
        with transaction.atomic():
            deposit = Deposit.objects.create(
                user=user,
                asset=asset,
                amount=amount,
                declared_amount=amount,
                declared_tx_id=tx_id or None,
                address=address,
                status=Deposit.Status.DECLARED,
            )
    except IntegrityError:
        # The same declaration raced in from a second request.
        return Deposit.objects.get(user=user, asset=asset, declared_tx_id=tx_id), False
    return deposit, True


def _deposit_apply(deposit: Deposit) -> None:
    user_account = account_get(user=deposit.user, asset=deposit.asset_id, kind=Account.Kind.AVAILABLE)
    external = account_get(user=None, asset=deposit.asset_id, kind=Account.Kind.DEPOSITS)
    ledger_post(
        kind=LedgerEntry.Kind.DEPOSIT,
        reference=f"deposit:{deposit.pk}",
        moves=[(external, -deposit.amount), (user_account, deposit.amount)],
    )
    deposit.status = Deposit.Status.CREDITED
    deposit.credited_at = timezone.now()


def _deposit_progress(deposit: Deposit, confirmations: int) -> None:
    """Move a deposit custody reported as far as its confirmations and the asset's rules allow."""
    deposit.confirmations = max(deposit.confirmations, confirmations)
    if deposit.status == Deposit.Status.CONFIRMING and deposit.confirmations >= deposit.asset.deposit_confirmations:
        deposit.confirmed_at = timezone.now()
        if deposit.assigned_by_id is not None or deposit.amount > deposit.asset.deposit_review_threshold:
            # Big deposits, and deposits an operator matched to a user by hand, wait for a person.
            deposit.status = Deposit.Status.HELD
            audit_record(actor=None, action="deposit_held", target=f"deposit:{deposit.pk}", amount=str(deposit.amount))
        else:
            _deposit_apply(deposit)
    deposit.save()


def _deposit_same_transfer(deposit: Deposit, *, address: str, amount: Decimal) -> None:
    if deposit.address != address or deposit.amount != amount:
        raise Conflict(
            "custody_mismatch",
            f"Transaction {deposit.tx_id} was reported before with another address or amount; nothing changed.",
        )


@transaction.atomic
def deposit_report(
    *, asset: Asset, address: str, amount: Decimal, tx_id: str, confirmations: int
) -> tuple[Deposit, bool]:
    """Custody saw `amount` of `asset` arrive at `address` in transaction `tx_id`.

    The deposit is recorded once per (asset, tx_id); it is credited to the owner of the address once
    it has the asset's required confirmations, unless it must be held for an operator. A report for
    an address nobody owns is kept as `unmatched`. Reporting the same transaction again (a replay, or
    more confirmations) never credits twice. Returns the deposit and whether this report created it.
    """
    amount_check(asset=asset, amount=amount)
    if confirmations < 0:
        raise InvalidRequest("invalid", "confirmations cannot be negative.", field="confirmations")
    existing = (
        Deposit.objects.select_for_update(of=("self",)).select_related("asset").filter(asset=asset, tx_id=tx_id).first()
    )
    if existing is not None:
        _deposit_same_transfer(existing, address=address, amount=amount)
        _deposit_progress(existing, confirmations)
        return existing, False

    owner_id = DepositAddress.objects.filter(asset=asset, address=address).values_list("user_id", flat=True).first()
    if owner_id is None:
        deposit = Deposit(
            user=None,
            asset=asset,
            amount=amount,
            tx_id=tx_id,
            address=address,
            confirmations=confirmations,
            status=Deposit.Status.UNMATCHED,
        )
        created = True
    else:
        # The owner's own declaration of this transfer: by its transaction id, else the oldest one of
        # the same amount that named none.
        declared = (
            Deposit.objects.select_for_update()
            .filter(user_id=owner_id, asset=asset, status=Deposit.Status.DECLARED)
            .filter(Q(declared_tx_id=tx_id) | Q(declared_tx_id__isnull=True, declared_amount=amount))
            .order_by(F("declared_tx_id").asc(nulls_last=True), "pk")
            .first()
        )
        created = declared is None
        deposit = declared or Deposit(user_id=owner_id, asset=asset)
        deposit.amount, deposit.tx_id, deposit.address = amount, tx_id, address
        deposit.status = Deposit.Status.CONFIRMING
    try:
        with transaction.atomic():
            deposit.save()
    except IntegrityError:
        # The same transaction reported twice at once: the other report recorded it.
        existing = Deposit.objects.select_for_update(of=("self",)).select_related("asset").get(asset=asset, tx_id=tx_id)
        _deposit_same_transfer(existing, address=address, amount=amount)
        _deposit_progress(existing, confirmations)
        return existing, False
    if deposit.status == Deposit.Status.UNMATCHED:
        audit_record(actor=None, action="deposit_unmatched", target=f"deposit:{deposit.pk}", address=address)
        return deposit, created
    _deposit_progress(deposit, confirmations)
    return deposit, created


@transaction.atomic
def deposit_release(*, deposit_id: int, acting_user: User) -> Deposit:
    """Credit a held deposit: the finance operator's decision."""
    operator_check(acting_user, "accounts.release_deposit")
    deposit = Deposit.objects.select_for_update(of=("self",)).select_related("asset", "user").get(pk=deposit_id)
    if deposit.status != Deposit.Status.HELD:
        raise Conflict("not_held", f"Deposit {deposit.pk} is {deposit.status}.")
    if deposit.user_id == acting_user.pk:
        raise Forbidden("own_deposit", "Nobody releases their own deposit.")
    if deposit.assigned_by_id == acting_user.pk:
        raise Forbidden("same_operator", "The operator who assigned a deposit cannot also release it.")
    _deposit_apply(deposit)
    deposit.decided_by = acting_user
    deposit.save()
    audit_record(
        actor=acting_user, action="deposit_release", target=f"deposit:{deposit.pk}", amount=str(deposit.amount)
    )
    return deposit


@transaction.atomic
def deposit_assign(*, deposit_id: int, user: User, reason: str, acting_user: User) -> Deposit:
    """Give an unmatched deposit to the user it belongs to. It is then held: another operator releases
    it, so no single person can move an unclaimed deposit into an account."""
    operator_check(acting_user, "accounts.release_deposit")
    reason = _reason_required(reason)
    deposit = Deposit.objects.select_for_update(of=("self",)).select_related("asset").get(pk=deposit_id)
    if deposit.status != Deposit.Status.UNMATCHED:
        raise Conflict("not_unmatched", f"Deposit {deposit.pk} is {deposit.status}.")
    if user.pk == acting_user.pk:
        raise Forbidden("own_deposit", "Nobody assigns a deposit to themselves.")
    deposit.user = user
    deposit.assigned_by = acting_user
    deposit.reason = reason
    deposit.status = Deposit.Status.CONFIRMING
    audit_record(
        actor=acting_user, action="deposit_assign", target=f"deposit:{deposit.pk}", user=user.pk, reason=reason
    )
    _deposit_progress(deposit, deposit.confirmations)
    return deposit


@transaction.atomic
def deposit_reject(*, deposit_id: int, reason: str, acting_user: User) -> Deposit:
    """Refuse a deposit that is not credited: it will never be (returning the coins is custody's)."""
    operator_check(acting_user, "accounts.release_deposit")
    reason = _reason_required(reason)
    deposit = Deposit.objects.select_for_update().get(pk=deposit_id)
    if deposit.status in (Deposit.Status.CREDITED, Deposit.Status.REJECTED):
        raise Conflict("already_final", f"Deposit {deposit.pk} is {deposit.status}.")
    if deposit.user_id == acting_user.pk:
        raise Forbidden("own_deposit", "Nobody decides on their own deposit.")
    deposit.status = Deposit.Status.REJECTED
    deposit.decided_by = acting_user
    deposit.reason = reason
    deposit.save(update_fields=["status", "decided_by", "reason"])
    audit_record(actor=acting_user, action="deposit_reject", target=f"deposit:{deposit.pk}", reason=reason)
    return deposit


# --- Withdrawals ----------------------------------------------------------------------------------


@transaction.atomic
def withdrawal_request(*, user: User, asset: Asset, amount: Decimal, address: str) -> Withdrawal:
    """Check the asset's rules, lock the amount and the fee, and wait for approval. Anything refused
    writes nothing."""
    if user.withdrawals_restricted:
        raise Forbidden("withdrawals_restricted", "Withdrawals are restricted on this account.")
    if not asset.withdrawals_enabled:
        raise Forbidden("withdrawals_disabled", f"{asset.pk} withdrawals are disabled.", field="asset")
    amount_check(asset=asset, amount=amount)
    if amount < asset.withdrawal_min:
        smallest = decimal_str(asset.withdrawal_min)
        raise InvalidRequest("below_minimum", f"The smallest {asset.pk} withdrawal is {smallest}.", field="amount")
    if not re.fullmatch(asset.address_regex, address):
        raise InvalidRequest("invalid_address", f"That is not a valid {asset.pk} address.", field="address")
    # Locking the user's accounts first serialises their withdrawals of this asset, so two requests at
    # once cannot both pass the daily limit. Both accounts exist before either is locked: creating
    # one may wait for another transaction's insert of it (an order placed at the same moment), which
    # must never happen while holding a lock that transaction needs next.
    available = account_get(user=user, asset=asset, kind=Account.Kind.AVAILABLE)
    locked = account_get(user=user, asset=asset, kind=Account.Kind.LOCKED)
    accounts_lock([available.pk, locked.pk])
    if asset.withdrawal_daily_limit is not None:
        since = timezone.now() - timedelta(hours=24)
        used = (
            Withdrawal.objects.filter(user=user, asset=asset, created_at__gte=since)
            .exclude(status__in=[Withdrawal.Status.REJECTED, Withdrawal.Status.FAILED])
            .aggregate(total=Sum("amount"))["total"]
        ) or Decimal(0)
        if used + amount > asset.withdrawal_daily_limit:
            left = max(asset.withdrawal_daily_limit - used, Decimal(0))
            raise InvalidRequest(
                "daily_limit_exceeded",
                f"That exceeds the 24-hour {asset.pk} limit; {decimal_str(left)} can still be withdrawn.",
                field="amount",
            )
    withdrawal = Withdrawal.objects.create(
        user=user,
        asset=asset,
        amount=amount,
        fee=asset.withdrawal_fee,
        address=address,
        needs_second_approval=amount > asset.withdrawal_four_eyes_threshold,
    )
    # Available to locked, with the accounts already in hand.
    ledger_post(
        kind=LedgerEntry.Kind.WITHDRAWAL_LOCK,
        reference=f"withdrawal:{withdrawal.pk}",
        moves=[(available, -withdrawal.total), (locked, withdrawal.total)],
    )
    return withdrawal


def _withdrawal_for_operator(withdrawal_id: int, acting_user: User) -> Withdrawal:
    operator_check(acting_user, "accounts.approve_withdrawal")
    withdrawal = Withdrawal.objects.select_for_update().get(pk=withdrawal_id)
    if withdrawal.user_id == acting_user.pk:
        raise Forbidden("own_withdrawal", "Nobody decides on their own withdrawal.")
    return withdrawal


@transaction.atomic
def withdrawal_approve(*, withdrawal_id: int, acting_user: User) -> Withdrawal:
    """The first approval, or the second one (by someone else) where the amount needs two."""
    withdrawal = _withdrawal_for_operator(withdrawal_id, acting_user)
    now = timezone.now()
    if withdrawal.status == Withdrawal.Status.REQUESTED:
        withdrawal.status = Withdrawal.Status.APPROVED
        withdrawal.approved_by, withdrawal.approved_at = acting_user, now
        action = "withdrawal_approve"
    elif withdrawal.status == Withdrawal.Status.APPROVED and withdrawal.needs_second_approval:
        if withdrawal.approved_by_id == acting_user.pk:
            raise Forbidden("second_approval_same_person", "The second approval must come from another person.")
        withdrawal.status = Withdrawal.Status.SECOND_APPROVED
        withdrawal.second_approved_by, withdrawal.second_approved_at = acting_user, now
        action = "withdrawal_second_approve"
    else:
        raise Conflict("not_awaiting_approval", f"Withdrawal {withdrawal.pk} is {withdrawal.status}.")
    withdrawal.save()
    audit_record(
        actor=acting_user,
        action=action,
        target=f"withdrawal:{withdrawal.pk}",
        amount=str(withdrawal.amount),
        asset=withdrawal.asset_id,
    )
    return withdrawal


def _withdrawal_return(withdrawal: Withdrawal, *, status: str, reason: str) -> None:
    funds_release(
        user=withdrawal.user,
        asset=withdrawal.asset_id,
        amount=withdrawal.total,
        kind=LedgerEntry.Kind.WITHDRAWAL_RETURN,
        reference=f"withdrawal:{withdrawal.pk}",
    )
    withdrawal.status = status
    withdrawal.reason = reason


@transaction.atomic
def withdrawal_reject(*, withdrawal_id: int, reason: str, acting_user: User) -> Withdrawal:
    """Refuse a withdrawal custody does not have yet; the amount and fee return to the user."""
    reason = _reason_required(reason)
    withdrawal = _withdrawal_for_operator(withdrawal_id, acting_user)
    if withdrawal.status not in Withdrawal.REJECTABLE_STATUSES:
        raise Conflict("not_rejectable", f"Withdrawal {withdrawal.pk} is {withdrawal.status}.")
    _withdrawal_return(withdrawal, status=Withdrawal.Status.REJECTED, reason=reason)
    withdrawal.rejected_by = acting_user
    withdrawal.save()
    audit_record(
        actor=acting_user,
        action="withdrawal_reject",
        target=f"withdrawal:{withdrawal.pk}",
        amount=str(withdrawal.amount),
        asset=withdrawal.asset_id,
        reason=reason,
    )
    return withdrawal


@transaction.atomic
def withdrawal_report(*, withdrawal_id: int, status: str, tx_id: str | None = None) -> Withdrawal:
    """Custody's news of a withdrawal: `sent` (it has it), `completed` (on chain, with its
    transaction id) or `failed` (it will not go; the funds return). Reporting the same news again
    changes nothing; news about a withdrawal that is not fully approved is refused."""
    withdrawal = (
        Withdrawal.objects.select_for_update(of=("self",)).select_related("user").filter(pk=withdrawal_id).first()
    )
    if withdrawal is None:
        raise NotFound("unknown_withdrawal", f"No withdrawal {withdrawal_id}.")
    current, ready = withdrawal.status, withdrawal.ready_for_custody
    allowed = {
        Withdrawal.Status.SENT: ready,
        Withdrawal.Status.COMPLETED: ready or current == Withdrawal.Status.SENT,
        Withdrawal.Status.FAILED: ready or current == Withdrawal.Status.SENT,
    }
    if status not in allowed:
        raise InvalidRequest("invalid", f"Unknown status {status!r}.", field="status")
    if current == status:
        if status == Withdrawal.Status.COMPLETED and tx_id != withdrawal.tx_id:
            raise Conflict("custody_mismatch", f"Withdrawal {withdrawal.pk} completed with another transaction.")
        return withdrawal
    if not allowed[status]:
        log.error("custody_report_refused", withdrawal_id=withdrawal.pk, status=status, current=current)
        raise Conflict("not_approved", f"Withdrawal {withdrawal.pk} is {current}; custody may not report it {status}.")
    now = timezone.now()
    if status == Withdrawal.Status.SENT:
        withdrawal.sent_at = now
        withdrawal.tx_id = tx_id or withdrawal.tx_id
    elif status == Withdrawal.Status.COMPLETED:
        if not tx_id:
            raise InvalidRequest("required", "A completed withdrawal needs its transaction id.", field="tx_id")
        locked = account_get(user=withdrawal.user, asset=withdrawal.asset_id, kind=Account.Kind.LOCKED)
        moves = [
            (locked, -withdrawal.total),
            (account_get(user=None, asset=withdrawal.asset_id, kind=Account.Kind.WITHDRAWALS), withdrawal.amount),
        ]
        if withdrawal.fee:
            moves.append((account_get(user=None, asset=withdrawal.asset_id, kind=Account.Kind.FEES), withdrawal.fee))
        ledger_post(kind=LedgerEntry.Kind.WITHDRAWAL_SEND, reference=f"withdrawal:{withdrawal.pk}", moves=moves)
        withdrawal.sent_at = withdrawal.sent_at or now
        withdrawal.completed_at, withdrawal.tx_id = now, tx_id
    else:
        _withdrawal_return(withdrawal, status=Withdrawal.Status.FAILED, reason="custody reported a failure")
    withdrawal.status = status
    withdrawal.save()
    audit_record(actor=None, action=f"withdrawal_{status}", target=f"withdrawal:{withdrawal.pk}", tx_id=tx_id)
    return withdrawal


# --- Balance adjustments --------------------------------------------------------------------------


@transaction.atomic
def adjustment_propose(
    *, user: User, asset: Asset, amount: Decimal, category: str, reason: str, acting_user: User
) -> BalanceAdjustment:
    """The maker's half of a correction: nothing moves until another operator approves it."""
    operator_check(acting_user, "accounts.propose_adjustment")
    reason = _reason_required(reason)
    if category not in BalanceAdjustment.Category.values:
        raise InvalidRequest("invalid", f"Unknown category {category!r}.", field="category")
    amount_check(asset=asset, amount=abs(amount))
    if user.pk == acting_user.pk:
        raise Forbidden("own_account", "Nobody adjusts their own balance.")
    adjustment = BalanceAdjustment.objects.create(
        user=user, asset=asset, amount=amount, category=category, reason=reason, proposed_by=acting_user
    )
    audit_record(
        actor=acting_user,
        action="adjustment_propose",
        target=f"adjustment:{adjustment.pk}",
        user=user.pk,
        asset=asset.pk,
        amount=str(amount),
        category=category,
        reason=reason,
    )
    return adjustment


def _adjustment_for_checker(adjustment_id: int, acting_user: User) -> BalanceAdjustment:
    operator_check(acting_user, "accounts.approve_adjustment")
    adjustment = BalanceAdjustment.objects.select_for_update().get(pk=adjustment_id)
    if adjustment.status != BalanceAdjustment.Status.PROPOSED:
        raise Conflict("already_decided", f"Adjustment {adjustment.pk} is {adjustment.status}.")
    if acting_user.pk in (adjustment.proposed_by_id, adjustment.user_id):
        raise Forbidden("same_operator", "An adjustment is decided by someone other than its proposer and its user.")
    return adjustment


@transaction.atomic
def adjustment_approve(*, adjustment_id: int, acting_user: User, note: str = "") -> BalanceAdjustment:
    """The checker's half: apply the adjustment to the user's available balance, against the
    adjustments system account. A debit larger than what is available is refused."""
    adjustment = _adjustment_for_checker(adjustment_id, acting_user)
    available = account_get(user=adjustment.user, asset=adjustment.asset_id, kind=Account.Kind.AVAILABLE)
    system = account_get(user=None, asset=adjustment.asset_id, kind=Account.Kind.ADJUSTMENTS)
    adjustment.ledger_entry = ledger_post(
        kind=LedgerEntry.Kind.ADJUSTMENT,
        reference=f"adjustment:{adjustment.pk}",
        moves=[(available, adjustment.amount), (system, -adjustment.amount)],
    )
    adjustment.status = BalanceAdjustment.Status.APPROVED
    adjustment.decided_by, adjustment.decided_at, adjustment.decision_note = acting_user, timezone.now(), note
    adjustment.save()
    audit_record(
        actor=acting_user,
        action="adjustment_approve",
        target=f"adjustment:{adjustment.pk}",
        user=adjustment.user_id,
        asset=adjustment.asset_id,
        amount=str(adjustment.amount),
    )
    return adjustment


@transaction.atomic
def adjustment_reject(*, adjustment_id: int, reason: str, acting_user: User) -> BalanceAdjustment:
    reason = _reason_required(reason)
    adjustment = _adjustment_for_checker(adjustment_id, acting_user)
    adjustment.status = BalanceAdjustment.Status.REJECTED
    adjustment.decided_by, adjustment.decided_at, adjustment.decision_note = acting_user, timezone.now(), reason
    adjustment.save()
    audit_record(actor=acting_user, action="adjustment_reject", target=f"adjustment:{adjustment.pk}", reason=reason)
    return adjustment


# --- Idempotency keys -----------------------------------------------------------------------------

IDEMPOTENCY_KEY_HOURS = 24


def idempotency_keys_expire() -> int:
    cutoff = timezone.now() - timedelta(hours=IDEMPOTENCY_KEY_HOURS)
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()
    return deleted


# --- Logins and their tokens ----------------------------------------------------------------------

TokenPair = tuple[RefreshToken, AccessToken]


def login_start(*, user: User) -> TokenPair:
    """A sign-in with a password: a new login and its first pair of tokens."""
    now = tokens.now_for_tokens()
    with transaction.atomic():
        login = Login(user=user, started_at=now, expires_at=now + settings.JWT_LOGIN_LIFETIME)
        refresh = tokens.refresh_token_new(login=login)
        login.refresh_jti = refresh[jwt_settings.JTI_CLAIM]
        login.save()
    return refresh, tokens.access_token_for(refresh, login=login)


def _refresh_token(raw: str) -> RefreshToken:
    """The refresh token `raw`, its signature, expiry and type checked; TokenError otherwise."""
    token = tokens.LoginRefreshToken(raw)
    if not token.get(tokens.LOGIN_CLAIM):
        raise TokenError("Token belongs to no sign-in; sign in again.")
    return token


def _tokens_blacklist(outstanding: Iterable[OutstandingToken]) -> None:
    BlacklistedToken.objects.bulk_create([BlacklistedToken(token=t) for t in outstanding], ignore_conflicts=True)


def _login_end(login: Login, *, reason: str) -> None:
    """End a locked, open login and blacklist its one usable refresh token (the caller then denies
    its access tokens in Redis)."""
    login.ended_at, login.end_reason = timezone.now(), reason
    login.save(update_fields=["ended_at", "end_reason"])
    _tokens_blacklist(OutstandingToken.objects.filter(jti=login.refresh_jti))


def login_refresh(*, refresh: str) -> TokenPair:
    """Rotate a refresh token: the presented one is blacklisted and a new pair issued, never past the
    login's absolute lifetime. A refresh token presented a second time (a copy in someone else's
    hands, or the owner's, after the other used it) ends its whole login: both holders sign in again,
    and only the owner can."""
    try:
        presented = _refresh_token(refresh)
    except TokenError as exc:
        raise Unauthorized("token_not_valid", str(exc), field="refresh") from exc
    refused = None
    with transaction.atomic():
        login = (
            Login.objects.select_for_update(of=("self",))
            .select_related("user")
            .filter(pk=presented[tokens.LOGIN_CLAIM], user_id=presented[jwt_settings.USER_ID_CLAIM])
            .first()
        )
        if login is None or not login.user.is_active:
            raise Unauthorized("token_not_valid", "This sign-in no longer exists.", field="refresh")
        if login.ended_at is not None:
            raise Unauthorized("login_ended", "This sign-in has ended; sign in again.", field="refresh")
        if presented[jwt_settings.JTI_CLAIM] != login.refresh_jti:
            _login_end(login, reason=Login.EndReason.REUSED)
            refused = Unauthorized(
                "token_reused",
                "This refresh token was used before; the sign-in it belongs to has ended. Sign in again.",
                field="refresh",
            )
            log.warning("refresh_token_reused", login=str(login.pk), user_id=login.user_id)
        elif login.expires_at <= presented.current_time:
            _login_end(login, reason=Login.EndReason.EXPIRED)
            refused = Unauthorized("login_expired", "This sign-in is too old; sign in again.", field="refresh")
        else:
            _tokens_blacklist(OutstandingToken.objects.filter(jti=login.refresh_jti))
            rotated = tokens.refresh_token_new(login=login, previous=presented)
            login.refresh_jti = rotated[jwt_settings.JTI_CLAIM]
            login.save(update_fields=["refresh_jti"])
    if refused is not None:
        tokens.logins_deny(login_ids=[login.pk])
        raise refused
    return rotated, tokens.access_token_for(rotated, login=login)


def login_end(*, user: User, refresh: str, access: Token | None = None) -> None:
    """Log out: end the login of `refresh` (which must be the user's) and refuse `access`, the access
    token the request came with, from now on."""
    try:
        presented = _refresh_token(refresh)
    except TokenError as exc:
        raise InvalidRequest("token_not_valid", str(exc), field="refresh") from exc
    if str(presented.get(jwt_settings.USER_ID_CLAIM)) != str(user.pk):
        raise InvalidRequest("token_not_valid", "That refresh token belongs to someone else.", field="refresh")
    login_id = presented[tokens.LOGIN_CLAIM]
    with transaction.atomic():
        login = Login.objects.select_for_update().filter(pk=login_id, user=user, ended_at__isnull=True).first()
        if login is not None:
            current = presented[jwt_settings.JTI_CLAIM] == login.refresh_jti
            _login_end(login, reason=Login.EndReason.LOGOUT if current else Login.EndReason.REUSED)
    tokens.logins_deny(login_ids=[login_id], access=access)


def user_logins_end(*, user: User, reason: str) -> int:
    """End every login of the user and blacklist every refresh token they still hold (those of
    logins and any other), as a new password requires."""
    now = timezone.now()
    with transaction.atomic():
        ended = list(
            Login.objects.select_for_update()
            .filter(user=user, ended_at__isnull=True)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        Login.objects.filter(pk__in=ended).update(ended_at=now, end_reason=reason)
        _tokens_blacklist(OutstandingToken.objects.filter(user=user, expires_at__gt=now, blacklistedtoken__isnull=True))
    tokens.logins_deny(login_ids=ended)
    if ended:
        log.info("logins_ended", user_id=user.pk, reason=reason, count=len(ended))
    return len(ended)


def tokens_flush_expired() -> int:
    """Forget refresh tokens (and their blacklist rows) and logins past their expiry: nothing can
    present them any more."""
    now = timezone.now()
    deleted, _ = OutstandingToken.objects.filter(expires_at__lte=now).delete()
    Login.objects.filter(expires_at__lte=now).delete()
    return deleted
