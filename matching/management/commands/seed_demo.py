"""Demo assets and markets. Safe to run any number of times."""

from decimal import Decimal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import Asset
from matching.models import Market
from matching.services import market_create

ETH_ADDRESS = r"^0x[0-9a-fA-F]{40}$"
# Development rules: high enough that demo and load-test deposits (up to 100,000,000 USDT and 10,000
# BTC per user) are credited without an operator, low enough that a withdrawal of a few thousand
# USDT or one BTC needs two approvals.
ASSETS = {
    "BTC": {
        "name": "Bitcoin",
        "decimals": 8,
        "deposit_confirmations": 2,
        "deposit_review_threshold": Decimal("10000"),
        "withdrawals_enabled": True,
        "withdrawal_min": Decimal("0.0001"),
        "withdrawal_fee": Decimal("0.0002"),
        "withdrawal_daily_limit": Decimal("100"),
        "withdrawal_four_eyes_threshold": Decimal("1"),
        "address_regex": r"^(bc1|tb1|bcrt1)[02-9ac-hj-np-z]{20,80}$|^[13mn2][1-9A-HJ-NP-Za-km-z]{25,34}$",
    },
    "ETH": {
        "name": "Ether",
        "decimals": 8,
        "deposit_confirmations": 3,
        "deposit_review_threshold": Decimal("100000"),
        "withdrawals_enabled": True,
        "withdrawal_min": Decimal("0.001"),
        "withdrawal_fee": Decimal("0.002"),
        "withdrawal_daily_limit": Decimal("1000"),
        "withdrawal_four_eyes_threshold": Decimal("20"),
        "address_regex": ETH_ADDRESS,
    },
    "USDT": {
        "name": "Tether USD",
        "decimals": 8,
        "deposit_confirmations": 3,
        "deposit_review_threshold": Decimal("100000000"),
        "withdrawals_enabled": True,
        "withdrawal_min": Decimal("10"),
        "withdrawal_fee": Decimal("1"),
        "withdrawal_daily_limit": Decimal("1000000"),
        "withdrawal_four_eyes_threshold": Decimal("10000"),
        "address_regex": ETH_ADDRESS,
    },
}
MARKETS = [
    ("BTC_USDT", "BTC", "USDT", Decimal("0.01"), Decimal("0.00001"), Decimal("10")),
    ("ETH_USDT", "ETH", "USDT", Decimal("0.01"), Decimal("0.0001"), Decimal("10")),
]


class Command(BaseCommand):
    help = "Create the demo assets and markets (idempotent); staff accounts come from seed_staff."

    def handle(self, *args: object, **options: object) -> None:
        if settings.PRODUCTION:
            raise CommandError("seed_demo creates demo markets and accounts: refused with EXCHANGE_ENV=production")
        with transaction.atomic():
            for symbol, rules in ASSETS.items():
                # Rules an operator changed since stay as they are.
                Asset.objects.get_or_create(symbol=symbol, defaults=rules)
            for symbol, base, quote, tick, lot, min_notional in MARKETS:
                if not Market.objects.filter(pk=symbol).exists():
                    market_create(
                        symbol=symbol,
                        base=Asset.objects.get(pk=base),
                        quote=Asset.objects.get(pk=quote),
                        tick_size=tick,
                        lot_size=lot,
                        min_notional=min_notional,
                    )
                    self.stdout.write(f"market {symbol} created")
