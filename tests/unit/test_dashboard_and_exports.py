"""The operators' console: what waits for whom, what users hold, markets per day, CSV exports."""

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from accounts.models import AuditLog, User, Withdrawal
from accounts.services import adjustment_propose, withdrawal_approve, withdrawal_request
from console.selectors import operator_dashboard
from settlement.models import Trade
from tests.unit.conftest import place

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("btc_usdt")]

ADDRESS = "destination000001"


def grant(user: User, *codenames: str) -> User:
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return User.objects.get(pk=user.pk)


@pytest.fixture
def traded(pipeline, alice, bob):
    place(alice, "sell1", "sell", "50000", "0.01")
    place(bob, "buy1", "buy", "50000", "0.004")
    pipeline.run()
    return Trade.objects.get()


def counts(user: User) -> dict[str, int]:
    return {item["label"]: item["count"] for item in operator_dashboard(user=user)["awaiting"]}


def test_each_operator_sees_the_decisions_only_they_can_take(client, operators, bob, btc_usdt, fund):
    usdt = btc_usdt.quote
    small = withdrawal_request(user=bob, asset=usdt, amount=Decimal("10"), address=ADDRESS)
    big = withdrawal_request(user=bob, asset=usdt, amount=Decimal("20"), address=ADDRESS)
    Withdrawal.objects.filter(pk=big.pk).update(needs_second_approval=True)
    withdrawal_approve(withdrawal_id=big.pk, acting_user=operators.finance)
    fund(operators.finance, "USDT", "100")
    withdrawal_request(user=operators.finance, asset=usdt, amount=Decimal("5"), address=ADDRESS)
    adjustment_propose(
        user=bob, asset=usdt, amount=Decimal("1"), category="other", reason="r", acting_user=operators.finance
    )

    # The first approver is not asked again, nor about their own withdrawal or their own proposal.
    assert counts(operators.finance)["Withdrawals to approve"] == 1
    assert counts(operators.finance)["Adjustments to check"] == 0
    assert counts(operators.finance2) == {
        "Withdrawals to approve": 3,
        "Deposits to release or assign": 0,
        "Adjustments to check": 1,
    }
    assert set(counts(operators.support).values()) == {0}

    client.force_login(operators.finance)
    listed = client.get("/admin/accounts/withdrawal/?awaiting=me")
    assert [w.pk for w in listed.context["cl"].result_list] == [small.pk]


def test_liabilities_are_what_users_hold_per_asset(operators, traded, alice, bob):
    rows = {row["asset"]: row for row in operator_dashboard(user=operators.finance)["liabilities"]}
    assert rows["BTC"]["total"] == "0.999992"  # 1 deposited, less the buyer's taker fee of 0.000008
    assert rows["USDT"]["total"] == "999.8"  # 1000 deposited, less the seller's maker fee of 0.2
    assert rows["USDT"]["locked"] == "0"
    assert rows["BTC"]["locked"] == "0.006"  # alice's rest of her sell


def test_the_charts_show_each_markets_volume_and_fee_revenue_per_day(operators, traded):
    chart = operator_dashboard(user=operators.finance)["chart"]
    assert len(chart["labels"]) == 30 and chart["labels"][-1] == timezone.now().date().isoformat()
    [volume] = [s for s in chart["volume"] if s["market"] == "BTC_USDT"]
    [fees] = [s for s in chart["fees"] if s["market"] == "BTC_USDT"]
    assert volume["values"][-1] == "200"
    # The seller pays 0.2 USDT (0.1% maker) and the buyer 0.000008 BTC (0.2% taker), worth 0.4 USDT.
    assert Decimal(fees["values"][-1]) == Decimal("0.2") + Decimal("0.000008") * 50000
    assert set(volume["values"][:-1]) == {"0"}


def test_the_dashboard_page_carries_its_chart_data_and_the_chart_library(client, operators, traded):
    client.force_login(operators.finance)
    page = client.get("/admin/")
    assert page.status_code == 200
    assert b'id="dashboard-chart-data"' in page.content
    assert b"vendor/chart.js/chart.umd.min.js" in page.content
    assert b"Liabilities" in page.content


def exported(client, url: str, **query: str) -> list[list[str]]:
    answer = client.get(url, query)
    assert answer.status_code == 200, answer.content[:500]
    assert answer["Content-Type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(b"".join(answer.streaming_content).decode())))


def test_trades_export_as_csv_for_a_date_range_and_the_export_is_audited(client, operators, traded):
    exporter = grant(operators.finance, "export_trade", "view_trade")
    client.force_login(exporter)
    today = timezone.now().date()
    assert client.get("/admin/settlement/trade/").context["export_url"] == "/admin/settlement/trade/export/"
    rows = exported(client, "/admin/settlement/trade/export/", start=today.isoformat(), end=today.isoformat())
    assert rows[0][:5] == ["id", "market_id", "seq", "executed_at", "price"]
    assert [(r[1], r[4], r[5]) for r in rows[1:]] == [("BTC_USDT", "50000", "0.004")]
    before = exported(
        client,
        "/admin/settlement/trade/export/",
        start=(today - timedelta(days=9)).isoformat(),
        end=(today - timedelta(days=1)).isoformat(),
    )
    assert before == [rows[0]]
    audit = AuditLog.objects.filter(action="export_csv").order_by("id").first()
    assert (audit.actor, audit.target, audit.details["end"]) == (exporter, "settlement.trade", today.isoformat())


def test_ledger_lines_deposits_withdrawals_and_audit_rows_export_too(client, operators, traded, bob):
    exporter = grant(operators.finance, "export_ledgerline", "export_deposit", "export_withdrawal", "export_auditlog")
    client.force_login(exporter)
    withdrawal_request(user=bob, asset=traded.market.quote, amount=Decimal("10"), address=ADDRESS)
    day = timezone.now().date().isoformat()
    for model in ("ledgerline", "deposit", "withdrawal", "auditlog"):
        rows = exported(client, f"/admin/accounts/{model}/export/", start=day, end=day)
        assert len(rows) > 1, model


def test_exports_need_their_permission_and_a_valid_range(client, operators, traded):
    client.force_login(operators.support)
    assert client.get("/admin/settlement/trade/export/").status_code == 403
    exporter = grant(operators.finance, "export_trade", "view_trade")
    client.force_login(exporter)
    form = client.get("/admin/settlement/trade/export/", {"start": "2026-02-02", "end": "2026-02-01"})
    assert form.status_code == 200 and b"The range ends before it starts." in form.content
    assert not AuditLog.objects.filter(action="export_csv").exists()
