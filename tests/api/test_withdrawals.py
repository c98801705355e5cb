"""Withdrawals: the asset's rules, two people above a threshold, and nobody approving their own."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts.models import Account, Asset, AuditLog, LedgerLine, Withdrawal
from accounts.services import user_restrict, withdrawal_approve, withdrawal_reject
from core.errors import Conflict, Forbidden, InvalidRequest
from tests.concurrency import at_once
from tests.fixtures import staff_user

pytestmark = pytest.mark.django_db

ADDRESS = "0x52908400098527886E0F7030069857D2E4169EE7"


def balances(client) -> dict[str, tuple[str, str]]:
    return {b["asset"]: (b["available"], b["locked"]) for b in client.get("/api/balances/").json()}


@pytest.fixture
def trader(btc_usdt, make_user, fund):
    Asset.objects.filter(pk="USDT").update(
        withdrawal_min=Decimal("10"),
        withdrawal_fee=Decimal("1"),
        withdrawal_daily_limit=Decimal("500"),
        withdrawal_four_eyes_threshold=Decimal("100"),
        address_regex=r"^0x[0-9a-fA-F]{40}$",
    )
    user = make_user()
    fund(user, "USDT", "1000")
    return user


def withdraw(client, amount: str = "40", **extra: object):
    return client.post(
        "/api/withdrawals/", {"asset": "USDT", "amount": amount, "address": ADDRESS}, format="json", **extra
    )


def test_a_withdrawal_locks_the_amount_and_the_fee(trader, client_for):
    client = client_for(trader)
    answer = withdraw(client)
    assert answer.status_code == 201
    assert (answer.json()["status"], answer.json()["amount"], answer.json()["fee"]) == ("requested", "40", "1")
    assert balances(client)["USDT"] == ("959", "41")


def test_the_fee_goes_to_the_fee_account_when_the_withdrawal_completes(trader, client_for, operators, custody):
    answer = withdraw(client_for(trader))
    withdrawal_approve(withdrawal_id=answer.json()["id"], acting_user=operators.finance)
    custody("withdrawals/", {"withdrawal_id": answer.json()["id"], "status": "completed", "tx_id": "0xdone"})
    assert balances(client_for(trader))["USDT"] == ("959", "0")
    assert Account.objects.get(user=None, asset_id="USDT", kind="fees").balance == Decimal("1")
    assert Account.objects.get(user=None, asset_id="USDT", kind="withdrawals").balance == Decimal("40")
    lines = LedgerLine.objects.filter(
        entry__reference=f"withdrawal:{answer.json()['id']}", entry__kind="withdrawal_send"
    )
    assert sorted(line.amount for line in lines) == [Decimal("-41"), Decimal("1"), Decimal("40")]


@pytest.mark.parametrize(
    ("setup", "body", "status", "code"),
    [
        ({"withdrawals_enabled": False}, {}, 403, "withdrawals_disabled"),
        ({}, {"amount": "9.99"}, 400, "below_minimum"),
        ({}, {"address": "0x123"}, 400, "invalid_address"),
        ({}, {"address": ADDRESS + "00"}, 400, "invalid_address"),
        ({}, {"address": "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"}, 400, "invalid_address"),
        ({}, {"amount": "501"}, 400, "daily_limit_exceeded"),
        ({}, {"amount": "0.000000001"}, 400, "invalid_precision"),
        ({}, {"amount": "0"}, 400, "invalid_amount"),
        ({}, {"amount": "999.5"}, 400, "daily_limit_exceeded"),
        ({"withdrawal_daily_limit": None}, {"amount": "999.5"}, 400, "insufficient_funds"),
        ({}, {"asset": "DOGE"}, 400, "unknown_asset"),
    ],
)
def test_a_withdrawal_against_the_assets_rules_is_refused_with_a_code_and_changes_nothing(
    trader, client_for, unchanged, setup, body, status, code
):
    Asset.objects.filter(pk="USDT").update(**setup)
    with unchanged():
        answer = client_for(trader).post(
            "/api/withdrawals/", {"asset": "USDT", "amount": "40", "address": ADDRESS, **body}, format="json"
        )
    assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)


def test_the_daily_limit_counts_the_last_24_hours_and_not_refused_withdrawals(trader, client_for, operators):
    client = client_for(trader)
    old, rejected = withdraw(client, "300").json(), withdraw(client, "150").json()
    assert withdraw(client, "100").json()["error"]["code"] == "daily_limit_exceeded"
    withdrawal_reject(withdrawal_id=rejected["id"], reason="suspicious", acting_user=operators.finance)
    assert withdraw(client, "100").status_code == 201  # 300 + 100: the rejected 150 no longer counts
    Withdrawal.objects.filter(pk=old["id"]).update(created_at=timezone.now() - timedelta(hours=24, seconds=1))
    assert withdraw(client, "300").status_code == 201  # the 300 fell out of the window


def test_a_restricted_user_cannot_withdraw(trader, client_for, operators, unchanged):
    user_restrict(user=trader, kind="withdrawals", reason="court order", acting_user=operators.compliance)
    with unchanged():
        answer = withdraw(client_for(trader))
    assert (answer.status_code, answer.json()["error"]["code"]) == (403, "withdrawals_restricted")


def test_below_the_four_eyes_threshold_one_approval_hands_it_to_custody(trader, client_for, operators, custody):
    answer = withdraw(client_for(trader), "100")
    approved = withdrawal_approve(withdrawal_id=answer.json()["id"], acting_user=operators.finance)
    assert approved.status == "approved"
    assert [w["id"] for w in custody("withdrawals/", method="GET").json()] == [approved.pk]


def test_above_the_threshold_a_second_person_must_approve(trader, client_for, operators, custody):
    withdrawal = Withdrawal.objects.get(pk=withdraw(client_for(trader), "100.01").json()["id"])
    assert withdrawal.needs_second_approval
    withdrawal_approve(withdrawal_id=withdrawal.pk, acting_user=operators.finance)
    assert custody("withdrawals/", method="GET").json() == []

    with pytest.raises(Forbidden) as refused:
        withdrawal_approve(withdrawal_id=withdrawal.pk, acting_user=operators.finance)
    assert refused.value.code == "second_approval_same_person"

    second = withdrawal_approve(withdrawal_id=withdrawal.pk, acting_user=operators.finance2)
    assert (second.status, second.approved_by, second.second_approved_by) == (
        "second_approved",
        operators.finance,
        operators.finance2,
    )
    assert [w["id"] for w in custody("withdrawals/", method="GET").json()] == [withdrawal.pk]
    with pytest.raises(Conflict):  # two approvals are all there is
        withdrawal_approve(withdrawal_id=withdrawal.pk, acting_user=staff_user("finance_three", "approve_withdrawal"))
    assert list(AuditLog.objects.filter(target=f"withdrawal:{withdrawal.pk}").values_list("action", "actor")) == [
        ("withdrawal_second_approve", operators.finance2.pk),
        ("withdrawal_approve", operators.finance.pk),
    ]


def test_nobody_approves_their_own_withdrawal(trader, client_for, operators, fund, unchanged):
    fund(operators.finance, "USDT", "500")
    answer = withdraw(client_for(operators.finance))
    with unchanged(), pytest.raises(Forbidden) as refused:
        withdrawal_approve(withdrawal_id=answer.json()["id"], acting_user=operators.finance)
    assert refused.value.code == "own_withdrawal"


def test_the_database_refuses_a_self_approval_whatever_the_code_does(trader, client_for):
    from django.db import IntegrityError, transaction

    withdrawal = Withdrawal.objects.get(pk=withdraw(client_for(trader)).json()["id"])
    with pytest.raises(IntegrityError), transaction.atomic():
        Withdrawal.objects.filter(pk=withdrawal.pk).update(approved_by=trader, status="approved")


def test_staff_without_the_permission_cannot_approve_or_reject(trader, client_for, operators, unchanged):
    withdrawal_id = withdraw(client_for(trader)).json()["id"]
    with unchanged():
        for act in (
            lambda: withdrawal_approve(withdrawal_id=withdrawal_id, acting_user=operators.support),
            lambda: withdrawal_reject(withdrawal_id=withdrawal_id, reason="no", acting_user=operators.markets),
        ):
            with pytest.raises(Forbidden) as refused:
                act()
            assert refused.value.code == "permission_denied"


def test_a_rejection_needs_a_reason_and_returns_the_amount_and_fee(trader, client_for, operators, unchanged):
    client = client_for(trader)
    withdrawal_id = withdraw(client).json()["id"]
    with unchanged(), pytest.raises(InvalidRequest):
        withdrawal_reject(withdrawal_id=withdrawal_id, reason="  ", acting_user=operators.finance)
    rejected = withdrawal_reject(
        withdrawal_id=withdrawal_id, reason="address on a sanctions list", acting_user=operators.finance
    )
    assert (rejected.status, rejected.reason, rejected.rejected_by) == (
        "rejected",
        "address on a sanctions list",
        operators.finance,
    )
    assert balances(client)["USDT"] == ("1000", "0")
    with pytest.raises(Conflict):
        withdrawal_reject(withdrawal_id=withdrawal_id, reason="again", acting_user=operators.finance2)


def test_a_withdrawal_custody_has_can_no_longer_be_rejected(trader, client_for, operators, custody, unchanged):
    withdrawal_id = withdraw(client_for(trader)).json()["id"]
    withdrawal_approve(withdrawal_id=withdrawal_id, acting_user=operators.finance)
    custody("withdrawals/", {"withdrawal_id": withdrawal_id, "status": "sent"})
    with unchanged(), pytest.raises(Conflict):
        withdrawal_reject(withdrawal_id=withdrawal_id, reason="too late", acting_user=operators.finance2)


def test_an_idempotency_key_repeated_answers_the_first_withdrawal(trader, client_for):
    client = client_for(trader)
    first = withdraw(client, HTTP_IDEMPOTENCY_KEY="w-1")
    again = withdraw(client, HTTP_IDEMPOTENCY_KEY="w-1")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert Withdrawal.objects.count() == 1
    assert balances(client)["USDT"] == ("959", "41")


def test_an_idempotency_key_with_another_body_is_a_422(trader, client_for, unchanged):
    client = client_for(trader)
    withdraw(client, HTTP_IDEMPOTENCY_KEY="w-1")
    with unchanged():
        answer = withdraw(client, "41", HTTP_IDEMPOTENCY_KEY="w-1")
    assert (answer.status_code, answer.json()["error"]["code"]) == (422, "idempotency_key_reused")


@pytest.mark.django_db(transaction=True)
def test_the_same_idempotency_key_sent_at_once_withdraws_once(btc_usdt, make_user, fund, client_for):
    user = make_user()
    fund(user, "USDT", "1000")
    clients = [client_for(user) for _ in range(4)]
    answers = at_once([lambda c=c: withdraw(c, HTTP_IDEMPOTENCY_KEY="race") for c in clients])
    assert sorted(a.status_code for a in answers) == [201] * 4
    assert len({a.json()["id"] for a in answers}) == 1
    assert Withdrawal.objects.filter(user=user).count() == 1
    assert Account.objects.get(user=user, asset_id="USDT", kind="locked").balance == Decimal("40")
