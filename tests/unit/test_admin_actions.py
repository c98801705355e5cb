"""Operator actions through the admin's own forms (Django's test client): each needs its permission,
the ones that refuse or correct ask for a reason first, and they all go through the services."""

from decimal import Decimal

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import ValidationError

from accounts.models import AuditLog, BalanceAdjustment, Deposit, User, Withdrawal
from accounts.services import withdrawal_request
from core.admin_tools import AmountFormField
from tests.unit.conftest import balance, place

# The market (and its assets) exist before any trader is funded.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("btc_usdt")]

ADDRESS = "destination000001"


@pytest.fixture
def as_user(client):
    def login(user: User):
        client.force_login(user)
        return client

    return login


@pytest.fixture
def withdrawal(btc_usdt, bob) -> Withdrawal:
    return withdrawal_request(user=bob, asset=btc_usdt.quote, amount=Decimal("100"), address=ADDRESS)


def action(client, url: str, name: str, ids: list, **form: str):
    return client.post(url, {"action": name, ACTION_CHECKBOX_NAME: ids, **form}, follow=True)


def test_rejecting_a_withdrawal_asks_for_a_reason_before_anything_happens(as_user, operators, withdrawal, bob):
    client = as_user(operators.finance)
    url = "/admin/accounts/withdrawal/"
    page = action(client, url, "reject", [withdrawal.pk])
    assert page.status_code == 200
    assert b"Reject the selected withdrawals" in page.content
    assert b'name="reason"' in page.content
    assert Withdrawal.objects.get().status == "requested"

    empty = action(client, url, "reject", [withdrawal.pk], apply="yes", reason="")
    assert b"This field is required" in empty.content
    assert Withdrawal.objects.get().status == "requested"

    done = action(client, url, "reject", [withdrawal.pk], apply="yes", reason="sanctioned address")
    assert b"1 withdrawals rejected" in done.content
    assert (Withdrawal.objects.get().status, Withdrawal.objects.get().reason) == ("rejected", "sanctioned address")
    assert balance(bob, "USDT") == Decimal("1000")
    assert AuditLog.objects.get(action="withdrawal_reject").actor == operators.finance


def test_support_sees_no_approve_or_reject_action(as_user, operators, withdrawal):
    client = as_user(staff_with_views(operators.support))
    page = client.get("/admin/accounts/withdrawal/")
    assert page.status_code == 200
    form = page.context["action_form"]
    choices = [value for value, _ in form.fields["action"].choices] if form else []
    assert "approve" not in choices and "reject" not in choices
    refused = action(client, "/admin/accounts/withdrawal/", "approve", [withdrawal.pk])
    assert Withdrawal.objects.get().status == "requested"
    assert refused.status_code == 200


def staff_with_views(user: User) -> User:
    from django.contrib.auth.models import Permission

    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_withdrawal", "view_deposit"]))
    return User.objects.get(pk=user.pk)


def test_the_same_finance_operator_cannot_give_both_approvals_in_the_admin(as_user, operators, btc_usdt, bob):
    big = withdrawal_request(user=bob, asset=btc_usdt.quote, amount=Decimal("100"), address=ADDRESS)
    Withdrawal.objects.filter(pk=big.pk).update(needs_second_approval=True)
    client = as_user(operators.finance)
    action(client, "/admin/accounts/withdrawal/", "approve", [big.pk])
    again = action(client, "/admin/accounts/withdrawal/", "approve", [big.pk])
    assert b"The second approval must come from another person." in again.content
    assert Withdrawal.objects.get().status == "approved"
    second = action(as_user(operators.finance2), "/admin/accounts/withdrawal/", "approve", [big.pk])
    assert b"1 withdrawals approved" in second.content
    assert Withdrawal.objects.get().status == "second_approved"


def test_an_adjustment_is_proposed_on_its_own_page_and_applied_by_another_operator(as_user, operators, bob):
    client = as_user(operators.finance)
    form = {"username": bob.username, "asset": "USDT", "amount": "12.5", "category": "compensation"}
    refused = client.post("/admin/accounts/balanceadjustment/propose/", {**form, "reason": ""})
    assert refused.status_code == 200
    assert not BalanceAdjustment.objects.exists()
    proposed = client.post("/admin/accounts/balanceadjustment/propose/", {**form, "reason": "fee charged twice"})
    assert proposed.status_code == 302
    adjustment = BalanceAdjustment.objects.get()

    own = action(client, "/admin/accounts/balanceadjustment/", "approve", [adjustment.pk], apply="yes", note="")
    assert b"An adjustment is decided by someone other than its proposer" in own.content
    assert balance(bob, "USDT") == Decimal("1000")

    checker = as_user(operators.finance2)
    action(checker, "/admin/accounts/balanceadjustment/", "approve", [adjustment.pk], apply="yes", note="checked")
    assert BalanceAdjustment.objects.get().status == "approved"
    assert balance(bob, "USDT") == Decimal("1012.5")


@pytest.mark.parametrize("amount", ["1e3", "1_000", "\u0661\u0662", "NaN", "+5", "--5", "5.0.0"])
def test_an_adjustment_amount_must_be_a_plain_decimal(as_user, operators, bob, amount):
    page = as_user(operators.finance).post(
        "/admin/accounts/balanceadjustment/propose/",
        {"username": bob.username, "asset": "USDT", "amount": amount, "category": "other", "reason": "typo"},
    )
    assert page.status_code == 200
    assert b"plain decimal" in page.content
    assert not BalanceAdjustment.objects.exists()


def test_an_adjustment_may_take_away_with_a_minus_sign(as_user, operators, bob):
    page = as_user(operators.finance).post(
        "/admin/accounts/balanceadjustment/propose/",
        {"username": bob.username, "asset": "USDT", "amount": "-2.5", "category": "other", "reason": "refund"},
    )
    assert page.status_code == 302
    assert BalanceAdjustment.objects.get().amount == Decimal("-2.5")


def test_other_amounts_in_the_admin_take_no_sign():
    field = AmountFormField(max_digits=38, decimal_places=18)
    assert field.clean(" 0.25 ") == Decimal("0.25")
    for amount in ("-1", "1e3", "Infinity"):
        with pytest.raises(ValidationError, match="plain decimal"):
            field.clean(amount)


def test_proposing_an_adjustment_for_oneself_is_refused_on_the_form(as_user, operators, btc_usdt):
    client = as_user(operators.finance)
    page = client.post(
        "/admin/accounts/balanceadjustment/propose/",
        {"username": operators.finance.username, "asset": "USDT", "amount": "5", "category": "other", "reason": "x"},
    )
    assert page.status_code == 200
    assert b"Nobody adjusts their own balance." in page.content
    assert not BalanceAdjustment.objects.exists()


def test_restricting_a_user_asks_which_and_why(as_user, operators, bob):
    client = as_user(staff_with_views(operators.compliance))
    url = "/admin/accounts/user/"
    page = action(client, url, "restrict", [bob.pk])
    assert b'name="kind"' in page.content and b'name="reason"' in page.content
    action(client, url, "restrict", [bob.pk], apply="yes", kind="trading", reason="fraud report 1142")
    bob.refresh_from_db()
    assert (bob.trading_restricted, bob.withdrawals_restricted) == (True, False)
    assert AuditLog.objects.get(action="restrict_trading").details == {"reason": "fraud report 1142"}


def test_held_deposits_are_released_from_the_admin(as_user, operators, btc_usdt, make_user, fund):
    from accounts.models import Asset

    Asset.objects.filter(pk="BTC").update(deposit_review_threshold=Decimal("1"))
    trader = make_user()
    deposit = fund(trader, "BTC", "5")
    assert deposit.status == "held"
    done = action(as_user(operators.finance), "/admin/accounts/deposit/", "release", [deposit.pk])
    assert b"1 deposits released and credited" in done.content
    assert Deposit.objects.get().status == "credited"
    assert balance(trader, "BTC") == Decimal("5")


def test_an_unmatched_deposit_is_assigned_by_one_operator_and_released_by_another(
    as_user, operators, btc_usdt, custody, make_user
):
    custody(
        "deposits/",
        {"asset": "BTC", "address": "bcrt1qwrongaddress0000", "amount": "0.3", "tx_id": "0xlost", "confirmations": 6},
    )
    deposit = Deposit.objects.get()
    owner = make_user()
    first = as_user(operators.finance)
    action(
        first,
        "/admin/accounts/deposit/",
        "assign",
        [deposit.pk],
        apply="yes",
        username=owner.username,
        reason="ticket 77",
    )
    assert Deposit.objects.get().status == "held"
    same = action(first, "/admin/accounts/deposit/", "release", [deposit.pk])
    assert b"cannot also release it" in same.content
    action(as_user(operators.finance2), "/admin/accounts/deposit/", "release", [deposit.pk])
    assert balance(owner, "BTC") == Decimal("0.3")


def test_cancelling_all_orders_of_a_user_from_the_admin(as_user, operators, pipeline, bob):
    place(bob, "b1", "buy", "40000", "0.001")
    pipeline.run()
    client = as_user(operators.markets)
    refused = client.post("/admin/matching/order/cancel-all/", {"username": "", "market": "", "reason": "x"})
    assert b"Name a user, a market, or both." in refused.content
    done = client.post(
        "/admin/matching/order/cancel-all/", {"username": bob.username, "market": "", "reason": "restricted"}
    )
    assert done.status_code == 302
    pipeline.run()
    assert bob.orders.get().status == "cancelled"
    assert as_user(operators.finance).get("/admin/matching/order/cancel-all/").status_code == 403
