"""Evidence stays as it was written: PostgreSQL itself refuses to change or delete ledger lines and
entries, audit rows, trades and settled engine events; and the rules operators change keep their
history, with who changed them."""

from decimal import Decimal

import pytest
from django.db import DatabaseError, connection, transaction

from accounts.models import Asset, AuditLog, LedgerEntry, LedgerLine, User
from matching.models import Market
from settlement.models import EngineEvent, Trade
from tests.unit.conftest import place

pytestmark = pytest.mark.django_db


@pytest.fixture
def settled(pipeline, alice, bob, operators):
    from accounts.services import audit_record

    place(alice, "sell1", "sell", "50000", "0.01")
    place(bob, "buy1", "buy", "50000", "0.004")
    pipeline.run()
    audit_record(actor=operators.finance, action="test", target="x")
    return pipeline


def refused(sql: str) -> None:
    """Run raw SQL, as anyone with a database login could, and expect PostgreSQL to refuse it."""
    with (
        pytest.raises(DatabaseError, match="pgtrigger: Cannot"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql)


@pytest.mark.parametrize(
    "table",
    [LedgerEntry._meta.db_table, LedgerLine._meta.db_table, AuditLog._meta.db_table, Trade._meta.db_table],
)
def test_rows_of_the_ledger_audit_and_trades_cannot_be_updated_or_deleted(settled, table):
    assert settled and connection.cursor().execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0  # noqa: S608
    refused(f"UPDATE {table} SET id = id")  # noqa: S608
    refused(f"DELETE FROM {table}")  # noqa: S608


def test_settled_engine_events_cannot_be_changed_or_deleted(settled):
    event = EngineEvent.objects.filter(settled_at__isnull=False).first()
    table = EngineEvent._meta.db_table
    refused(f"UPDATE {table} SET settled_at = now() WHERE id = {event.pk}")  # noqa: S608
    refused(f"UPDATE {table} SET hash = 'x' WHERE id = {event.pk}")  # noqa: S608
    refused(f"DELETE FROM {table} WHERE id = {event.pk}")  # noqa: S608


def test_an_unsettled_event_may_only_be_marked_settled(btc_usdt):
    event = EngineEvent.objects.create(market="BTC_USDT", seq=1, type="market_added", payload={}, hash="a" * 64)
    table = EngineEvent._meta.db_table
    refused(f"UPDATE {table} SET type = 'trade' WHERE id = {event.pk}")  # noqa: S608
    refused(f"DELETE FROM {table} WHERE id = {event.pk}")  # noqa: S608
    assert EngineEvent.objects.filter(pk=event.pk).update(settled_at="2026-01-01T00:00:00Z") == 1


def test_an_asset_change_in_the_admin_is_kept_with_the_operator_who_made_it(client, btc_usdt):
    operator = User.objects.create_superuser("history_op", "op@example.com", "Correct-horse-42")
    client.force_login(operator)
    asset = Asset.objects.get(pk="USDT")
    form = {field: getattr(asset, field) for field in ("name", "deposit_confirmations", "address_regex")}
    form.update(
        deposit_review_threshold="5000",
        withdrawals_enabled="on",
        withdrawal_min="0",
        withdrawal_fee="2",
        withdrawal_daily_limit="",
        withdrawal_four_eyes_threshold="100",
    )
    answer = client.post("/admin/accounts/asset/USDT/change/", form)
    assert answer.status_code == 302, answer.content
    events = list(asset.events.order_by("pgh_id").values_list("withdrawal_fee", "pgh_label"))
    assert events[-1] == (Decimal("2"), "update")
    latest = asset.events.order_by("-pgh_id").first()
    assert latest.pgh_context.metadata["user"] == operator.pk
    assert latest.pgh_context.metadata["url"] == "/admin/accounts/asset/USDT/change/"
    history = client.get("/admin/pghistory/events/?obj=accounts.asset:USDT")
    assert history.status_code == 200


def test_market_fees_and_staff_grants_keep_their_history(btc_usdt, operators):
    from django.contrib.auth.models import Group

    Market.objects.filter(pk="BTC_USDT").update(taker_fee=Decimal("0.003"))
    assert btc_usdt.events.order_by("-pgh_id").values_list("taker_fee", flat=True).first() == Decimal("0.003")
    group = Group.objects.create(name="finance_test")
    operators.support.groups.add(group)
    operators.support.groups.remove(group)
    from accounts.models import StaffFlagsEvent, StaffGroupEvent  # made by django-pghistory from the trackers

    grants = StaffGroupEvent.objects.filter(user=operators.support).order_by("pgh_id")
    assert list(grants.values_list("pgh_label", "group")) == [("grant", group.pk), ("revoke", group.pk)]
    User.objects.filter(pk=operators.support.pk).update(is_superuser=True)
    flags = StaffFlagsEvent.objects.filter(pgh_obj=operators.support).order_by("-pgh_id").first()
    assert (flags.pgh_label, flags.is_superuser) == ("update", True)
