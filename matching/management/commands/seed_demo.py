"""Demo assets and markets. Safe to run any number of times."""

from decimal import Decimal

from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import Asset
from matching.models import Market
from matching.services import market_create

ASSETS = [("BTC", "Bitcoin", 8), ("ETH", "Ether", 8), ("USDT", "Tether USD", 8)]
MARKETS = [
    ("BTC_USDT", "BTC", "USDT", Decimal("0.01"), Decimal("0.00001"), Decimal("10")),
    ("ETH_USDT", "ETH", "USDT", Decimal("0.01"), Decimal("0.0001"), Decimal("10")),
]


class Command(BaseCommand):
    help = "Create the demo assets and markets (idempotent); staff accounts come from seed_staff."

    def handle(self, *args: object, **options: object) -> None:
        with transaction.atomic():
            for symbol, name, decimals in ASSETS:
                Asset.objects.get_or_create(symbol=symbol, defaults={"name": name, "decimals": decimals})
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
