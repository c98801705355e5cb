"""Custody's webhooks: the only way money enters, and the last word on withdrawals."""

import time
from decimal import Decimal

import pytest

from accounts.custody import signature_header
from accounts.models import Account, Asset, AuditLog, Deposit, LedgerEntry, User, Withdrawal
from accounts.services import deposit_address_get, withdrawal_approve

pytestmark = pytest.mark.django_db


@pytest.fixture
def trader(btc_usdt, make_user):
    return make_user()


@pytest.fixture
def address(trader) -> str:
    return deposit_address_get(user=trader, asset=Asset.objects.get(pk="BTC")).address


def available(user: User, asset: str) -> Decimal:
    account = Account.objects.filter(user=user, asset_id=asset, kind=Account.Kind.AVAILABLE).first()
    return account.balance if account else Decimal(0)


def report(to: str, **changes: object) -> dict:
    return {"asset": "BTC", "address": to, "amount": "1.5", "tx_id": "0xfeed", "confirmations": 1, **changes}


# --- Signatures -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("forged", "code"),
    [
        ({"header": ""}, "missing_signature"),
        ({"secret": "not-the-custody-secret"}, "bad_signature"),
        ({"skew": -400}, "stale_signature"),
        ({"skew": 400}, "stale_signature"),
        ({"header": "v1=abc"}, "bad_signature"),
        ({"header": "t=abc,v1=abc"}, "bad_signature"),
        ({"header": f"t={int(time.time())},v1=" + "0" * 64}, "bad_signature"),
    ],
)
def test_a_deposit_report_without_custodys_signature_is_401_and_records_nothing(
    address, custody, unchanged, forged, code
):
    with unchanged():
        answer = custody("deposits/", report(address), **forged)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == code


def test_a_signature_for_another_body_is_refused(address, custody, unchanged, settings):

    other = signature_header(
        b'{"amount": "0.01"}', secret=settings.CUSTODY_WEBHOOK_SECRETS[0], timestamp=int(time.time())
    )
    with unchanged():
        answer = custody("deposits/", report(address), header=other)
    assert answer.status_code == 401


def test_a_user_token_does_not_open_the_custody_webhook(trader, address, client_for, unchanged):
    with unchanged():
        answer = client_for(trader).post("/api/custody/deposits/", report(address), format="json")
    assert answer.status_code == 401


def test_while_rotating_either_secret_is_accepted(address, custody, settings):
    settings.CUSTODY_WEBHOOK_SECRETS = ["new-secret", "old-secret"]
    assert custody("deposits/", report(address, tx_id="0x1"), secret="old-secret").status_code == 201
    assert custody("deposits/", report(address, tx_id="0x2"), secret="new-secret").status_code == 201
    assert custody("deposits/", report(address, tx_id="0x3"), secret="retired-secret").status_code == 401


# --- Deposits -------------------------------------------------------------------------------------


def test_a_confirmed_deposit_is_credited_once_to_the_owner_of_the_address(trader, address, custody):
    first = custody("deposits/", report(address))
    assert first.status_code == 201
    assert first.json()["status"] == "credited"
    assert available(trader, "BTC") == Decimal("1.5")

    replay = custody("deposits/", report(address))
    assert replay.status_code == 200
    assert replay.json()["id"] == first.json()["id"]
    assert available(trader, "BTC") == Decimal("1.5")
    assert LedgerEntry.objects.filter(kind="deposit").count() == 1


def test_below_the_required_confirmations_a_deposit_is_confirming_and_credits_nothing(trader, address, custody):
    Asset.objects.filter(pk="BTC").update(deposit_confirmations=3)
    answer = custody("deposits/", report(address, confirmations=2))
    assert answer.status_code == 201
    assert answer.json()["status"] == "confirming"
    assert available(trader, "BTC") == 0

    assert custody("deposits/", report(address, confirmations=1)).json()["status"] == "confirming"
    done = custody("deposits/", report(address, confirmations=3))
    assert (done.status_code, done.json()["status"]) == (200, "credited")
    assert available(trader, "BTC") == Decimal("1.5")
    assert custody("deposits/", report(address, confirmations=9)).json()["status"] == "credited"
    assert available(trader, "BTC") == Decimal("1.5")


def test_a_deposit_to_an_unknown_address_is_kept_unmatched_and_credits_nobody(trader, custody):
    answer = custody("deposits/", report("bcrt1qnobodyownsthisaddressatall", confirmations=6))
    assert answer.status_code == 201
    assert answer.json()["status"] == "unmatched"
    deposit = Deposit.objects.get()
    assert deposit.user is None
    assert not Account.objects.exclude(balance=0).exists()
    assert AuditLog.objects.filter(action="deposit_unmatched", target=f"deposit:{deposit.pk}").exists()


def test_custodys_report_completes_the_users_declaration_of_the_same_transaction(trader, address, custody, client_for):
    declared = client_for(trader).post(
        "/api/deposits/", {"asset": "BTC", "amount": "1.4", "tx_id": "0xfeed"}, format="json"
    )
    answer = custody("deposits/", report(address))
    assert answer.status_code == 200
    assert answer.json()["id"] == declared.json()["id"]
    deposit = Deposit.objects.get()
    # Custody's amount counts, not the user's.
    assert (deposit.status, deposit.amount, deposit.declared_amount) == ("credited", Decimal("1.5"), Decimal("1.4"))
    assert available(trader, "BTC") == Decimal("1.5")


def test_a_declaration_without_a_transaction_is_matched_by_its_amount(trader, address, custody, client_for):
    declared = client_for(trader).post("/api/deposits/", {"asset": "BTC", "amount": "1.5"}, format="json")
    answer = custody("deposits/", report(address, tx_id="0xchain"))
    assert answer.json()["id"] == declared.json()["id"]
    assert Deposit.objects.get().tx_id == "0xchain"


def test_a_deposit_above_the_review_threshold_is_held_until_a_finance_operator_releases_it(
    trader, address, custody, operators
):
    from accounts.services import deposit_release

    Asset.objects.filter(pk="BTC").update(deposit_review_threshold=Decimal("1"))
    answer = custody("deposits/", report(address))
    assert answer.json()["status"] == "held"
    assert available(trader, "BTC") == 0

    deposit_release(deposit_id=answer.json()["id"], acting_user=operators.finance)
    assert available(trader, "BTC") == Decimal("1.5")
    assert AuditLog.objects.filter(action="deposit_release", actor=operators.finance).count() == 1


@pytest.mark.parametrize("changes", [{"amount": "15"}, {"address": "bcrt1qsomewhereelseentirely"}])
def test_the_same_transaction_reported_differently_is_refused(trader, address, custody, unchanged, changes):
    custody("deposits/", report(address))
    with unchanged():
        answer = custody("deposits/", report(address, **changes))
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "custody_mismatch"


@pytest.mark.parametrize(
    "changes",
    [
        {"amount": "0"},
        {"amount": "-1"},
        {"amount": "0.000000001"},
        {"asset": "DOGE"},
        {"confirmations": -1},
        {"tx_id": ""},
        {"tx_id": None},
    ],
)
def test_a_malformed_report_is_a_400_and_records_nothing(address, custody, unchanged, changes):
    with unchanged():
        answer = custody("deposits/", report(address, **changes))
    assert answer.status_code == 400


def test_custody_lists_the_deposits_it_should_watch(trader, address, custody, client_for):
    client_for(trader).post("/api/deposits/", {"asset": "BTC", "amount": "0.2", "tx_id": "0xsoon"}, format="json")
    Asset.objects.filter(pk="BTC").update(deposit_confirmations=3)
    custody("deposits/", report(address, tx_id="0xhalfway"))
    listed = custody("deposits/", method="GET")
    assert listed.status_code == 200
    assert [(d["tx_id"], d["status"], d["address"]) for d in listed.json()] == [
        ("0xsoon", "declared", address),
        ("0xhalfway", "confirming", address),
    ]
    assert custody("deposits/", method="GET", secret="wrong").status_code == 401


# --- Withdrawals ----------------------------------------------------------------------------------


@pytest.fixture
def withdrawal(trader, fund, client_for) -> Withdrawal:
    fund(trader, "BTC", "2")
    answer = client_for(trader).post(
        "/api/withdrawals/", {"asset": "BTC", "amount": "0.5", "address": "bcrt1qdestinationaddress00"}, format="json"
    )
    assert answer.status_code == 201, answer.content
    return Withdrawal.objects.get(pk=answer.json()["id"])


def test_custody_is_refused_news_of_a_withdrawal_nobody_approved(withdrawal, custody, unchanged):
    for status in ("sent", "completed", "failed"):
        with unchanged():
            answer = custody("withdrawals/", {"withdrawal_id": withdrawal.pk, "status": status, "tx_id": "0xout"})
        assert answer.status_code == 409
        assert answer.json()["error"]["code"] == "not_approved"


def test_an_approved_withdrawal_goes_to_custody_and_completes_with_its_transaction(
    trader, withdrawal, custody, operators
):
    withdrawal_approve(withdrawal_id=withdrawal.pk, acting_user=operators.finance)
    assert [w["id"] for w in custody("withdrawals/", method="GET").json()] == [withdrawal.pk]

    sent = custody("withdrawals/", {"withdrawal_id": withdrawal.pk, "status": "sent"})
    assert (sent.status_code, sent.json()["status"]) == (200, "sent")
    assert Account.objects.get(user=trader, asset_id="BTC", kind="locked").balance == Decimal("0.5")

    done = custody("withdrawals/", {"withdrawal_id": withdrawal.pk, "status": "completed", "tx_id": "0xout"})
    assert (done.status_code, done.json()["status"], done.json()["tx_id"]) == (200, "completed", "0xout")
    assert Account.objects.get(user=trader, asset_id="BTC", kind="locked").balance == 0
    assert Account.objects.get(user=None, asset_id="BTC", kind="withdrawals").balance == Decimal("0.5")
    assert custody("withdrawals/", method="GET").json() == []

    again = custody("withdrawals/", {"withdrawal_id": withdrawal.pk, "status": "completed", "tx_id": "0xout"})
    assert again.status_code == 200
    assert LedgerEntry.objects.filter(kind="withdrawal_send").count() == 1
    other = custody("withdrawals/", {"withdrawal_id": withdrawal.pk, "status": "completed", "tx_id": "0xother"})
    assert (other.status_code, other.json()["error"]["code"]) == (409, "custody_mismatch")
    late = custody("withdrawals/", {"withdrawal_id": withdrawal.pk, "status": "failed"})
    assert late.status_code == 409


def test_a_withdrawal_custody_reports_failed_returns_the_funds(trader, withdrawal, custody, operators):
    withdrawal_approve(withdrawal_id=withdrawal.pk, acting_user=operators.finance)
    custody("withdrawals/", {"withdrawal_id": withdrawal.pk, "status": "sent"})
    failed = custody("withdrawals/", {"withdrawal_id": withdrawal.pk, "status": "failed"})
    assert failed.json()["status"] == "failed"
    assert available(trader, "BTC") == Decimal("2")
    assert Account.objects.get(user=trader, asset_id="BTC", kind="locked").balance == 0
    assert (
        custody("withdrawals/", {"withdrawal_id": withdrawal.pk, "status": "completed", "tx_id": "x"}).status_code
        == 409
    )


def test_completing_a_withdrawal_needs_its_transaction_id(withdrawal, custody, operators, unchanged):
    withdrawal_approve(withdrawal_id=withdrawal.pk, acting_user=operators.finance)
    with unchanged():
        answer = custody("withdrawals/", {"withdrawal_id": withdrawal.pk, "status": "completed"})
    assert answer.status_code == 400


def test_news_of_an_unknown_withdrawal_is_a_404(custody, db):
    answer = custody("withdrawals/", {"withdrawal_id": 999999, "status": "sent"})
    assert answer.status_code == 404


def test_withdrawal_news_without_a_signature_is_refused(withdrawal, custody, operators, unchanged):
    withdrawal_approve(withdrawal_id=withdrawal.pk, acting_user=operators.finance)
    with unchanged():
        answer = custody("withdrawals/", {"withdrawal_id": withdrawal.pk, "status": "failed"}, secret="guess")
    assert answer.status_code == 401
    assert Withdrawal.objects.get(pk=withdrawal.pk).status == "approved"
