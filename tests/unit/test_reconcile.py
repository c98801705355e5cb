from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction

from accounts.models import Account, Asset, BalanceAdjustment, Deposit, LedgerEntry, LedgerLine, Withdrawal
from accounts.services import (
    adjustment_approve,
    adjustment_propose,
    withdrawal_approve,
    withdrawal_report,
    withdrawal_request,
)
from matching.models import Order
from settlement.models import Alert, ChainCheckpoint, EngineEvent, ReconciliationRun, Trade
from settlement.reconciliation import reconciliation_checks, reconciliation_run
from settlement.tasks import reconcile, reconcile_full
from tests.unit.conftest import Pipeline, place

pytestmark = pytest.mark.django_db


@pytest.fixture
def busy(pipeline, alice, bob, fund, operators):
    """Trades, a partial fill, a resting order, a pending and a completed withdrawal with a fee, and
    an approved balance adjustment, all settled."""
    place(alice, "sell1", "sell", "50000", "0.01")
    place(bob, "buy1", "buy", "50000", "0.004")
    place(bob, "buy2", "buy", "49000", "0.002")
    place(alice, "sell2", "sell", "51000", "0.003")
    pipeline.run()
    usdt = Asset.objects.get(pk="USDT")
    Asset.objects.filter(pk="USDT").update(withdrawal_fee=Decimal("0.5"))
    usdt.refresh_from_db()
    withdrawal_request(user=bob, asset=usdt, amount=Decimal("1"), address="addressofbob01")
    sent = withdrawal_request(user=bob, asset=usdt, amount=Decimal("2"), address="addressofbob01")
    withdrawal_approve(withdrawal_id=sent.pk, acting_user=operators.finance)
    withdrawal_report(withdrawal_id=sent.pk, status="completed", tx_id="0xsent")
    adjustment = adjustment_propose(
        user=alice,
        asset=usdt,
        amount=Decimal("-3"),
        category="correction",
        reason="double credit",
        acting_user=operators.finance,
    )
    adjustment_approve(adjustment_id=adjustment.pk, acting_user=operators.finance2)
    return pipeline


def failures() -> dict[str, list[str]]:
    return {c.check: c.problems for c in reconciliation_checks() if not c.ok}


def test_a_settled_busy_exchange_reconciles(busy):
    assert Trade.objects.count() == 1
    assert failures() == {}
    out = StringIO()
    call_command("reconcile", stdout=out)
    assert out.getvalue().strip().endswith("all invariants hold")


def test_a_line_written_around_the_ledger_service_is_found(busy):
    account = Account.objects.get(user__username="alice", asset="BTC", kind="available")
    entry = LedgerEntry.objects.create(kind="deposit", reference="forged")
    LedgerLine.objects.create(entry=entry, account=account, asset_id="BTC", amount=Decimal("5"))
    found = failures()
    assert found["the ledger sums to zero per asset"] == ["asset BTC sums to 5.000000000000000000"]
    assert found["every balance equals the sum of its ledger lines"] == [
        f"account {account.pk} (alice:BTC:available) holds {account.balance}, its lines sum to "
        f"{account.balance + 5:.18f}"
    ]


def test_locked_funds_no_order_accounts_for_are_found(busy):
    order = Order.objects.filter(status="open").first()
    Order.objects.filter(pk=order.pk).update(locked=order.locked - Decimal("0.001"))
    [problem] = failures()["locked equals what open orders and pending withdrawals hold"]
    assert problem.startswith(f"user {order.user_id} ")


MOVEMENTS = "deposits, withdrawals and adjustments match the ledger"


def test_a_deposit_marked_credited_without_its_ledger_entry_is_named(busy, bob):
    deposit = Deposit.objects.create(user=bob, asset_id="BTC", amount=7, tx_id="0xnever", status="credited")
    assert failures()[MOVEMENTS] == [
        f"deposit {deposit.pk}: its record says 7.000000000000000000, the ledger moved None"
    ]


def test_a_completed_withdrawal_whose_amount_was_changed_is_named(busy):
    withdrawal = Withdrawal.objects.get(status="completed")
    Withdrawal.objects.filter(pk=withdrawal.pk).update(amount=Decimal("1.5"))
    assert failures()[MOVEMENTS] == [
        f"withdrawal {withdrawal.pk}: its record says 1.500000000000000000, the ledger moved 2.000000000000000000"
    ]


def test_an_adjustment_posted_without_an_approval_is_named(busy):
    adjustment = BalanceAdjustment.objects.get()
    BalanceAdjustment.objects.filter(pk=adjustment.pk).update(status="rejected", ledger_entry=None)
    [problem] = failures()[MOVEMENTS]
    assert problem.startswith(f"adjustment {adjustment.pk}: its record says None")


def test_a_lost_trade_row_is_named(busy, tamper):
    trade = Trade.objects.get()
    with tamper():
        LedgerLine.objects.filter(entry__reference=f"trade:BTC_USDT:{trade.seq}").delete()
        trade.delete()
    assert (
        f"BTC_USDT: trade event #{trade.seq} has no trade"
        in failures()["every engine event settled exactly once, no gap"]
    )


def test_a_missing_settled_event_is_named(busy, tamper):
    with tamper():
        EngineEvent.objects.filter(seq=3).delete()
    found = failures()
    assert any("events stored up to" in p for p in found["every engine event settled exactly once, no gap"])
    assert found["the engine's hash chain verifies"] == ["BTC_USDT: #3..#3 missing"]


def test_an_altered_event_breaks_the_chain_check(busy, tamper):
    event = EngineEvent.objects.get(type="trade")
    event.payload = {**event.payload, "price": event.payload["price"] + 1}
    with tamper():
        event.save()
    assert failures()["the engine's hash chain verifies"] == [
        f"BTC_USDT: #{event.seq} does not chain onto #{event.seq - 1}"
    ]


CHAIN = "the engine's hash chain verifies"


def last_chain_check() -> dict:
    """The hash chain check of the last recorded run."""
    return next(c for c in ReconciliationRun.objects.order_by("-id").first().checks if c["check"] == CHAIN)


def checkpoint() -> tuple[int, str]:
    return ChainCheckpoint.objects.filter(market="BTC_USDT").values_list("seq", "hash").get()


def stored(seq: int) -> tuple[int, str]:
    return seq, EngineEvent.objects.get(market="BTC_USDT", seq=seq).hash


def buy_again(pipeline, bob, cid: str) -> list[int]:
    """Bob buys a little of alice's resting sell; returns the sequence numbers of the new events."""
    known = set(EngineEvent.objects.values_list("seq", flat=True))
    place(bob, cid, "buy", "50000", "0.001")
    pipeline.run()
    return sorted(set(EngineEvent.objects.values_list("seq", flat=True)) - known)


def alter(event: EngineEvent, tamper) -> None:
    event.payload = {**event.payload, "ts": event.payload["ts"] + 1}
    with tamper():
        event.save()


def test_each_beat_run_verifies_only_the_events_stored_since_the_run_before(busy, bob):
    assert reconcile()
    assert last_chain_check()["checked"] == EngineEvent.objects.count()
    assert checkpoint() == stored(EngineEvent.objects.order_by("-seq").first().seq)
    new = buy_again(busy, bob, "buy3")
    assert len(new) >= 2
    assert reconcile()
    assert last_chain_check()["checked"] == len(new)
    assert checkpoint() == stored(new[-1])
    assert reconcile()
    assert last_chain_check()["checked"] == 0
    assert not ReconciliationRun.objects.order_by("-id").first().full


def test_an_altered_event_after_the_checkpoint_is_found_and_the_checkpoint_stops_before_it(busy, bob, tamper):
    assert reconcile()
    first_new, second_new, *_ = buy_again(busy, bob, "buy3")
    alter(EngineEvent.objects.get(market="BTC_USDT", seq=second_new), tamper)
    assert not reconcile()
    assert last_chain_check()["problems"] == [f"BTC_USDT: #{second_new} does not chain onto #{first_new}"]
    assert Alert.objects.get().message == f"reconciliation failed: {CHAIN}"
    assert checkpoint() == stored(first_new)
    # The next run starts before the altered event, so it finds it again.
    assert not reconcile()
    assert last_chain_check()["checked"] == EngineEvent.objects.filter(seq__gt=first_new).count()
    assert checkpoint() == stored(first_new)


def test_an_altered_event_before_the_checkpoint_is_found_by_the_full_run(busy, bob, tamper):
    assert reconcile()
    buy_again(busy, bob, "buy3")
    assert reconcile()
    verified_long_ago = EngineEvent.objects.filter(type="trade").order_by("seq").first()
    alter(verified_long_ago, tamper)
    # What the checkpoint is for: a run from it does not read the events before it again.
    assert reconcile()
    assert not reconcile_full()
    assert ReconciliationRun.objects.order_by("-id").first().full
    seq = verified_long_ago.seq
    assert last_chain_check()["problems"] == [f"BTC_USDT: #{seq} does not chain onto #{seq - 1}"]
    assert Alert.objects.get().message == f"reconciliation failed: {CHAIN}"
    # The full run moved the checkpoint back before the break, so every run finds it from now on.
    assert checkpoint() == stored(seq - 1)
    assert not reconcile()


def test_without_a_checkpoint_a_run_verifies_from_genesis(busy, tamper):
    assert reconcile()
    altered = EngineEvent.objects.filter(type="trade").order_by("seq").first()
    alter(altered, tamper)
    ChainCheckpoint.objects.all().delete()
    assert not reconcile()
    assert last_chain_check()["checked"] == EngineEvent.objects.count()
    assert last_chain_check()["problems"] == [f"BTC_USDT: #{altered.seq} does not chain onto #{altered.seq - 1}"]


def test_a_change_to_the_last_verified_event_itself_is_found(busy, tamper):
    assert reconcile()
    seq, digest = checkpoint()
    with tamper():
        EngineEvent.objects.filter(market="BTC_USDT", seq=seq).update(hash="f" * 64)
    assert not reconcile()
    assert last_chain_check()["problems"] == [f"BTC_USDT: #{seq} changed since a run verified it"]
    assert checkpoint() == (seq, digest)


def test_the_chain_of_every_market_with_events_is_verified(busy, eth_usdt, tamper):
    Pipeline("ETH_USDT").run()
    alter(EngineEvent.objects.get(market="ETH_USDT", seq=1), tamper)
    [chain] = [c for c in reconciliation_checks() if c.check == CHAIN]
    assert chain.checked == EngineEvent.objects.count()
    assert chain.problems == ["ETH_USDT: #1 does not chain onto #0"]


def test_the_command_exits_non_zero_and_the_recorded_run_raises_an_alert(busy):
    Order.objects.filter(status="open").update(locked=Decimal("0.5"))
    with pytest.raises(CommandError, match="invariant"):
        call_command("reconcile", stdout=StringIO())
    run = reconciliation_run()
    assert not run.ok
    assert ReconciliationRun.objects.count() == 1
    assert Alert.objects.get().kind == "reconciliation"


def test_the_database_refuses_a_negative_balance(busy):
    account = Account.objects.get(user__username="alice", asset="BTC", kind="available")
    with pytest.raises(IntegrityError), transaction.atomic():
        Account.objects.filter(pk=account.pk).update(balance=Decimal("-0.00000001"))


def test_the_database_refuses_a_second_event_with_the_same_sequence(busy):
    event = EngineEvent.objects.first()
    with pytest.raises(IntegrityError), transaction.atomic():
        EngineEvent.objects.create(market=event.market, seq=event.seq, type="done", payload={}, hash="0" * 64)


def test_the_database_refuses_a_second_order_with_the_same_cid(busy):
    order = Order.objects.first()
    with pytest.raises(IntegrityError), transaction.atomic():
        Order.objects.create(
            user=order.user,
            market=order.market,
            cid=order.cid,
            side="buy",
            order_type="limit",
            price=1,
            quantity=1,
            maker_fee_rate=order.maker_fee_rate,
            taker_fee_rate=order.taker_fee_rate,
        )


def test_the_database_refuses_a_second_deposit_with_the_same_tx_id(busy, bob):
    Deposit.objects.create(user=bob, asset_id="BTC", amount=1, tx_id="0xfeed")
    with pytest.raises(IntegrityError), transaction.atomic():
        Deposit.objects.create(user=bob, asset_id="BTC", amount=2, tx_id="0xfeed")
