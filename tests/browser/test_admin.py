"""The operator's admin, driven in a real headless Chromium against the running exchange.

The exchange asks for a second factor (ADMIN_REQUIRE_2FA, as in production). Each test signs in as
one of the staff users `seed_staff` makes, in the role the work needs; the first sign-in of each
goes through the enrolment page, where the test reads the key the way a phone would scan it and
computes the codes with django-otp's TOTP.

Screenshots of each page land in test-results/screenshots/; `make screenshots` copies them into
docs/screenshots/ for the operations guide.
"""

import base64
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal

import pytest
from django_otp.oath import TOTP
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.e2e.harness import ROOT, Exchange

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

SHOTS = ROOT / "test-results" / "screenshots"
VIEWPORT = {"width": 1440, "height": 900}
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


@dataclass
class Operator:
    """A seeded staff user, and the authenticator app they set up (once they have)."""

    username: str
    password: str
    key: bytes | None = None
    last_step: int = -1

    def code(self) -> str:
        """The code the app shows now; as the exchange takes each code once, wait for the next
        30-second step when this one was already used."""
        assert self.key is not None, f"{self.username} has no authenticator app yet"
        totp = TOTP(self.key)
        while totp.t() <= self.last_step:
            time.sleep(0.5)
        self.last_step = totp.t()
        return f"{totp.token():06d}"

    def wrong_code(self) -> str:
        """A code the app shows at no step near now."""
        totp = TOTP(self.key)
        near = set()
        for offset in range(-2, 3):
            totp.time = time.time() + offset * 30
            near.add(f"{totp.token():06d}")
        return next(code for code in ("000000", "111111", "222222") if code not in near)


@pytest.fixture(scope="module")
def operators(exchange: Exchange) -> dict[str, Operator]:
    """The staff `seed_staff` makes in the exchange, by username, with the passwords it wrote."""
    exchange.manage("seed_staff")
    rows = (exchange.workdir / "staff.txt").read_text().splitlines()
    return {u: Operator(u, p) for u, p, _ in (r.split() for r in rows if r and not r.startswith("#"))}


def submit_login(page: Page, exchange: Exchange, operator: Operator, code: str = "") -> None:
    page.goto(f"{exchange.base}/admin/login/")
    page.fill("#id_username", operator.username)
    page.fill("#id_password", operator.password)
    if code:
        page.fill("#id_otp_token", code)
    page.click("input[type=submit]")


def enrol(page: Page, operator: Operator) -> None:
    """On the enrolment page: take the key as the app would and confirm with its first code."""
    expect(page.locator("#totp-qr svg")).to_be_visible()
    operator.key = base64.b32decode(page.locator("#totp-secret").get_attribute("data-secret"))
    page.fill("#id_otp_token", operator.code())
    page.click("#two-factor-form input[type=submit]")
    expect(page).not_to_have_url(re.compile(r"/admin/(two-factor|login)/"))


@pytest.fixture(scope="module")
def signed_in(browser: Browser, exchange: Exchange, operators: dict[str, Operator]) -> Callable[[str], dict]:
    """The cookies of a session of that seeded user, verified by their app (set up on first use)."""
    sessions: dict[str, dict] = {}

    def session(username: str) -> dict:
        if username not in sessions:
            context = browser.new_context(viewport=VIEWPORT)
            page = context.new_page()
            operator = operators[username]
            submit_login(page, exchange, operator, operator.code() if operator.key else "")
            if operator.key is None:
                expect(page).to_have_url(re.compile(r"/admin/two-factor/"))
                enrol(page, operator)
            sessions[username] = context.storage_state()
            context.close()
        return sessions[username]

    return session


@pytest.fixture
def page_as(browser: Browser, signed_in: Callable[[str], dict]) -> Iterator[Callable[[str], Page]]:
    """`page_as("finance")`: a browser tab signed in as that seeded staff user."""
    contexts = []

    def open_as(username: str) -> Page:
        context = browser.new_context(viewport=VIEWPORT, storage_state=signed_in(username))
        contexts.append(context)
        return context.new_page()

    yield open_as
    for context in contexts:
        context.close()


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def test_a_new_operator_sets_up_an_authenticator_app_then_signs_in_with_its_code(
    browser: Browser, exchange: Exchange, operators: dict[str, Operator]
) -> None:
    operator = operators["compliance"]
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
    browser: Browser, exchange: Exchange, operators: dict[str, Operator]
) -> None:
    page = browser.new_page(viewport={"width": 1200, "height": 700})
    support = operators["support"]
    submit_login(page, exchange, Operator(support.username, f"not-{support.password}"))
    expect(page.locator(".errornote")).to_be_visible()
    shot(page, "admin-login-refused")
    page.close()


def test_the_dashboard_shows_settlement_and_the_work_waiting(
    page_as: Callable[[str], Page], exchange: Exchange
) -> None:
    trader = exchange.register("dashboard")
    trader.deposit("USDT", "50")
    trader.call("POST", "withdrawals/", json={"asset": "USDT", "amount": "5", "address": "T9dash"})
    page = page_as("finance")
    page.goto(f"{exchange.base}/admin/")
    pending = int(page.locator("#withdrawals-pending").inner_text())
    assert pending >= 1
    expect(page.locator("#settlement-module")).to_contain_text("BTC_USDT")
    expect(page.locator("#settlement-module")).to_contain_text("ETH_USDT")
    shot(page, "admin-dashboard")
    page.get_by_role("link", name="Withdrawals to review").click()
    expect(page.locator("#result_list tbody tr")).to_have_count(pending)
    expect(page.locator("#result_list")).to_contain_text(trader.username)


@pytest.mark.parametrize(
    ("username", "shown", "hidden"),
    [
        ("support", ["Users", "Deposits", "Withdrawals", "Orders", "Trades"], ["Ledger entries", "Groups", "Alerts"]),
        ("finance", ["Ledger entries", "Deposits", "Withdrawals", "Audit logs", "Trades"], ["Engine events", "Groups"]),
        ("markets", ["Markets", "Orders", "Engine events", "Alerts"], ["Ledger entries", "Withdrawals", "Groups"]),
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


def test_approving_a_withdrawal_in_the_admin_sends_the_funds_and_is_audited(
    page_as: Callable[[str], Page], exchange: Exchange
) -> None:
    page = page_as("finance")
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
    ) == [("withdrawal_approve", "finance")]


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
