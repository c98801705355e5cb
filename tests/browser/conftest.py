"""Fixtures of the admin's browser tests: a headless Chromium, and the seeded staff signed in.

The exchange asks for a second factor (ADMIN_REQUIRE_2FA, as in production). Each test signs in as
one of the staff users `seed_staff` makes, in the role the work needs; the first sign-in of each
goes through the enrolment page, where the test reads the key the way a phone would scan it and
computes the codes with django-otp's TOTP.

Screenshots of each page land in test-results/screenshots/; `make screenshots` copies them into
docs/screenshots/ for the operations guide and the README.
"""

import re
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.browser.pages import CHROMIUM_FLAGS, VIEWPORT, Operator, chromium_path, enrol, submit_login
from tests.e2e.harness import Exchange


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def staff(exchange: Exchange) -> dict[str, Operator]:
    """The staff `seed_staff` makes in the exchange, by username, with the passwords it wrote."""
    exchange.manage("seed_staff")
    rows = (exchange.workdir / "staff.txt").read_text().splitlines()
    return {u: Operator(u, p) for u, p, _ in (r.split() for r in rows if r and not r.startswith("#"))}


@pytest.fixture(scope="session")
def signed_in(browser: Browser, exchange: Exchange, staff: dict[str, Operator]) -> Callable[[str], dict]:
    """The cookies of a session of that seeded user, verified by their app (set up on first use)."""
    sessions: dict[str, dict] = {}

    def session(username: str) -> dict:
        if username not in sessions:
            context = browser.new_context(viewport=VIEWPORT)
            page = context.new_page()
            operator = staff[username]
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
