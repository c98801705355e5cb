"""Fixtures of the suite, loaded by tests/conftest.py whenever Django is configured."""

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from decimal import Decimal
from types import SimpleNamespace

import pgtrigger
import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from accounts.custody import signature_header
from accounts.models import (
    Account,
    Asset,
    AuditLog,
    BalanceAdjustment,
    Deposit,
    IdempotencyKey,
    LedgerEntry,
    LedgerLine,
    User,
    UserRestriction,
    Withdrawal,
)
from accounts.services import deposit_address_get, deposit_report, login_start
from matching.models import Market, Order, OutboxMessage
from tests.e2e.harness import Exchange
from tests.factories import MarketFactory, UserFactory


@pytest.fixture(scope="session", autouse=True)
def _kafka_test_topics() -> Iterator[None]:
    """The run's own topics exist for the whole session and are deleted at its end."""
    yield
    from core.kafka import client, topics

    # Nothing was created when no test used Kafka.
    with suppress(Exception):
        client.delete_topics(topics.name(t) for t in topics.ALL)


@pytest.fixture
def throttle_window() -> None:
    """For a test that counts requests against a rate per minute: the rate limits are fixed windows
    of a minute (core/throttling.py), so requests made across the end of one are counted in two.
    With less than 5 s left of the current minute, wait for the next one."""
    left = 60 - time.time() % 60
    if left < 5:
        time.sleep(left + 0.05)


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


def custody_credit(user: User, asset: str, amount: str, **options: object) -> Deposit:
    """Credit `amount` of `asset` to `user` the only way money enters: custody reports a confirmed
    transfer to the user's deposit address."""
    asset_obj = Asset.objects.get(pk=asset)
    deposit, _ = deposit_report(
        asset=asset_obj,
        address=deposit_address_get(user=user, asset=asset_obj).address,
        amount=Decimal(amount),
        tx_id=str(options.get("tx_id") or f"tx-{uuid.uuid4().hex}"),
        confirmations=int(options.get("confirmations", asset_obj.deposit_confirmations)),
    )
    return deposit


@pytest.fixture
def fund() -> Callable[..., Deposit]:
    return custody_credit


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def client_for() -> Callable[[User], APIClient]:
    def build(user: User) -> APIClient:
        client = APIClient()
        _, access = login_start(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
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
        "deposits": sorted(Deposit.objects.values_list("id", "status", "user_id", "amount", "confirmations")),
        "withdrawals": sorted(Withdrawal.objects.values_list("id", "status", "approved_by", "second_approved_by")),
        "adjustments": sorted(BalanceAdjustment.objects.values_list("id", "status")),
        "restrictions": sorted(UserRestriction.objects.values_list("id", "lifted_at")),
        "idempotency_keys": IdempotencyKey.objects.count(),
        "audit": AuditLog.objects.count(),
        "users": sorted(User.objects.values_list("id", "trading_restricted", "withdrawals_restricted")),
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
    with Exchange.running(tmp_path_factory.mktemp("exchange"), ADMIN_REQUIRE_2FA="true") as running:
        yield running


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and "exchange" in item.fixturenames:
        report.sections.append(("process logs", item.funcargs["exchange"].logs()))


@pytest.fixture
def custody(api: APIClient) -> Callable[..., object]:
    """Call a custody webhook as custody does: the JSON body signed with the custody secret.

    `secret`, `skew` (seconds added to the timestamp) or a whole `header` replace the right ones, to
    play an impostor."""

    def call(path: str, body: dict | None = None, *, method: str = "POST", **forged: object):
        raw = json.dumps(body).encode() if body is not None else b""
        header = forged.get("header")
        if header is None:
            header = signature_header(
                raw,
                secret=str(forged.get("secret") or settings.CUSTODY_WEBHOOK_SECRETS[0]),
                timestamp=int(time.time()) + int(forged.get("skew", 0)),
            )
        extra = {"HTTP_X_CUSTODY_SIGNATURE": header} if header else {}
        return api.generic(method, f"/api/custody/{path}", raw, content_type="application/json", **extra)

    return call


def staff_user(username: str, *codenames: str) -> User:
    user = UserFactory(username=username, is_staff=True)
    permissions = Permission.objects.filter(codename__in=codenames)
    assert permissions.count() == len(codenames), f"unknown permission among {codenames}"
    user.user_permissions.add(*permissions)
    return User.objects.get(pk=user.pk)  # no stale permission cache


@pytest.fixture
def operators(db: None) -> SimpleNamespace:
    """Staff with the permissions of their role: two in finance, for the four-eyes rules."""
    finance = (
        *("approve_withdrawal", "release_deposit", "propose_adjustment", "approve_adjustment"),
        *("view_withdrawal", "view_deposit", "view_balanceadjustment", "view_user"),
    )
    markets = ("cancel_order", "halt_market", "resolve_alert", "add_market", "view_order", "view_market")
    return SimpleNamespace(
        finance=staff_user("finance_one", *finance),
        finance2=staff_user("finance_two", *finance),
        support=staff_user("support_one", "view_user", "view_order", "view_account"),
        compliance=staff_user("compliance_one", "restrict_user", "view_user"),
        markets=staff_user("markets_one", *markets),
    )


@pytest.fixture
def tamper() -> Callable[..., object]:
    """`with tamper(): ...` changes evidence the way only someone who can switch PostgreSQL's
    append-only triggers off could, to show that reconcile and the chain check still notice."""
    return lambda: pgtrigger.ignore(
        "accounts.LedgerEntry:ledger_entry_append_only",
        "accounts.LedgerLine:ledger_line_append_only",
        "settlement.EngineEvent:engine_event_not_deleted",
        "settlement.EngineEvent:engine_event_content_final",
        "settlement.EngineEvent:engine_event_settled_final",
        "settlement.Trade:trade_append_only",
    )
