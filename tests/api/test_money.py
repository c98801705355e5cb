from decimal import Decimal

import pytest

from accounts.models import Account, Asset, Deposit, Withdrawal
from accounts.services import deposit_credit, withdrawal_approve, withdrawal_reject

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


def test_deposit_is_recorded_then_credited_once_by_the_task(trader, client_for, django_capture_on_commit_callbacks):
    client = client_for(trader)
    with django_capture_on_commit_callbacks() as callbacks:
        answer = client.post("/api/deposits/", {"asset": "BTC", "amount": "0.5", "tx_id": "0xabc"}, format="json")
    assert answer.status_code == 201
    assert answer.json()["status"] == "pending"
    assert len(callbacks) == 1  # the credit task is enqueued only after commit

    deposit_id = answer.json()["id"]
    deposit_credit(deposit_id=deposit_id)
    deposit_credit(deposit_id=deposit_id)

    assert balances(client)["BTC"] == ("0.5", "0")
    assert Deposit.objects.get().status == "credited"


def test_a_repeated_tx_id_returns_the_first_deposit(trader, client_for):
    client = client_for(trader)
    first = client.post("/api/deposits/", {"asset": "BTC", "amount": "0.5", "tx_id": "0xabc"}, format="json")
    again = client.post("/api/deposits/", {"asset": "BTC", "amount": "9", "tx_id": "0xabc"}, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert Deposit.objects.count() == 1


def test_another_users_tx_id_is_a_conflict(trader, make_user, client_for, unchanged):
    client_for(trader).post("/api/deposits/", {"asset": "BTC", "amount": "0.5", "tx_id": "0xabc"}, format="json")
    with unchanged():
        answer = client_for(make_user()).post(
            "/api/deposits/", {"asset": "BTC", "amount": "0.5", "tx_id": "0xabc"}, format="json"
        )
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "duplicate_tx_id"


def test_a_deposit_above_the_auto_credit_limit_waits_for_an_operator(trader, client_for):
    Asset.objects.filter(pk="BTC").update(auto_credit_limit=Decimal("1"))
    answer = client_for(trader).post("/api/deposits/", {"asset": "BTC", "amount": "2"}, format="json")
    assert deposit_credit(deposit_id=answer.json()["id"]).status == "awaiting_approval"
    assert balances(client_for(trader))["BTC"] == ("0", "0")


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"asset": "BTC", "amount": "0"}, "invalid_amount"),
        ({"asset": "BTC", "amount": "-5"}, "invalid_amount"),
        ({"asset": "BTC", "amount": "0.000000001"}, "invalid_precision"),
        ({"asset": "XYZ", "amount": "1"}, "unknown_asset"),
        ({"asset": "BTC"}, "invalid"),
        ({"asset": "BTC", "amount": "lots"}, "invalid"),
    ],
)
def test_bad_deposit_is_a_400_and_changes_nothing(trader, client_for, unchanged, payload, code):
    with unchanged():
        answer = client_for(trader).post("/api/deposits/", payload, format="json")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == code


def test_withdrawal_locks_then_approval_sends_the_funds_out(trader, client_for, fund, make_user):
    fund(trader, "USDT", "100")
    client = client_for(trader)
    answer = client.post("/api/withdrawals/", {"asset": "USDT", "amount": "40", "address": "T9xyz"}, format="json")
    assert answer.status_code == 201
    assert answer.json()["status"] == "pending"
    assert balances(client)["USDT"] == ("60", "40")

    operator = make_user(is_staff=True)
    withdrawal_approve(withdrawal_id=answer.json()["id"], acting_user=operator)
    assert balances(client)["USDT"] == ("60", "0")
    external = Account.objects.get(user=None, asset_id="USDT", kind="withdrawals")
    assert external.balance == Decimal("40")


def test_rejected_withdrawal_returns_the_funds(trader, client_for, fund, make_user):
    fund(trader, "USDT", "100")
    client = client_for(trader)
    answer = client.post("/api/withdrawals/", {"asset": "USDT", "amount": "40", "address": "T9xyz"}, format="json")
    withdrawal_reject(withdrawal_id=answer.json()["id"], acting_user=make_user(is_staff=True), note="bad address")
    assert balances(client)["USDT"] == ("100", "0")
    assert Withdrawal.objects.get().status == "rejected"


def test_withdrawal_above_the_available_balance_is_refused_and_nothing_is_locked(trader, client_for, fund, unchanged):
    fund(trader, "USDT", "100")
    with unchanged():
        answer = client_for(trader).post(
            "/api/withdrawals/", {"asset": "USDT", "amount": "100.01", "address": "T9xyz"}, format="json"
        )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "insufficient_funds"
