"""Schemathesis against the API's own OpenAPI schema: whatever a client sends, in or out of the
schema, the answer is never a server error, and no money enters or leaves the exchange's books."""

from decimal import Decimal

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from accounts.models import Account
from accounts.services import login_start
from exchange.wsgi import application

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)


@pytest.fixture
def in_process(db, btc_usdt, eth_usdt):
    # As Django's test client does: requests served in-process must not close the test's
    # connection (and its transaction) when they finish.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def bearer(in_process, make_user, fund) -> dict[str, str]:
    user = make_user()
    fund(user, "USDT", "100000")
    fund(user, "BTC", "10")
    return {"Authorization": f"Bearer {login_start(user=user)[1]}"}


def outside_money() -> dict[tuple[str, str], Decimal]:
    """The accounts money enters by: custody's deposits and operators' approved adjustments. A
    user's own request, whatever it is, never moves them."""
    kinds = [Account.Kind.DEPOSITS, Account.Kind.ADJUSTMENTS]
    return {(a, k): b for a, k, b in Account.objects.filter(kind__in=kinds).values_list("asset_id", "kind", "balance")}


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_makes_the_api_fail_or_moves_money_across_the_edge(case, bearer):
    before = outside_money()
    case.call_and_validate(headers=bearer, checks=[not_a_server_error])
    assert outside_money() == before
