"""Deposits as a user sees them: an address to send to, and declarations that credit nothing."""

import importlib
from decimal import Decimal

import pytest

from accounts.models import Account, Asset, Deposit, DepositAddress
from tests.concurrency import at_once

pytestmark = pytest.mark.django_db


def balances(client) -> dict[str, tuple[str, str]]:
    return {b["asset"]: (b["available"], b["locked"]) for b in client.get("/api/balances/").json()}


@pytest.fixture
def trader(btc_usdt, make_user):
    return make_user()


def test_balances_list_every_asset_with_decimal_strings(trader, client_for, fund):
    fund(trader, "USDT", "1234.5")
    assert client_for(trader).get("/api/balances/").json() == [
        {"asset": "BTC", "available": "0", "locked": "0"},
        {"asset": "USDT", "available": "1234.5", "locked": "0"},
    ]


def test_the_deposit_address_is_the_same_every_time_and_differs_per_user_and_asset(trader, make_user, client_for):
    client = client_for(trader)
    first = client.get("/api/deposits/address/", {"asset": "BTC"})
    assert first.status_code == 200
    assert first.json()["asset"] == "BTC"
    assert client.get("/api/deposits/address/", {"asset": "BTC"}).json() == first.json()
    assert client.get("/api/deposits/address/", {"asset": "USDT"}).json()["address"] != first.json()["address"]
    other = client_for(make_user()).get("/api/deposits/address/", {"asset": "BTC"}).json()
    assert other["address"] != first.json()["address"]
    assert DepositAddress.objects.count() == 3


def test_an_unknown_asset_has_no_address(trader, client_for):
    answer = client_for(trader).get("/api/deposits/address/", {"asset": "DOGE"})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "unknown_asset"


@pytest.mark.parametrize("amount", ["0.5", "10000000", "99999999999"])
def test_a_declared_deposit_credits_nothing_whatever_its_size(trader, client_for, amount):
    client = client_for(trader)
    answer = client.post("/api/deposits/", {"asset": "USDT", "amount": amount, "tx_id": "0xabc"}, format="json")
    assert answer.status_code == 201
    assert answer.json()["status"] == "declared"
    assert answer.json()["amount"] == amount
    assert balances(client)["USDT"] == ("0", "0")
    assert not Account.objects.filter(kind=Account.Kind.DEPOSITS).exclude(balance=0).exists()


def test_a_declared_deposit_stays_uncredited_after_every_task_and_sweep_has_run(
    trader, client_for, django_capture_on_commit_callbacks, settings
):
    from exchange.celery import app

    # Whatever the request enqueues runs at once, as a Celery worker would run it.
    app.conf.task_always_eager = True
    try:
        client = client_for(trader)
        with django_capture_on_commit_callbacks(execute=True):
            answer = client.post("/api/deposits/", {"asset": "USDT", "amount": "10000000"}, format="json")
        assert answer.status_code == 201
        # And every periodic task beat runs, once.
        for entry in settings.CELERY_BEAT_SCHEDULE.values():
            module, _, name = entry["task"].rpartition(".")
            getattr(importlib.import_module(module), name).apply()
    finally:
        app.conf.task_always_eager = False
    assert balances(client)["USDT"] == ("0", "0")
    assert client.get("/api/deposits/").json()[0]["status"] == "declared"


def test_declaring_the_same_transaction_again_returns_the_first_declaration(trader, client_for):
    client = client_for(trader)
    first = client.post("/api/deposits/", {"asset": "BTC", "amount": "0.5", "tx_id": "0xabc"}, format="json")
    again = client.post("/api/deposits/", {"asset": "BTC", "amount": "9", "tx_id": "0xabc"}, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert Deposit.objects.count() == 1


def test_declaring_another_users_transaction_neither_conflicts_nor_touches_it(trader, make_user, client_for, fund):
    victim = make_user()
    fund(victim, "BTC", "2", tx_id="0xvictim")
    answer = client_for(trader).post(
        "/api/deposits/", {"asset": "BTC", "amount": "2", "tx_id": "0xvictim"}, format="json"
    )
    assert answer.status_code == 201
    assert answer.json()["status"] == "declared"
    assert Deposit.objects.get(tx_id="0xvictim").user == victim
    assert balances(client_for(trader))["BTC"] == ("0", "0")


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"asset": "BTC", "amount": "0"}, "invalid_amount"),
        ({"asset": "BTC", "amount": "-5"}, "invalid_amount"),
        ({"asset": "BTC", "amount": "0.000000001"}, "invalid_precision"),
        ({"asset": "XYZ", "amount": "1"}, "unknown_asset"),
        ({"asset": "BTC"}, "invalid"),
        ({"asset": "BTC", "amount": "lots"}, "invalid_amount"),
        ({"asset": "BTC", "amount": "1", "tx_id": "has space"}, "invalid"),
    ],
)
def test_a_bad_declaration_is_a_400_and_changes_nothing(trader, client_for, unchanged, payload, code):
    with unchanged():
        answer = client_for(trader).post("/api/deposits/", payload, format="json")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == code


def test_an_idempotency_key_repeated_answers_the_first_declaration(trader, client_for):
    client = client_for(trader)
    body = {"asset": "BTC", "amount": "0.5"}
    first = client.post("/api/deposits/", body, format="json", HTTP_IDEMPOTENCY_KEY="dep-1")
    again = client.post("/api/deposits/", body, format="json", HTTP_IDEMPOTENCY_KEY="dep-1")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert Deposit.objects.count() == 1
    # Without the key, the same body is a second declaration.
    assert client.post("/api/deposits/", body, format="json").json()["id"] != first.json()["id"]


def test_an_idempotency_key_with_another_body_is_a_422_and_changes_nothing(trader, client_for, unchanged):
    client = client_for(trader)
    client.post("/api/deposits/", {"asset": "BTC", "amount": "0.5"}, format="json", HTTP_IDEMPOTENCY_KEY="dep-1")
    with unchanged():
        answer = client.post(
            "/api/deposits/", {"asset": "BTC", "amount": "0.6"}, format="json", HTTP_IDEMPOTENCY_KEY="dep-1"
        )
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "idempotency_key_reused"


def test_idempotency_keys_belong_to_their_user(trader, make_user, client_for):
    body = {"asset": "BTC", "amount": "0.5"}
    mine = client_for(trader).post("/api/deposits/", body, format="json", HTTP_IDEMPOTENCY_KEY="k")
    theirs = client_for(make_user()).post("/api/deposits/", body, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]


def test_a_refused_request_does_not_use_up_its_idempotency_key(trader, client_for):
    client = client_for(trader)
    refused = client.post("/api/deposits/", {"asset": "XYZ", "amount": "1"}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert refused.status_code == 400
    fixed = client.post("/api/deposits/", {"asset": "XYZ", "amount": "1"}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert fixed.status_code == 400  # asked again, not replayed from a cache
    right = client.post("/api/deposits/", {"asset": "BTC", "amount": "1"}, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert right.status_code == 201


@pytest.mark.parametrize("key", ["", "x" * 256, "naïve"])
def test_a_malformed_idempotency_key_is_refused(trader, client_for, unchanged, key):
    with unchanged():
        answer = client_for(trader).post(
            "/api/deposits/", {"asset": "BTC", "amount": "1"}, format="json", HTTP_IDEMPOTENCY_KEY=key
        )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_idempotency_key"


@pytest.mark.django_db(transaction=True)
def test_the_same_idempotency_key_sent_twice_at_once_makes_one_deposit(btc_usdt, make_user, client_for):
    trader = make_user()
    body = {"asset": "BTC", "amount": "1"}
    answers = at_once(
        [
            lambda c=c: c.post("/api/deposits/", body, format="json", HTTP_IDEMPOTENCY_KEY="race")
            for c in (client_for(trader), client_for(trader))
        ]
    )
    assert [a.status_code for a in answers] == [201, 201]
    assert answers[0].json()["id"] == answers[1].json()["id"]
    assert Deposit.objects.filter(user=trader).count() == 1
    assert Asset.objects.get(pk="BTC").deposits.count() == 1
    assert Decimal(answers[0].json()["amount"]) == 1
