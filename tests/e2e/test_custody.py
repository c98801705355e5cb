"""The custody simulator, as `make run` starts it, plays the chain through the signed webhooks."""

from decimal import Decimal

import pytest

from tests.e2e.harness import Exchange, eventually

pytestmark = pytest.mark.e2e

APPROVE = """
from django.contrib.auth.models import Permission
from accounts.models import User
from accounts.services import withdrawal_approve
staff, _ = User.objects.get_or_create(username="e2e_finance", defaults={"is_staff": True})
staff.user_permissions.add(Permission.objects.get(codename="approve_withdrawal"))
staff = User.objects.get(pk=staff.pk)
withdrawal_approve(withdrawal_id=WITHDRAWAL_ID, acting_user=staff)
"""


def test_a_declared_deposit_is_confirmed_by_custody_and_credited(exchange: Exchange) -> None:
    trader = exchange.register("declarer")
    declared = trader.call("POST", "deposits/", json={"asset": "USDT", "amount": "250"})
    assert declared.status_code == 201
    assert declared.json()["status"] == "declared"
    # USDT needs three confirmations: the simulator reports one a block.
    deposit = eventually(
        lambda: (d := trader.call("GET", "deposits/").json()[0])["status"] == "credited" and d,
        timeout=60,
        what="the custody simulator to confirm the deposit",
    )
    assert deposit["confirmations"] >= 3
    assert deposit["tx_id"].startswith("0x")
    assert trader.balances()["USDT"] == (Decimal("250"), Decimal("0"))


def test_an_approved_withdrawal_is_sent_and_completed_by_custody(exchange: Exchange) -> None:
    trader = exchange.register("withdrawer")
    trader.deposit("USDT", "300")
    address = "0x" + "12" * 20
    withdrawal = trader.call("POST", "withdrawals/", json={"asset": "USDT", "amount": "120", "address": address})
    assert withdrawal.status_code == 201, withdrawal.text
    assert trader.balances()["USDT"] == (Decimal("179"), Decimal("121"))

    exchange.manage("shell", "-c", APPROVE.replace("WITHDRAWAL_ID", str(withdrawal.json()["id"])))
    done = eventually(
        lambda: (w := trader.call("GET", "withdrawals/").json()[0])["status"] == "completed" and w,
        timeout=60,
        what="custody to complete the withdrawal",
    )
    assert done["tx_id"].startswith("0x")
    assert trader.balances()["USDT"] == (Decimal("179"), Decimal("0"))
    assert "all invariants hold" in exchange.manage("reconcile")


def test_a_withdrawal_custody_cannot_send_returns_the_funds(exchange: Exchange) -> None:
    trader = exchange.register("burner")
    trader.deposit("USDT", "300")
    dead = "0x000000000000000000000000000000000000dEaD"
    withdrawal = trader.call("POST", "withdrawals/", json={"asset": "USDT", "amount": "100", "address": dead})
    exchange.manage("shell", "-c", APPROVE.replace("WITHDRAWAL_ID", str(withdrawal.json()["id"])))
    eventually(
        lambda: trader.call("GET", "withdrawals/").json()[0]["status"] == "failed",
        timeout=60,
        what="custody to report the withdrawal failed",
    )
    assert trader.balances()["USDT"] == (Decimal("300"), Decimal("0"))
