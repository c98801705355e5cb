from decimal import Decimal

import factory
from factory.django import DjangoModelFactory

from accounts.models import Asset, User
from matching.models import Market

PASSWORD = "Correct-horse-42"


class UserFactory(DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"trader{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password(PASSWORD)


class AssetFactory(DjangoModelFactory):
    class Meta:
        model = Asset
        django_get_or_create = ("symbol",)

    symbol = factory.Sequence(lambda n: f"A{n}")
    name = factory.LazyAttribute(lambda a: a.symbol)
    decimals = 8
    # Open rules, so that tests which are not about them are not stopped by them; the tests of the
    # rules tighten them.
    deposit_confirmations = 1
    deposit_review_threshold = Decimal("1000000000")
    withdrawals_enabled = True
    withdrawal_four_eyes_threshold = Decimal("1000000000")


class MarketFactory(DjangoModelFactory):
    """Markets are created through the service in tests that need the engine to know them; this
    factory is for tests that only need the row."""

    class Meta:
        model = Market
        django_get_or_create = ("symbol",)

    base = factory.SubFactory(AssetFactory, symbol="BTC")
    quote = factory.SubFactory(AssetFactory, symbol="USDT")
    symbol = factory.LazyAttribute(lambda m: f"{m.base.symbol}_{m.quote.symbol}")
    tick_size = Decimal("0.01")
    lot_size = Decimal("0.00001")
    min_notional = Decimal("10")
    maker_fee = Decimal("0.001")
    taker_fee = Decimal("0.002")
