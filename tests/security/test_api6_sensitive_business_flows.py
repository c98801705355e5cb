"""API6:2023 Unrestricted Access to Sensitive Business Flows.

The two flows worth automating against an exchange are putting money in that nobody sent, and taking
money out alone. Each test plays one abuser trying every door the API has, and checks that money moves
only on custody's signed word and, going out, only after somebody else agreed.
"""

import time
from decimal import Decimal

import pytest
from django.conf import settings

from accounts.custody import signature_header
from accounts.models import Account, Asset, Withdrawal
from accounts.services import deposit_address_get, withdrawal_approve
from core.errors import Forbidden
from tests.fixtures import staff_user

pytestmark = pytest.mark.django_db

ADDRESS = "0x52908400098527886E0F7030069857D2E4169EE7"


def available(user, asset: str) -> Decimal:
    account = Account.objects.filter(user=user, asset_id=asset, kind=Account.Kind.AVAILABLE).first()
    return account.balance if account else Decimal(0)


def test_a_trader_cannot_credit_themself_by_any_door(btc_usdt, make_user, client_for, api, custody):
    trader = make_user()
    client = client_for(trader)
    address = deposit_address_get(user=trader, asset=Asset.objects.get(pk="BTC")).address
    report = {"asset": "BTC", "address": address, "amount": "2", "tx_id": "0xabc", "confirmations": 1}

    # Declaring a transfer, however large, is only a declaration.
    assert client.post("/api/deposits/", {"asset": "BTC", "amount": "1000"}, format="json").status_code == 201
    # The custody webhook with the trader's own token, or signed with a guessed secret, is refused.
    assert client.post("/api/custody/deposits/", report, format="json").status_code == 401
    assert custody("deposits/", report, secret="guessed-secret").status_code == 401
    # A report signed long ago cannot be replayed later.
    raw = b'{"asset": "BTC", "address": "%s", "amount": "2", "tx_id": "0xold", "confirmations": 1}' % address.encode()
    stale = signature_header(raw, secret=settings.CUSTODY_WEBHOOK_SECRETS[0], timestamp=int(time.time()) - 3600)
    answer = api.generic(
        "POST", "/api/custody/deposits/", raw, content_type="application/json", HTTP_X_CUSTODY_SIGNATURE=stale
    )
    assert answer.status_code == 401
    assert available(trader, "BTC") == 0

    # Custody's real report credits once; sent again, or again with a bigger amount, it adds nothing.
    assert custody("deposits/", report).status_code in (200, 201)
    assert custody("deposits/", report).status_code == 200
    assert custody("deposits/", {**report, "amount": "20"}).status_code == 409
    assert available(trader, "BTC") == Decimal("2")


def test_nobody_takes_money_out_alone(btc_usdt, make_user, client_for, fund, custody):
    Asset.objects.filter(pk="USDT").update(
        withdrawal_four_eyes_threshold=Decimal("100"), address_regex=r"^0x[0-9a-fA-F]{40}$"
    )
    # An insider: a finance operator who also trades on the exchange.
    insider = staff_user("finance_insider", "approve_withdrawal", "view_withdrawal")
    colleague = staff_user("finance_colleague", "approve_withdrawal", "view_withdrawal")
    fund(insider, "USDT", "1000")
    answer = client_for(insider).post(
        "/api/withdrawals/", {"asset": "USDT", "amount": "500", "address": ADDRESS}, format="json"
    )
    assert answer.status_code == 201
    withdrawal_id = answer.json()["id"]

    def custody_sees_it() -> bool:
        return withdrawal_id in {w["id"] for w in custody("withdrawals/", method="GET").json()}

    # Custody hears of nothing before approval, and nobody approves their own.
    assert not custody_sees_it()
    with pytest.raises(Forbidden):
        withdrawal_approve(withdrawal_id=withdrawal_id, acting_user=insider)
    # Above the threshold one colleague's approval is not enough, and they cannot give the second too.
    withdrawal_approve(withdrawal_id=withdrawal_id, acting_user=colleague)
    assert not custody_sees_it()
    with pytest.raises(Forbidden):
        withdrawal_approve(withdrawal_id=withdrawal_id, acting_user=colleague)
    assert not custody_sees_it()
    assert Withdrawal.objects.get(pk=withdrawal_id).status == Withdrawal.Status.APPROVED

    # Only a third person's approval hands it to custody.
    third = staff_user("finance_third", "approve_withdrawal", "view_withdrawal")
    withdrawal_approve(withdrawal_id=withdrawal_id, acting_user=third)
    assert custody_sees_it()
