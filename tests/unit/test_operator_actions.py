"""Corrections and restrictions: maker-checker adjustments, per-user stops, cancel-all, and every
operator action checking its own permission."""

from decimal import Decimal

import pytest

from accounts.models import Account, Asset, AuditLog, BalanceAdjustment, LedgerLine
from accounts.services import adjustment_approve, adjustment_propose, adjustment_reject, user_restrict, user_unrestrict
from core.errors import Conflict, Forbidden, InsufficientFunds, InvalidRequest
from matching import schemas
from matching.models import Order, OutboxMessage
from matching.services import orders_cancel_all
from settlement.reconciliation import reconciliation_checks
from tests.unit.conftest import balance, place

# The market (and its assets) exist before any trader is funded.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("btc_usdt")]


@pytest.fixture
def usdt() -> Asset:
    return Asset.objects.get(pk="USDT")


def propose(operators, user, usdt, amount: str, **extra):
    return adjustment_propose(
        user=user,
        asset=usdt,
        amount=Decimal(amount),
        category=extra.pop("category", "compensation"),
        reason=extra.pop("reason", "outage on 4 December"),
        acting_user=extra.pop("acting_user", operators.finance),
    )


def test_a_proposed_adjustment_moves_nothing_until_another_operator_approves_it(operators, bob, usdt):
    adjustment = propose(operators, bob, usdt, "25")
    assert balance(bob, "USDT") == Decimal("1000")
    approved = adjustment_approve(adjustment_id=adjustment.pk, acting_user=operators.finance2)
    assert approved.status == "approved"
    assert balance(bob, "USDT") == Decimal("1025")
    system = Account.objects.get(user=None, asset_id="USDT", kind="adjustments")
    assert system.balance == Decimal("-25")
    assert sorted(LedgerLine.objects.filter(entry=approved.ledger_entry).values_list("amount", flat=True)) == [
        Decimal("-25"),
        Decimal("25"),
    ]
    assert list(AuditLog.objects.filter(target=f"adjustment:{adjustment.pk}").values_list("action", "actor")) == [
        ("adjustment_approve", operators.finance2.pk),
        ("adjustment_propose", operators.finance.pk),
    ]
    assert all(check.ok for check in reconciliation_checks())


def test_the_proposer_cannot_approve_their_own_adjustment(operators, bob, usdt, unchanged):
    adjustment = propose(operators, bob, usdt, "25")
    with unchanged(), pytest.raises(Forbidden) as refused:
        adjustment_approve(adjustment_id=adjustment.pk, acting_user=operators.finance)
    assert refused.value.code == "same_operator"


def test_nobody_adjusts_their_own_balance(operators, usdt, unchanged):
    with unchanged(), pytest.raises(Forbidden):
        propose(operators, operators.finance, usdt, "1000000")
    adjustment = propose(operators, operators.finance2, usdt, "5", acting_user=operators.finance)
    with unchanged(), pytest.raises(Forbidden):
        adjustment_approve(adjustment_id=adjustment.pk, acting_user=operators.finance2)


def test_an_adjustment_never_makes_a_balance_negative(operators, bob, usdt, unchanged):
    adjustment = propose(operators, bob, usdt, "-1000.01")
    with unchanged(), pytest.raises(InsufficientFunds):
        adjustment_approve(adjustment_id=adjustment.pk, acting_user=operators.finance2)
    assert BalanceAdjustment.objects.get().status == "proposed"
    taken = adjustment_approve(adjustment_id=propose(operators, bob, usdt, "-1000").pk, acting_user=operators.finance2)
    assert taken.status == "approved"
    assert balance(bob, "USDT") == 0


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"reason": ""}, InvalidRequest),
        ({"reason": "   "}, InvalidRequest),
        ({"category": "gift"}, InvalidRequest),
        ({"amount": "0"}, InvalidRequest),
        ({"amount": "0.000000001"}, InvalidRequest),
    ],
)
def test_an_adjustment_needs_a_reason_a_category_and_a_real_amount(operators, bob, usdt, unchanged, changes, error):
    amount = changes.pop("amount", "5")
    with unchanged(), pytest.raises(error):
        propose(operators, bob, usdt, amount, **changes)


def test_adjustments_need_their_permissions(operators, bob, usdt, unchanged):
    with unchanged(), pytest.raises(Forbidden):
        propose(operators, bob, usdt, "5", acting_user=operators.support)
    adjustment = propose(operators, bob, usdt, "5")
    for who in (operators.support, operators.compliance, operators.markets):
        with unchanged(), pytest.raises(Forbidden):
            adjustment_approve(adjustment_id=adjustment.pk, acting_user=who)


def test_a_rejected_adjustment_moves_nothing_and_cannot_be_approved_later(operators, bob, usdt):
    adjustment = propose(operators, bob, usdt, "5")
    adjustment_reject(adjustment_id=adjustment.pk, reason="wrong user", acting_user=operators.finance2)
    with pytest.raises(Conflict):
        adjustment_approve(adjustment_id=adjustment.pk, acting_user=operators.finance2)
    assert balance(bob, "USDT") == Decimal("1000")


def test_a_trading_restriction_refuses_new_orders_with_403(operators, bob, client_for, unchanged):
    user_restrict(user=bob, kind="trading", reason="account takeover suspected", acting_user=operators.compliance)
    body = {"cid": "restricted_order_01", "symbol": "BTC_USDT", "side": "Buy", "order_type": "Limit"}
    with unchanged():
        answer = client_for(bob).post("/api/orders/", {**body, "price": "100", "quantity": "0.5"}, format="json")
    assert (answer.status_code, answer.json()["error"]["code"]) == (403, "trading_restricted")
    # Withdrawals are restricted separately.
    bob.refresh_from_db()
    assert (bob.trading_restricted, bob.withdrawals_restricted) == (True, False)

    user_unrestrict(user=bob, kind="trading", reason="owner verified", acting_user=operators.compliance)
    answer = client_for(bob).post("/api/orders/", {**body, "price": "100", "quantity": "0.5"}, format="json")
    assert answer.status_code == 201


def test_restrictions_need_a_reason_and_the_permission_and_are_audited(operators, bob, unchanged):
    with unchanged(), pytest.raises(InvalidRequest):
        user_restrict(user=bob, kind="trading", reason="", acting_user=operators.compliance)
    with unchanged(), pytest.raises(Forbidden):
        user_restrict(user=bob, kind="trading", reason="because", acting_user=operators.finance)
    user_restrict(user=bob, kind="withdrawals", reason="chargeback", acting_user=operators.compliance)
    with unchanged(), pytest.raises(Conflict):
        user_restrict(user=bob, kind="withdrawals", reason="again", acting_user=operators.compliance)
    assert AuditLog.objects.get(action="restrict_withdrawals").details == {"reason": "chargeback"}


def test_cancel_all_of_a_user_asks_the_engine_once_per_market(pipeline, alice, bob, operators):
    place(bob, "b1", "buy", "40000", "0.001")
    place(bob, "b2", "buy", "41000", "0.001")
    place(alice, "a1", "sell", "60000", "0.001")
    pipeline.run()
    count = orders_cancel_all(user=bob, acting_user=operators.markets, reason="restricted")
    assert count == 2
    commands = [schemas.decode_command(bytes(m.payload)) for m in OutboxMessage.objects.order_by("-pk")[:1]]
    assert [(c.to_dict()["type"], c.market, c.user_id) for c in commands] == [("cancel_all", "BTC_USDT", bob.pk)]
    pipeline.run()
    assert set(Order.objects.filter(user=bob).values_list("status", flat=True)) == {"cancelled"}
    assert Order.objects.get(user=alice).status == "open"
    assert balance(bob, "USDT", "locked") == 0
    assert AuditLog.objects.get(action="orders_cancel_all").target == f"user:{bob.pk}"


def test_cancel_all_of_a_market_cancels_everyone_in_it(pipeline, alice, bob, operators):
    place(bob, "b1", "buy", "40000", "0.001")
    place(alice, "a1", "sell", "60000", "0.001")
    pipeline.run()
    assert orders_cancel_all(market="BTC_USDT", acting_user=operators.markets, reason="delisting") == 2
    pipeline.run()
    assert set(Order.objects.values_list("status", flat=True)) == {"cancelled"}
    assert all(check.ok for check in reconciliation_checks())


def test_cancel_all_needs_the_permission(pipeline, bob, operators, unchanged):
    place(bob, "b1", "buy", "40000", "0.001")
    with unchanged(), pytest.raises(Forbidden):
        orders_cancel_all(user=bob, acting_user=operators.finance)
    with unchanged(), pytest.raises(InvalidRequest):
        orders_cancel_all(acting_user=operators.markets)


def test_a_user_cancels_all_their_orders_in_a_market_through_the_api(pipeline, bob, client_for):
    place(bob, "b1", "buy", "40000", "0.001")
    place(bob, "b2", "buy", "41000", "0.001")
    pipeline.run()
    answer = client_for(bob).delete("/api/orders/?symbol=BTC_USDT")
    assert (answer.status_code, answer.json()) == (202, {"count": 2})
    pipeline.run()
    assert set(Order.objects.values_list("status", flat=True)) == {"cancelled"}
    assert client_for(bob).delete("/api/orders/?symbol=NOPE_USDT").status_code == 404
