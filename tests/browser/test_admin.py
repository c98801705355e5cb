"""The operator's admin, driven in a real headless Chromium against the running exchange: signing in,
what each role sees, markets, orders and trades. The money flows are in test_money_flows.py."""

import re
from collections.abc import Callable
from decimal import Decimal

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.pages import ADDRESS, VIEWPORT, Operator, enrol, shot, submit_login, trade
from tests.e2e.harness import Exchange

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def test_a_new_operator_sets_up_an_authenticator_app_then_signs_in_with_its_code(
    browser: Browser, exchange: Exchange, staff: dict[str, Operator]
) -> None:
    operator = staff["compliance"]
    enrolling = browser.new_context(viewport=VIEWPORT)
    page = enrolling.new_page()
    submit_login(page, exchange, operator)
    expect(page).to_have_url(re.compile(r"/admin/two-factor/"))
    page.goto(f"{exchange.base}/admin/accounts/user/")
    expect(page).to_have_url(re.compile(r"/admin/two-factor/"))
    shot(page, "admin-two-factor-enrol")
    enrol(page, operator)
    enrolling.close()

    signed = browser.new_context(viewport=VIEWPORT)
    page = signed.new_page()
    page.goto(f"{exchange.base}/admin/login/")
    page.fill("#id_username", operator.username)
    page.fill("#id_password", operator.password)
    page.fill("#id_otp_token", operator.code())
    shot(page, "admin-login-two-factor")
    page.click("input[type=submit]")
    expect(page).not_to_have_url(re.compile(r"/admin/(two-factor|login)/"))

    guessing = browser.new_context(viewport=VIEWPORT)
    guess = guessing.new_page()
    submit_login(guess, exchange, operator, operator.wrong_code())
    expect(guess.locator(".errornote")).to_contain_text("authentication code is not right")
    guessing.close()

    page.goto(f"{exchange.base}/admin/axes/accesslog/?q={operator.username}")
    expect(page.locator("#result_list tbody tr").first).to_contain_text("127.0.0.1")
    page.goto(f"{exchange.base}/admin/axes/accessfailurelog/?q={operator.username}")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    expect(page.locator("#result_list tbody tr")).to_contain_text("HeadlessChrome")
    shot(page, "admin-login-failures")
    signed.close()


def test_the_login_page_refuses_a_wrong_password(
    browser: Browser, exchange: Exchange, staff: dict[str, Operator]
) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 700})
    support = staff["support"]
    submit_login(page, exchange, Operator(support.username, f"not-{support.password}"))
    expect(page.locator(".errornote")).to_be_visible()
    shot(page, "admin-login-refused")
    page.close()


def test_the_dashboard_shows_what_waits_for_the_operator_and_links_to_it(
    page_as: Callable[[str], Page], exchange: Exchange
) -> None:
    trader, seller = exchange.register("dashboard"), exchange.register("dashseller")
    trader.deposit("USDT", "5000")
    seller.deposit("ETH", "1")
    trade(seller, trader, "ETH_USDT", "3000", "0.5")  # a trade today, for the charts
    answer = trader.call("POST", "withdrawals/", json={"asset": "USDT", "amount": "15", "address": ADDRESS})
    assert answer.status_code == 201, answer.text
    page = page_as("finance")
    page.goto(f"{exchange.base}/admin/")
    waiting = page.locator("#waiting-module tr", has_text="Withdrawals to approve")
    count = int(waiting.locator("td.number").inner_text())
    assert count >= 1
    expect(page.locator("#liabilities-module")).to_contain_text("USDT")
    expect(page.locator("#settlement-module")).to_contain_text("BTC_USDT")
    expect(page.locator("#volume-chart")).to_have_attribute("data-drawn", "true")
    expect(page.locator("#fees-chart")).to_have_attribute("data-drawn", "true")
    shot(page, "admin-dashboard")
    waiting.get_by_role("link").click()
    expect(page.locator("#result_list tbody tr")).to_have_count(count)
    expect(page.locator("#result_list")).to_contain_text(trader.username)


@pytest.mark.parametrize(
    ("username", "shown", "hidden"),
    [
        ("support", ["Users", "Deposits", "Withdrawals", "Orders", "Trades"], ["Ledger entries", "Groups", "Alerts"]),
        ("finance", ["Ledger entries", "Deposits", "Withdrawals", "Audit logs", "Trades"], ["Engine events", "Groups"]),
        (
            "markets",
            ["Markets", "Orders", "Engine events", "Alerts", "Chain checkpoints"],
            ["Ledger entries", "Withdrawals", "Groups"],
        ),
        ("admin", ["Users", "Groups", "Access attempts", "TOTP devices"], ["Withdrawals", "Orders", "Trades"]),
    ],
)
def test_each_role_sees_the_models_of_its_work_on_the_index(
    page_as: Callable[[str], Page], exchange: Exchange, username: str, shown: list[str], hidden: list[str]
) -> None:
    page = page_as(username)
    page.goto(f"{exchange.base}/admin/")
    for model in shown:
        expect(page.get_by_role("link", name=model, exact=True).first).to_be_visible()
    for model in hidden:
        expect(page.get_by_role("link", name=model, exact=True)).to_have_count(0)
    shot(page, f"admin-index-{username}")


def test_trades_and_orders_are_listed_read_only(page_as: Callable[[str], Page], exchange: Exchange) -> None:
    page = page_as("finance")
    seller, buyer = exchange.register("adminseller"), exchange.register("adminbuyer")
    seller.deposit("BTC", "1")
    buyer.deposit("USDT", "1000")
    trade(seller, buyer, "BTC_USDT", "42000", "0.002")

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


def test_halting_a_market_in_the_admin_stops_new_orders(page_as: Callable[[str], Page], exchange: Exchange) -> None:
    page = page_as("markets")
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


def test_a_market_keeps_its_steps_and_saves_a_fee_change(page_as: Callable[[str], Page], exchange: Exchange) -> None:
    page = page_as("markets")
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


def test_a_market_added_in_the_admin_trades_without_a_restart(
    page_as: Callable[[str], Page], exchange: Exchange
) -> None:
    page = page_as("markets")
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


def test_a_user_page_shows_their_balances(page_as: Callable[[str], Page], exchange: Exchange) -> None:
    page = page_as("support")
    trader = exchange.register("richuser")
    trader.deposit("BTC", "0.75")
    page.goto(f"{exchange.base}/admin/accounts/user/{trader.id}/change/")
    expect(page.locator("#accounts-group td.field-balance__amount").first).to_have_text("0.75")
    shot(page, "admin-user")


def test_markets_sees_how_far_each_hash_chain_is_verified(page_as: Callable[[str], Page], exchange: Exchange) -> None:
    seller, buyer = exchange.register("chainseller"), exchange.register("chainbuyer")
    seller.deposit("BTC", "1")
    buyer.deposit("USDT", "1000")
    trade(seller, buyer, "BTC_USDT", "43000", "0.001")
    # A recorded run from genesis moves every market's checkpoint, as beat's runs do.
    exchange.manage("reconcile", "--record")
    (verified,) = exchange.query("SELECT max(seq) FROM settlement_engineevent WHERE market = 'BTC_USDT'")[0]

    page = page_as("markets")
    page.goto(f"{exchange.base}/admin/settlement/chaincheckpoint/")
    row = page.locator("#result_list tbody tr", has_text="BTC_USDT")
    expect(row.locator("td.field-seq")).to_have_text(str(verified))
    expect(row.locator("td.field-unverified")).to_have_text("0")
    expect(page.get_by_role("link", name="Add chain checkpoint")).to_have_count(0)
    shot(page, "admin-chain-checkpoints")
