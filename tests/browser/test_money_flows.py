"""Money through the operators' hands, in a real headless Chromium against the running exchange and
its custody simulator: two people for a big withdrawal, maker-checker adjustments, restrictions,
and what a role without the permission does not even see."""

from collections.abc import Callable
from decimal import Decimal

import pytest
from playwright.sync_api import Page, expect

from tests.browser.pages import ADDRESS, Operator, shot
from tests.e2e.harness import Exchange, Trader, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def choose_action(page: Page, row_ids: list[int | str], action: str) -> None:
    for row_id in row_ids:
        page.locator(f"input.action-select[value='{row_id}']").check()
    page.select_option("select[name=action]", action)


def run_action(page: Page) -> None:
    page.click("button[name=index]")


def staff_trader(exchange: Exchange, operator: Operator) -> Trader:
    """The staff member's own trading account, through the API like any user's."""
    tokens = exchange.http.post(
        f"{exchange.base}/api/auth/token/", json={"username": operator.username, "password": operator.password}
    )
    assert tokens.status_code == 200, tokens.text
    [(user_id,)] = exchange.query("SELECT id FROM accounts_user WHERE username = %s", operator.username)
    return Trader(exchange, operator.username, user_id, tokens.json()["access"], password=operator.password)


def test_a_big_withdrawal_needs_two_finance_operators_then_custody_sends_it(
    page_as: Callable[[str], Page], exchange: Exchange
) -> None:
    trader = exchange.register("whale")
    trader.deposit("USDT", "20000")
    withdrawal = trader.call("POST", "withdrawals/", json={"asset": "USDT", "amount": "15000", "address": ADDRESS})
    assert withdrawal.status_code == 201, withdrawal.text
    withdrawal_id = withdrawal.json()["id"]

    first = page_as("finance")
    first.goto(f"{exchange.base}/admin/accounts/withdrawal/?awaiting=me")
    expect(first.locator(f"#result_list tr:has(input[value='{withdrawal_id}'])")).to_contain_text("15000")
    choose_action(first, [withdrawal_id], "approve")
    shot(first, "admin-withdrawal-approve")
    run_action(first)
    expect(first.locator(".messagelist .success")).to_contain_text("1 withdrawals approved")
    assert trader.call("GET", "withdrawals/").json()[0]["status"] == "approved"

    # The same operator cannot give the second approval.
    first.goto(f"{exchange.base}/admin/accounts/withdrawal/?q={trader.username}")
    choose_action(first, [withdrawal_id], "approve")
    run_action(first)
    expect(first.locator(".messagelist .warning")).to_contain_text("The second approval must come from another person")
    shot(first, "admin-withdrawal-second-approval-refused")

    second = page_as("finance2")
    second.goto(f"{exchange.base}/admin/accounts/withdrawal/?awaiting=me")
    choose_action(second, [withdrawal_id], "approve")
    shot(second, "admin-withdrawal-second-approval")
    run_action(second)
    expect(second.locator(".messagelist .success")).to_contain_text("1 withdrawals approved")

    done = eventually(
        lambda: (w := trader.call("GET", "withdrawals/").json()[0])["status"] == "completed" and w,
        timeout=60,
        what="custody to send and complete the withdrawal",
    )
    assert done["tx_id"].startswith("0x")
    assert trader.balances()["USDT"] == (Decimal("4999"), Decimal("0"))  # 15000 sent and a 1 USDT fee
    second.goto(f"{exchange.base}/admin/accounts/withdrawal/?q={trader.username}")
    expect(second.locator(f"#result_list tr:has(input[value='{withdrawal_id}'])")).to_contain_text("Completed")
    shot(second, "admin-withdrawal-completed")
    assert exchange.query(
        "SELECT a.action, u.username FROM accounts_auditlog a JOIN accounts_user u ON u.id = a.actor_id "
        "WHERE a.target = %s ORDER BY a.id",
        f"withdrawal:{withdrawal_id}",
    ) == [("withdrawal_approve", "finance"), ("withdrawal_second_approve", "finance2")]


def test_a_finance_operator_cannot_approve_their_own_withdrawal(
    page_as: Callable[[str], Page], exchange: Exchange, staff: dict[str, Operator]
) -> None:
    own = staff_trader(exchange, staff["finance"])
    own.deposit("USDT", "100")
    withdrawal = own.call("POST", "withdrawals/", json={"asset": "USDT", "amount": "20", "address": ADDRESS})
    assert withdrawal.status_code == 201, withdrawal.text

    page = page_as("finance")
    page.goto(f"{exchange.base}/admin/accounts/withdrawal/?q=finance")
    choose_action(page, [withdrawal.json()["id"]], "approve")
    run_action(page)
    expect(page.locator(".messagelist .warning")).to_contain_text("Nobody decides on their own withdrawal")
    shot(page, "admin-withdrawal-own-refused")
    assert own.call("GET", "withdrawals/").json()[0]["status"] == "requested"


def test_support_sees_withdrawals_but_no_action_to_approve_them(
    page_as: Callable[[str], Page], exchange: Exchange
) -> None:
    trader = exchange.register("supported")
    trader.deposit("USDT", "100")
    trader.call("POST", "withdrawals/", json={"asset": "USDT", "amount": "30", "address": ADDRESS})
    page = page_as("support")
    page.goto(f"{exchange.base}/admin/accounts/withdrawal/?q={trader.username}")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    expect(page.locator("select[name=action]")).to_have_count(0)
    expect(page.locator("input.action-select")).to_have_count(0)
    shot(page, "admin-withdrawals-support")


def test_an_adjustment_proposed_by_one_operator_is_applied_when_another_approves(
    page_as: Callable[[str], Page], exchange: Exchange
) -> None:
    trader = exchange.register("compensated")
    trader.deposit("USDT", "100")

    maker = page_as("finance")
    maker.goto(f"{exchange.base}/admin/accounts/balanceadjustment/")
    maker.click("#propose-adjustment")
    maker.fill("#id_username", trader.username)
    maker.select_option("#id_asset", "USDT")
    maker.fill("#id_amount", "25")
    maker.select_option("#id_category", "compensation")
    maker.fill("#id_reason", "Orders stuck during the 4 December outage, ticket 1187")
    shot(maker, "admin-adjustment-propose")
    maker.click("#page-form input[type=submit]")
    expect(maker.locator(".messagelist .success")).to_contain_text("another operator must approve it")
    assert trader.balances()["USDT"] == (Decimal("100"), Decimal("0"))

    [(adjustment_id,)] = exchange.query(
        "SELECT a.id FROM accounts_balanceadjustment a JOIN accounts_user u ON u.id = a.user_id WHERE u.username = %s",
        trader.username,
    )
    # The proposer is refused the approval.
    maker.goto(f"{exchange.base}/admin/accounts/balanceadjustment/?q={trader.username}")
    choose_action(maker, [adjustment_id], "approve")
    run_action(maker)
    maker.click("#confirm-form input[type=submit]")
    expect(maker.locator(".messagelist .warning")).to_contain_text("someone other than its proposer")
    assert trader.balances()["USDT"] == (Decimal("100"), Decimal("0"))

    checker = page_as("finance2")
    checker.goto(f"{exchange.base}/admin/accounts/balanceadjustment/?awaiting=me")
    choose_action(checker, [adjustment_id], "approve")
    run_action(checker)
    checker.fill("#id_note", "Checked against the outage report")
    shot(checker, "admin-adjustment-approve")
    checker.click("#confirm-form input[type=submit]")
    expect(checker.locator(".messagelist .success")).to_contain_text("1 adjustments approved and applied")
    assert trader.balances()["USDT"] == (Decimal("125"), Decimal("0"))
    assert "all invariants hold" in exchange.manage("reconcile")


def test_a_restricted_users_order_is_refused_until_the_restriction_is_lifted(
    page_as: Callable[[str], Page], exchange: Exchange
) -> None:
    trader = exchange.register("suspect")
    trader.deposit("USDT", "100")
    body = {"symbol": "BTC_USDT", "side": "Buy", "order_type": "Limit", "price": "100", "quantity": "0.1"}

    page = page_as("compliance")
    page.goto(f"{exchange.base}/admin/accounts/user/?q={trader.username}")
    choose_action(page, [trader.id], "restrict")
    run_action(page)
    page.check("input[name=kind][value=trading]")
    page.fill("#id_reason", "Card chargeback under review, case 552")
    shot(page, "admin-restrict-user")
    page.click("#confirm-form input[type=submit]")
    expect(page.locator(".messagelist .success")).to_contain_text("1 users restricted")

    refused = trader.order(**body)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "trading_restricted")
    # Withdrawals are restricted separately.
    assert trader.call("POST", "withdrawals/", json={"asset": "USDT", "amount": "10", "address": ADDRESS}).ok

    page.goto(f"{exchange.base}/admin/accounts/user/?q={trader.username}")
    choose_action(page, [trader.id], "unrestrict")
    run_action(page)
    page.check("input[name=kind][value=trading]")
    page.fill("#id_reason", "Chargeback withdrawn")
    page.click("#confirm-form input[type=submit]")
    expect(page.locator(".messagelist .success")).to_contain_text("1 restrictions lifted")
    assert trader.order(**body).status_code == 201

    page.goto(f"{exchange.base}/admin/accounts/userrestriction/?q={trader.username}")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    shot(page, "admin-restrictions")


def test_a_held_deposit_is_released_by_finance(page_as: Callable[[str], Page], exchange: Exchange) -> None:
    trader = exchange.register("bigdeposit")
    # Above the seeded BTC review threshold of 10,000: custody confirms it, and it waits for a person.
    tx_id = f"0x{trader.username}"
    address = trader.call("GET", "deposits/address/", params={"asset": "BTC"}).json()["address"]
    report = {"asset": "BTC", "address": address, "amount": "10001", "tx_id": tx_id, "confirmations": 6}
    held = exchange.custody("deposits/", report)
    assert held.json()["status"] == "held", held.text

    page = page_as("finance2")
    page.goto(f"{exchange.base}/admin/accounts/deposit/?awaiting=me&q={trader.username}")
    choose_action(page, [held.json()["id"]], "release")
    shot(page, "admin-deposit-release")
    run_action(page)
    expect(page.locator(".messagelist .success")).to_contain_text("1 deposits released and credited")
    assert trader.balances()["BTC"] == (Decimal("10001"), Decimal("0"))


def test_trades_export_as_csv_for_a_date_range(page_as: Callable[[str], Page], exchange: Exchange) -> None:
    page = page_as("finance")
    page.goto(f"{exchange.base}/admin/settlement/trade/")
    page.click("#export-csv")
    today = eventually(lambda: exchange.query("SELECT current_date::text")[0][0])
    page.fill("#id_start", today)
    page.fill("#id_end", today)
    shot(page, "admin-export")
    with page.expect_download() as download:
        page.click("#page-form input[type=submit]")
    content = open(download.value.path()).read().splitlines()  # noqa: SIM115
    assert content[0].startswith("id,market_id,seq,executed_at,price")
