"""Fixtures of the suite, loaded by tests/conftest.py whenever Django is configured."""

from collections.abc import Callable, Iterator
from contextlib import suppress
from decimal import Decimal

import pytest
from django.conf import settings
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import Account, Asset, Deposit, LedgerEntry, LedgerLine, User, Withdrawal
from accounts.services import deposit_create, deposit_credit
from matching.models import Market, Order, OutboxMessage
from tests.e2e.harness import Exchange
from tests.factories import MarketFactory, UserFactory


@pytest.fixture(scope="session", autouse=True)
def _kafka_test_topics() -> Iterator[None]:
    """The run's own topics exist for the whole session and are deleted at its end."""
    yield
    from exchange.kafka import client, topics

    # Nothing was created when no test used Kafka.
    with suppress(Exception):
        client.delete_topics(topics.name(t) for t in topics.ALL)


@pytest.fixture
def btc_usdt(db: None) -> Market:
    return MarketFactory()


@pytest.fixture
def eth_usdt(db: None) -> Market:
    return MarketFactory(
        base__symbol="ETH", quote__symbol="USDT", tick_size=Decimal("0.01"), lot_size=Decimal("0.0001")
    )


@pytest.fixture
def make_user(db: None) -> Callable[..., User]:
    return UserFactory


@pytest.fixture
def fund() -> Callable[[User, str, str], Deposit]:
    """Credit `amount` of `asset` to `user` the way a deposit does."""

    def credit(user: User, asset: str, amount: str) -> Deposit:
        deposit, _ = deposit_create(user=user, asset=Asset.objects.get(pk=asset), amount=Decimal(amount))
        return deposit_credit(deposit_id=deposit.pk)

    return credit


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def client_for() -> Callable[[User], APIClient]:
    def build(user: User) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
        return client

    return build


def money_state() -> dict:
    """Everything a rejected request must leave untouched."""
    return {
        "balances": sorted(Account.objects.values_list("id", "balance")),
        "ledger_entries": LedgerEntry.objects.count(),
        "ledger_lines": LedgerLine.objects.count(),
        "orders": sorted(Order.objects.values_list("id", "status", "locked", "filled")),
        "outbox": OutboxMessage.objects.count(),
        "deposits": Deposit.objects.count(),
        "withdrawals": Withdrawal.objects.count(),
    }


@pytest.fixture
def unchanged() -> Callable[[], object]:
    """`with unchanged(): ...` fails if anything about money changed inside the block."""
    from contextlib import contextmanager

    @contextmanager
    def check() -> Iterator[None]:
        before = money_state()
        yield
        assert money_state() == before

    return check


@pytest.fixture
def kafka_settings() -> dict:
    return settings.KAFKA


@pytest.fixture(scope="session")
def exchange(tmp_path_factory) -> Iterator[Exchange]:
    """One running exchange (API, matching worker, settlement consumer, Celery worker and beat as real
    processes) shared by the end-to-end and browser tests; each test uses traders of its own. Its
    admin asks for a second factor, as in production."""
    running = Exchange(tmp_path_factory.mktemp("exchange"), extra_env={"ADMIN_REQUIRE_2FA": "true"})
    try:
        running.setup()
        running.start()
        yield running
    except BaseException:
        print(running.logs())
        raise
    finally:
        running.teardown()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and "exchange" in item.fixturenames:
        report.sections.append(("process logs", item.funcargs["exchange"].logs()))
