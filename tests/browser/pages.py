"""What the admin's browser tests share besides fixtures: the staff member at the keyboard, signing
in, and screenshots."""

import base64
import os
import re
import shutil
import time
from dataclasses import dataclass

from django_otp.oath import TOTP
from playwright.sync_api import Page, expect

from tests.e2e.harness import ROOT, Exchange, Trader

# A withdrawal address of the seeded USDT and ETH format.
ADDRESS = "0x52908400098527886E0F7030069857D2E4169EE7"
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


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def trade(seller: Trader, buyer: Trader, symbol: str, price: str, quantity: str) -> None:
    """One trade through the running exchange: a sell that rests, then a buy that fills it whole."""
    sell = seller.order(symbol=symbol, side="Sell", order_type="Limit", price=price, quantity=quantity).json()
    seller.wait_status(sell["id"], "open")
    buy = buyer.order(symbol=symbol, side="Buy", order_type="Limit", price=price, quantity=quantity).json()
    buyer.wait_status(buy["id"], "filled")
