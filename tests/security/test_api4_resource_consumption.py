"""API4:2023 Unrestricted resource consumption: what one client can make the exchange hold or do.

JSON nested past a small depth and bodies past `DATA_UPLOAD_MAX_MEMORY_SIZE` are refused with a JSON
4xx before any view reads them, with or without a token; a user holds at most
`MAX_OPEN_ORDERS_PER_USER` live orders, also when they place them all at once."""

import json

import pytest
from django.db import connection

from matching.models import Order
from tests.concurrency import at_once

pytestmark = pytest.mark.django_db


def nested(depth: int, *, kind: str = "list") -> str:
    return ("[" * depth + "]" * depth) if kind == "list" else ('{"a":' * depth + "1" + "}" * depth)


# --- JSON depth and size ----------------------------------------------------------------------------


def test_a_body_of_200_kb_of_open_brackets_is_a_400_without_a_token(api, unchanged):
    with unchanged():
        answer = api.post("/api/auth/register/", "[" * 200_000, content_type="application/json")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "json_too_deep"


@pytest.mark.parametrize("kind", ["list", "object"])
def test_json_nested_deeper_than_32_levels_is_refused(api, kind):
    answer = api.post("/api/auth/token/", nested(33, kind=kind), content_type="application/json")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "json_too_deep"


@pytest.mark.parametrize("kind", ["list", "object"])
def test_json_nested_32_levels_deep_is_parsed(api, kind):
    answer = api.post("/api/auth/token/", nested(32, kind=kind), content_type="application/json")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] != "json_too_deep"


def test_deep_json_to_an_authenticated_endpoint_is_refused_too(btc_usdt, make_user, client_for, unchanged):
    body = json.dumps({"cid": "deep_json_00000001", "symbol": "BTC_USDT", "price": json.loads(nested(40))})
    client = client_for(make_user())
    with unchanged():
        answer = client.post("/api/orders/", body, content_type="application/json")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "json_too_deep"


def test_a_body_over_the_upload_limit_is_a_413_json_error(api, settings, unchanged):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    body = json.dumps({"username": "big_body", "password": "x" * 2000, "email": "big@example.com"})
    with unchanged():
        answer = api.post("/api/auth/register/", body, content_type="application/json")
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "request_too_large"


def test_a_body_just_under_the_upload_limit_is_read(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    body = json.dumps({"username": "small_body", "password": "Correct-horse-42", "email": "small@example.com"})
    assert api.post("/api/auth/register/", body, content_type="application/json").status_code == 201


def test_a_custody_body_over_the_upload_limit_is_a_413_json_error(btc_usdt, custody, settings, unchanged):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    with unchanged():
        answer = custody("deposits/", {"asset": "BTC", "address": "a" * 2000, "amount": "1", "tx_id": "0x1"})
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "request_too_large"


# --- Open orders ------------------------------------------------------------------------------------


@pytest.fixture
def trader(btc_usdt, make_user, fund):
    user = make_user()
    fund(user, "USDT", "100000")
    fund(user, "BTC", "10")
    return user


def place(client, number: int, **changes: object):
    body = {
        "cid": f"open_cap_{number:010d}",
        "symbol": "BTC_USDT",
        "side": "Buy",
        "order_type": "Limit",
        "price": "100",
        "quantity": "0.5",
        **changes,
    }
    return client.post("/api/orders/", body, format="json")


def test_an_order_past_the_open_order_cap_is_a_409_and_changes_nothing(trader, client_for, settings, unchanged):
    settings.MAX_OPEN_ORDERS_PER_USER = 3
    client = client_for(trader)
    assert [place(client, n).status_code for n in range(3)] == [201, 201, 201]
    with unchanged():
        answer = place(client, 3)
        sell = place(client, 4, side="Sell", price="90000")
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "too_many_open_orders"
    assert (sell.status_code, sell.json()["error"]["code"]) == (409, "too_many_open_orders")


def test_the_cap_counts_only_live_orders(trader, client_for, settings):
    settings.MAX_OPEN_ORDERS_PER_USER = 2
    client = client_for(trader)
    first, second = place(client, 0).json(), place(client, 1).json()
    Order.objects.filter(pk=first["id"]).update(status=Order.Status.OPEN)
    Order.objects.filter(pk=second["id"]).update(status=Order.Status.PARTIALLY_FILLED)
    assert place(client, 2).status_code == 409
    Order.objects.filter(pk=first["id"]).update(status=Order.Status.FILLED, locked=0)
    assert place(client, 3).status_code == 201
    Order.objects.filter(user=trader).update(status=Order.Status.CANCELLED, locked=0)
    assert place(client, 4).status_code == 201
    Order.objects.filter(user=trader, status=Order.Status.PENDING).update(status=Order.Status.REJECTED, locked=0)
    assert place(client, 5).status_code == 201


def test_the_cap_is_per_user(trader, make_user, fund, client_for, settings):
    settings.MAX_OPEN_ORDERS_PER_USER = 1
    other = make_user()
    fund(other, "USDT", "1000")
    assert place(client_for(trader), 0).status_code == 201
    assert place(client_for(other), 0).status_code == 201


def test_a_repeated_cid_at_the_cap_still_returns_the_first_order(trader, client_for, settings):
    settings.MAX_OPEN_ORDERS_PER_USER = 1
    client = client_for(trader)
    first = place(client, 0)
    again = place(client, 0)
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])


@pytest.mark.django_db(transaction=True)
def test_orders_placed_at_once_never_pass_the_cap_together(btc_usdt, make_user, fund, client_for, settings):
    settings.MAX_OPEN_ORDERS_PER_USER = 2
    user = make_user()
    fund(user, "USDT", "100000")
    assert place(client_for(user), 0).status_code == 201
    clients = [client_for(user) for _ in range(8)]
    answers = at_once([lambda c=c, n=n: place(c, n + 1) for n, c in enumerate(clients)])
    assert sorted(a.status_code for a in answers) == [201] + [409] * 7, [a.json() for a in answers]
    assert Order.objects.filter(user=user, status__in=Order.LIVE_STATUSES).count() == 2


@pytest.fixture
def slow_order_writes():
    """Every statement that inserts orders waits half a second first, inside its transaction: a
    placement has counted its owner's live orders and not yet written its own for that long, so two
    placements that do not wait for each other both count the same."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION test_order_insert_pause() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_sleep(0.5); RETURN NULL; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER test_order_insert_pause BEFORE INSERT ON matching_order "
            "FOR EACH STATEMENT EXECUTE FUNCTION test_order_insert_pause()"
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER test_order_insert_pause ON matching_order")
        cursor.execute("DROP FUNCTION test_order_insert_pause()")


@pytest.mark.django_db(transaction=True)
def test_a_buy_and_a_sell_placed_at_once_never_pass_the_cap_together(
    btc_usdt, make_user, fund, client_for, settings, slow_order_writes
):
    """A buy locks the quote asset's accounts and a sell the base asset's, so the account locks do
    not make them wait for each other: the placement also locks its owner."""
    settings.MAX_OPEN_ORDERS_PER_USER = 2
    user = make_user()
    fund(user, "USDT", "100000")
    fund(user, "BTC", "10")
    assert place(client_for(user), 0).status_code == 201
    buyer, seller = client_for(user), client_for(user)
    answers = at_once([lambda: place(buyer, 1), lambda: place(seller, 2, side="Sell", price="90000")])
    assert sorted(a.status_code for a in answers) == [201, 409], [a.json() for a in answers]
    assert Order.objects.filter(user=user, status__in=Order.LIVE_STATUSES).count() == 2
