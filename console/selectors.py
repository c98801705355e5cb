"""Reads about operators: their second factor, and their dashboard."""

from datetime import timedelta

from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from accounts.selectors import adjustments_awaiting, deposits_awaiting, liabilities, withdrawals_awaiting
from core.api import decimal_str
from matching.models import Market
from settlement.selectors import market_days


def totp_devices_confirmed(*, user: User) -> list[TOTPDevice]:
    return list(TOTPDevice.objects.devices_for_user(user, confirmed=True).order_by("pk"))


def second_factor_satisfied(*, user: User) -> bool:
    """Whether this signed-in user's session has the second factor the admin asks of it.

    `user` comes from a request that went through django-otp's middleware. A session verified by a
    device always passes. Otherwise: never with `ADMIN_REQUIRE_2FA` on; with it off, only for a user
    who has no confirmed device (whoever has one must have given its code).
    """
    if user.is_verified():
        return True
    if settings.ADMIN_REQUIRE_2FA:
        return False
    # Asked several times per page (the site asks has_permission for each part it draws): once is enough.
    if not hasattr(user, "_console_has_device"):
        user._console_has_device = TOTPDevice.objects.devices_for_user(user, confirmed=True).exists()
    return not user._console_has_device


def operator_dashboard(*, user: User, days: int = 30) -> dict:
    """The admin's front page for one operator: the decisions waiting for them, what the exchange
    owes its users, and each market's volume and fee revenue per day."""
    waiting = [
        ("Withdrawals to approve", withdrawals_awaiting(user=user), "accounts_withdrawal_changelist"),
        ("Deposits to release or assign", deposits_awaiting(user=user), "accounts_deposit_changelist"),
        ("Adjustments to check", adjustments_awaiting(user=user), "accounts_balanceadjustment_changelist"),
    ]
    today = timezone.now().date()
    labels = [(today - timedelta(days=n)).isoformat() for n in reversed(range(days))]
    series: dict[str, dict[str, dict[str, str]]] = {"volume": {}, "fees": {}}
    for row in market_days(days=days):
        for measure in series:
            series[measure].setdefault(row["market_id"], {})[row["day"].isoformat()] = decimal_str(row[measure])
    markets = sorted(Market.objects.values_list("symbol", "quote_id"))
    chart: dict[str, object] = {"labels": labels}
    for measure, values in series.items():
        chart[measure] = [
            {"market": symbol, "quote": quote, "values": [values.get(symbol, {}).get(day, "0") for day in labels]}
            for symbol, quote in markets
        ]
    return {
        "awaiting": [
            {"label": label, "count": queryset.count(), "url": f"{reverse(f'admin:{view}')}?awaiting=me"}
            for label, queryset, view in waiting
        ],
        "liabilities": [
            {key: decimal_str(value) if key != "asset" else value for key, value in row.items()}
            for row in liabilities()
        ],
        "chart": chart,
        "days": days,
    }
