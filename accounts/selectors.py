"""Reads of users' money."""

from decimal import Decimal

from django.db.models import Q, QuerySet, Sum

from accounts.models import (
    WITHDRAWAL_AWAITING_APPROVAL,
    WITHDRAWAL_READY_FOR_CUSTODY,
    Account,
    Asset,
    BalanceAdjustment,
    Deposit,
    User,
    Withdrawal,
)


def balances_for_user(*, user: User) -> list[dict]:
    """Every asset with the user's available and locked amounts (zero where they never had any)."""
    amounts: dict[tuple[str, str], Decimal] = {
        (asset, kind): balance
        for asset, kind, balance in Account.objects.filter(user=user).values_list("asset_id", "kind", "balance")
    }
    return [
        {
            "asset": asset,
            "available": amounts.get((asset, Account.Kind.AVAILABLE), Decimal(0)),
            "locked": amounts.get((asset, Account.Kind.LOCKED), Decimal(0)),
        }
        for asset in Asset.objects.order_by("symbol").values_list("symbol", flat=True)
    ]


def deposits_for_user(*, user: User, limit: int = 100) -> list[Deposit]:
    return list(Deposit.objects.filter(user=user).order_by("-id")[:limit])


def withdrawals_for_user(*, user: User, limit: int = 100) -> list[Withdrawal]:
    return list(Withdrawal.objects.filter(user=user).order_by("-id")[:limit])


def deposits_awaiting_custody(*, limit: int = 500) -> list[dict]:
    """Declared deposits and deposits still confirming, with the address each was (or will be) sent
    to, for custody to watch."""
    waiting = Deposit.objects.filter(
        status__in=[Deposit.Status.DECLARED, Deposit.Status.CONFIRMING], user__isnull=False
    ).order_by("pk")
    return [
        {
            "id": deposit.pk,
            "asset_id": deposit.asset_id,
            "address": deposit.address,
            "amount": deposit.amount,
            "tx_id": deposit.tx_id or deposit.declared_tx_id,
            "confirmations": deposit.confirmations,
            "status": deposit.status,
        }
        for deposit in waiting[:limit]
    ]


def withdrawals_for_custody(*, limit: int = 500) -> list[Withdrawal]:
    """Fully approved withdrawals custody should send, and sent ones it has not yet completed."""
    return list(
        Withdrawal.objects.filter(WITHDRAWAL_READY_FOR_CUSTODY | Q(status=Withdrawal.Status.SENT)).order_by("pk")[
            :limit
        ]
    )


# --- Work waiting for an operator -----------------------------------------------------------------
# What each operator may act on now: their permission allows it, it is not their own money, and they
# did not give the other half of its four-eyes decision.


def withdrawals_awaiting(*, user: User) -> QuerySet[Withdrawal]:
    if not user.has_perm("accounts.approve_withdrawal"):
        return Withdrawal.objects.none()
    own_first_approval = Q(status=Withdrawal.Status.APPROVED, approved_by=user)
    return Withdrawal.objects.filter(WITHDRAWAL_AWAITING_APPROVAL).exclude(user=user).exclude(own_first_approval)


def deposits_awaiting(*, user: User) -> QuerySet[Deposit]:
    if not user.has_perm("accounts.release_deposit"):
        return Deposit.objects.none()
    own_assignment = Q(status=Deposit.Status.HELD, assigned_by=user)
    return Deposit.objects.filter(status__in=Deposit.REVIEW_STATUSES).exclude(user=user).exclude(own_assignment)


def adjustments_awaiting(*, user: User) -> QuerySet[BalanceAdjustment]:
    if not user.has_perm("accounts.approve_adjustment"):
        return BalanceAdjustment.objects.none()
    return BalanceAdjustment.objects.filter(status=BalanceAdjustment.Status.PROPOSED).exclude(
        Q(proposed_by=user) | Q(user=user)
    )


def liabilities() -> list[dict]:
    """What the exchange owes its users, per asset: their available and locked balances."""
    totals = {
        (asset, kind): total
        for asset, kind, total in Account.objects.filter(user__isnull=False)
        .values_list("asset_id", "kind")
        .annotate(total=Sum("balance"))
        .order_by()
    }
    rows = []
    for asset in Asset.objects.order_by("symbol").values_list("symbol", flat=True):
        available = totals.get((asset, Account.Kind.AVAILABLE), Decimal(0))
        locked = totals.get((asset, Account.Kind.LOCKED), Decimal(0))
        rows.append({"asset": asset, "available": available, "locked": locked, "total": available + locked})
    return rows
