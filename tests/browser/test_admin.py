"""The operator's admin, driven in a real headless Chromium against the running exchange.

Screenshots of each page land in docs/screenshots/ so the operations guide shows what operators see.
"""

import os
import shutil
from collections.abc import Iterator
from decimal import Decimal

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.e2e.harness import ROOT, Exchange

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

SHOTS = ROOT / "docs" / "screenshots"
OPERATOR, OPERATOR_PASSWORD = "op_browser", "Operator-pass-42"
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Chromium is not installed: `make browser` installs it"
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def operator(exchange: Exchange) -> str:
    exchange.manage("seed_demo", env={"OPERATOR_USERNAME": OPERATOR, "OPERATOR_PASSWORD": OPERATOR_PASSWORD})
    return OPERATOR


@pytest.fixture
def page(browser: Browser, exchange: Exchange, operator: str) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    opened = context.new_page()
    opened.goto(f"{exchange.base}/admin/login/")
    opened.fill("#id_username", operator)
    opened.fill("#id_password", OPERATOR_PASSWORD)
    opened.click("input[type=submit]")
    expect(opened.locator("#site-name")).to_be_visible()
    yield opened
    context.close()


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def test_the_login_page_refuses_a_wrong_password(browser: Browser, exchange: Exchange, operator: str) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 700})
    page.goto(f"{exchange.base}/admin/login/")
    page.fill("#id_username", operator)
    page.fill("#id_password", "not-the-password")
    page.click("input[type=submit]")
    expect(page.locator(".errornote")).to_be_visible()
    shot(page, "admin-login-refused")
    page.close()


def test_the_dashboard_shows_settlement_and_the_work_waiting(page: Page, exchange: Exchange) -> None:
    trader = exchange.register("dashboard")
    trader.deposit("USDT", "50")
    trader.call("POST", "withdrawals/", json={"asset": "USDT", "amount": "5", "address": "T9dash"})
    page.goto(f"{exchange.base}/admin/")
    pending = int(page.locator("#withdrawals-pending").inner_text())
    assert pending >= 1
    expect(page.locator("#settlement-module")).to_contain_text("BTC_USDT")
    expect(page.locator("#settlement-module")).to_contain_text("ETH_USDT")
    shot(page, "admin-dashboard")
    page.get_by_role("link", name="Withdrawals to review").click()
    expect(page.locator("#result_list tbody tr")).to_have_count(pending)
    expect(page.locator("#result_list")).to_contain_text(trader.username)


def test_the_operator_sees_every_model_on_the_index(page: Page) -> None:
    for section in ("Accounts and money", "Markets and orders", "Settlement"):
        expect(page.get_by_role("table", name=section)).to_be_visible()
    for model in ("Ledger entries", "Deposits", "Withdrawals", "Orders", "Trades", "Engine events", "Alerts"):
        expect(page.get_by_role("link", name=model, exact=True)).to_be_visible()
    shot(page, "admin-index")


def test_trades_and_orders_are_listed_read_only(page: Page, exchange: Exchange) -> None:
    seller, buyer = exchange.register("adminseller"), exchange.register("adminbuyer")
    seller.deposit("BTC", "1")
    buyer.deposit("USDT", "1000")
    sell = seller.order(symbol="BTC_USDT", side="Sell", order_type="Limit", price="42000", quantity="0.002").json()
    seller.wait_status(sell["id"], "open")
    buy = buyer.order(symbol="BTC_USDT", side="Buy", order_type="Limit", price="42000", quantity="0.002").json()
    buyer.wait_status(buy["id"], "filled")

    page.goto(f"{exchange.base}/admin/settlement/trade/?q={buyer.username}")
    row = page.locator("#result_list tbody tr").first
    expect(row.locator("td.field-price__amount")).to_have_text("42000")
    expect(row.locator("td.field-quantity__amount")).to_have_text("0.002")
    expect(row).to_contain_text(buyer.username)
    expect(page.get_by_role("link", name="Add trade")).to_have_count(0)
    shot(page, "admin-trades")

    page.goto(f"{exchange.base}/admin/matching/order/?status__exact=filled&q={seller.username}")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    page.locator("#result_list tbody tr th a").first.click()
    expect(page.locator("input[type=submit][value=Save]")).to_have_count(0)
    expect(page.locator(".field-filled__amount .readonly")).to_have_text("0.002")
    shot(page, "admin-order-detail")

    page.goto(f"{exchange.base}/admin/accounts/ledgerentry/?q=trade")
    expect(page.locator("#result_list")).to_be_visible()
    shot(page, "admin-ledger")


def test_approving_a_withdrawal_in_the_admin_sends_the_funds_and_is_audited(page: Page, exchange: Exchange) -> None:
    trader = exchange.register("withdrawer")
    trader.deposit("USDT", "300")
    withdrawal = trader.call("POST", "withdrawals/", json={"asset": "USDT", "amount": "120", "address": "T9abc"}).json()
    assert trader.balances()["USDT"] == (Decimal("180"), Decimal("120"))

    page.goto(f"{exchange.base}/admin/accounts/withdrawal/?status__exact=pending&q={trader.username}")
    page.locator(f"input.action-select[value='{withdrawal['id']}']").check()
    page.select_option("select[name=action]", "approve")
    shot(page, "admin-withdrawal-approve")
    page.click("button[name=index]")
    expect(page.locator(".messagelist .success")).to_contain_text("1 withdrawals approved")
    shot(page, "admin-withdrawal-approved")

    assert trader.balances()["USDT"] == (Decimal("180"), Decimal("0"))
    assert exchange.query(
        "SELECT a.action, u.username FROM accounts_auditlog a JOIN accounts_user u ON u.id = a.actor_id "
        "WHERE a.target = %s",
        f"withdrawal:{withdrawal['id']}",
    ) == [("withdrawal_approve", OPERATOR)]


def test_halting_a_market_in_the_admin_stops_new_orders(page: Page, exchange: Exchange) -> None:
    trader = exchange.register("halted")
    trader.deposit("USDT", "100")
    page.goto(f"{exchange.base}/admin/matching/market/")
    page.locator("input.action-select[value='ETH_USDT']").check()
    page.select_option("select[name=action]", "halt")
    page.click("button[name=index]")
    expect(page.locator(".messagelist .success")).to_contain_text("1 markets halted")
    shot(page, "admin-markets")
    try:
        refused = trader.order(symbol="ETH_USDT", side="Buy", order_type="Limit", price="100", quantity="0.5")
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "market_halted"
    finally:
        page.locator("input.action-select[value='ETH_USDT']").check()
        page.select_option("select[name=action]", "resume")
        page.click("button[name=index]")
        expect(page.locator(".messagelist .success")).to_contain_text("1 markets resumed")
    accepted = trader.order(symbol="ETH_USDT", side="Buy", order_type="Limit", price="100", quantity="0.5")
    assert accepted.status_code == 201


def test_a_market_keeps_its_steps_and_saves_a_fee_change(page: Page, exchange: Exchange) -> None:
    page.goto(f"{exchange.base}/admin/matching/market/BTC_USDT/change/")
    expect(page.locator(".field-tick_size__amount .readonly")).to_have_text("0.01")
    expect(page.locator("#id_min_notional")).to_have_value("10")
    shot(page, "admin-market-change")
    page.fill("#id_taker_fee", "0.0025")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist .success")).to_be_visible()
    market = exchange.http.get(f"{exchange.base}/api/markets/").json()
    assert {m["symbol"]: m["taker_fee"] for m in market}["BTC_USDT"] == "0.0025"
    page.goto(f"{exchange.base}/admin/matching/market/BTC_USDT/change/")
    page.fill("#id_taker_fee", "0.002")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist .success")).to_be_visible()


def test_a_market_added_in_the_admin_trades_without_a_restart(page: Page, exchange: Exchange) -> None:
    page.goto(f"{exchange.base}/admin/matching/market/add/")
    page.fill("#id_symbol", "ETH_BTC")
    page.select_option("#id_base", "ETH")
    page.select_option("#id_quote", "BTC")
    page.fill("#id_tick_size", "0.00001")
    page.fill("#id_lot_size", "0.001")
    page.fill("#id_min_notional", "0.0001")
    shot(page, "admin-market-add")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist .success")).to_be_visible()

    seller, buyer = exchange.register("ethbtcseller"), exchange.register("ethbtcbuyer")
    seller.deposit("ETH", "2")
    buyer.deposit("BTC", "1")
    sell = seller.order(symbol="ETH_BTC", side="Sell", order_type="Limit", price="0.05", quantity="1.5")
    assert sell.status_code == 201, sell.text
    seller.wait_status(sell.json()["id"], "open")
    buy = buyer.order(symbol="ETH_BTC", side="Buy", order_type="Limit", price="0.05", quantity="1.5")
    assert buyer.wait_status(buy.json()["id"], "filled")["filled"] == "1.5"
    assert buyer.balances()["ETH"][0] == Decimal("1.5") - Decimal("1.5") * Decimal("0.002")


def test_a_user_page_shows_their_balances(page: Page, exchange: Exchange) -> None:
    trader = exchange.register("richuser")
    trader.deposit("BTC", "0.75")
    page.goto(f"{exchange.base}/admin/accounts/user/{trader.id}/change/")
    expect(page.locator("#accounts-group td.field-balance__amount").first).to_have_text("0.75")
    shot(page, "admin-user")
