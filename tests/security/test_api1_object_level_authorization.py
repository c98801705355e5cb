"""API1:2023 Broken Object Level Authorization.

Every object a trader can name by id (orders) or list (orders, fills, deposits, withdrawals, balances)
is looked up through the signed-in user, never through the id alone. Two traders with the same kinds of
objects each see and touch only their own; another's id answers 404, exactly like an id that does not
exist, so ids cannot be probed either.
"""

from decimal import Decimal

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from accounts.models import Asset, Deposit, Withdrawal
from matching.models import Order
from matching.services import order_place
from settlement.models import Trade

pytestmark = pytest.mark.django_db

ADDRESS = "0x52908400098527886E0F7030069857D2E4169EE7"


def _trader(make_user, fund, name: str):
    user = make_user(username=name)
    fund(user, "USDT", "1000")
    fund(user, "BTC", "1")
    return user


def _order(user, cid: str, side: str) -> Order:
    order, _ = order_place(
        user=user,
        cid=cid.ljust(16, "0"),
        symbol="BTC_USDT",
        side=side,
        order_type="limit",
        price=Decimal("100"),
        quantity=Decimal("0.1"),
    )
    return order


@pytest.fixture
def two_traders(btc_usdt, make_user, fund, client_for):
    Asset.objects.filter(pk="USDT").update(address_regex=r"^0x[0-9a-fA-F]{40}$")
    alice, bob = _trader(make_user, fund, "alice"), _trader(make_user, fund, "bob")
    for user in (alice, bob):
        client_for(user).post("/api/withdrawals/", {"asset": "USDT", "amount": "5", "address": ADDRESS}, format="json")
        client_for(user).post("/api/deposits/", {"asset": "USDT", "amount": "7"}, format="json")
    buy, sell = _order(alice, "alice-buy", "buy"), _order(bob, "bob-sell", "sell")
    Trade.objects.create(
        market=btc_usdt,
        seq=1,
        price=Decimal("100"),
        quantity=Decimal("0.1"),
        quote_amount=Decimal("10"),
        taker_side="buy",
        buy_order=buy,
        sell_order=sell,
        buyer=alice,
        seller=bob,
        buyer_fee=Decimal(0),
        seller_fee=Decimal(0),
        executed_at=timezone.now(),
    )
    _order(bob, "bob-rests", "sell")
    return alice, bob


def test_lists_hold_only_the_signed_in_users_objects(two_traders, client_for):
    alice, _ = two_traders
    client = client_for(alice)
    orders = client.get("/api/orders/").json()
    assert {o["id"] for o in orders} == set(Order.objects.filter(user=alice).values_list("pk", flat=True))
    deposits = client.get("/api/deposits/").json()
    assert {d["id"] for d in deposits} == set(Deposit.objects.filter(user=alice).values_list("pk", flat=True))
    withdrawals = client.get("/api/withdrawals/").json()
    assert {w["id"] for w in withdrawals} == set(Withdrawal.objects.filter(user=alice).values_list("pk", flat=True))
    fills = client.get("/api/trades/").json()
    bought = Order.objects.get(cid__startswith="alice-buy")
    assert [(f["side"].lower(), f["order_id"]) for f in fills] == [("buy", bought.pk)]
    # Alice's balance is her own: Bob's resting sell locked BTC of his, none of hers.
    balances = {b["asset"]: b for b in client.get("/api/balances/").json()}
    assert balances["BTC"]["locked"] == "0"


def test_another_users_order_answers_like_one_that_does_not_exist(two_traders, client_for, unchanged):
    alice, bob = two_traders
    theirs = Order.objects.filter(user=bob).first()
    missing = Order.objects.order_by("-pk").first().pk + 1000
    client = client_for(alice)
    with unchanged():
        for order_id in (theirs.pk, missing):
            for method in (client.get, client.delete):
                answer = method(f"/api/orders/{order_id}/")
                assert answer.status_code == 404
                assert answer.json()["error"]["code"] == "not_found"
    theirs.refresh_from_db()
    assert theirs.cancel_requested_at is None


def test_cancel_all_in_a_market_cancels_only_the_callers_orders(two_traders, client_for):
    alice, bob = two_traders
    answer = client_for(alice).delete("/api/orders/?symbol=BTC_USDT")
    assert answer.status_code == 202
    assert answer.json()["count"] == Order.objects.filter(user=alice, status__in=Order.LIVE_STATUSES).count()
    assert not Order.objects.filter(user=bob, cancel_requested_at__isnull=False).exists()


# Endpoints anyone may call; every other API path must refuse a request without credentials.
PUBLIC = {
    "/api/auth/register/",
    "/api/auth/token/",
    "/api/auth/token/refresh/",
    "/api/markets/",
    "/api/markets/BTC_USDT/depth/",
    "/api/markets/BTC_USDT/trades/",
    "/api/schema/",
    "/api/docs/",
}


def _api_paths() -> list[str]:
    paths: list[str] = []

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            route = str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + route)
            elif isinstance(pattern, URLPattern):
                path = (prefix + route).replace("<str:symbol>", "BTC_USDT").replace("<int:order_id>", "1")
                paths.append("/" + path)

    walk(get_resolver().url_patterns, "")
    return [p for p in paths if p.startswith("/api/")]


def test_every_private_endpoint_refuses_a_caller_without_credentials(btc_usdt, api):
    paths = _api_paths()
    assert "/api/orders/1/" in paths and "/api/custody/deposits/" in paths  # the walk found the routes
    for path in sorted(set(paths) - PUBLIC):
        for method in ("get", "post", "delete"):
            answer = getattr(api, method)(path)
            assert answer.status_code in (401, 405), (method, path, answer.status_code)
            if answer.status_code == 401:
                assert answer.json()["error"]["code"] in {"not_authenticated", "missing_signature"}, path
