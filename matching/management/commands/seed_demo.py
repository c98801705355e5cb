"""Demo assets and markets, and an operator account. Safe to run any number of times."""

import os
import secrets
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from accounts.models import Asset, User
from matching.models import Market
from matching.services import market_create

ASSETS = [("BTC", "Bitcoin", 8), ("ETH", "Ether", 8), ("USDT", "Tether USD", 8)]
MARKETS = [
    ("BTC_USDT", "BTC", "USDT", Decimal("0.01"), Decimal("0.00001"), Decimal("10")),
    ("ETH_USDT", "ETH", "USDT", Decimal("0.01"), Decimal("0.0001"), Decimal("10")),
]


def operator_password(path: Path) -> str:
    """OPERATOR_PASSWORD if set, else the one generated on the first run (kept under .run/)."""
    from_env = os.environ.get("OPERATOR_PASSWORD")
    if from_env:
        return from_env
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(12)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(password + "\n")
    return password


class Command(BaseCommand):
    help = "Create the demo assets and markets and the operator account (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-operator", action="store_true", help="Skip the operator account.")

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
        if options["no_operator"]:
            return
        username = os.environ.get("OPERATOR_USERNAME", "operator")
        password = operator_password(settings.RUN_DIR / "operator-password")
        user, created = User.objects.get_or_create(
            username=username, defaults={"is_staff": True, "is_superuser": True, "email": f"{username}@localhost"}
        )
        if created or not user.check_password(password):
            user.set_password(password)
            user.is_staff = user.is_superuser = True
            user.save()
        self.stdout.write(f"operator account: {username} / {password}")
