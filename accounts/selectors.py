"""Reads of users' money."""

from decimal import Decimal

from accounts.models import Account, Asset, Deposit, User, Withdrawal


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
