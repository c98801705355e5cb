"""Signing in to the admin: password, the TOTP second factor and enrolment."""

import re

import pytest
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import AuditLog
from tests.console.conftest import BROWSER, code, device_for, log_in, wrong

pytestmark = pytest.mark.django_db


@pytest.fixture
def required(settings) -> None:
    settings.ADMIN_REQUIRE_2FA = True


def browser() -> Client:
    return Client(HTTP_USER_AGENT=BROWSER)


def admin_opens(client: Client) -> bool:
    return client.get("/admin/accounts/").status_code == 200


def enrolment_page(client: Client):
    return client.get("/admin/two-factor/")


# --- the second factor --------------------------------------------------------------------------


def test_with_2fa_required_a_password_alone_leads_to_the_enrolment_page_and_nowhere_else(required, staff) -> None:
    user = staff("finance")
    client = browser()
    signed = log_in(client, user.username)
    assert signed.status_code == 302

    landing = client.get("/admin/", follow=True)
    assert landing.redirect_chain[-1][0].startswith("/admin/two-factor/")
    assert b'id="totp-qr"' in landing.content and b"<svg" in landing.content
    for page in ("/admin/accounts/withdrawal/", "/admin/accounts/user/", "/admin/settlement/trade/"):
        refused = client.get(page)
        assert refused.status_code == 302 and refused["Location"].startswith("/admin/login/"), page
    assert not TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def test_the_enrolment_page_shows_the_same_key_until_the_device_is_confirmed(required, staff) -> None:
    client = browser()
    log_in(client, staff("support").username)
    keys = [re.search(rb'data-secret="([A-Z2-7=]+)"', enrolment_page(client).content).group(1) for _ in range(2)]
    assert keys[0] == keys[1]
    assert TOTPDevice.objects.filter(confirmed=False).count() == 1


def test_enrolling_with_the_code_the_app_shows_confirms_it_opens_the_admin_and_is_audited(required, staff) -> None:
    user = staff("finance")
    client = browser()
    log_in(client, user.username)
    enrolment_page(client)
    device = TOTPDevice.objects.get(user=user)

    done = client.post("/admin/two-factor/", {"otp_token": code(device)})

    assert done.status_code == 302 and done["Location"] == "/admin/"
    device.refresh_from_db()
    assert device.confirmed
    assert admin_opens(client)
    row = AuditLog.objects.get(action="two_factor_enrolled")
    assert (row.actor, row.target, row.details["device"]) == (user, f"user:{user.pk}", device.pk)


def test_enrolling_with_a_wrong_code_confirms_nothing_and_opens_nothing(required, staff) -> None:
    user = staff("finance")
    client = browser()
    log_in(client, user.username)
    enrolment_page(client)
    device = TOTPDevice.objects.get(user=user)

    refused = client.post("/admin/two-factor/", {"otp_token": wrong(device)})

    assert refused.status_code == 200
    assert b"does not match" in refused.content
    device.refresh_from_db()
    assert not device.confirmed
    assert not admin_opens(client)
    assert not AuditLog.objects.filter(action="two_factor_enrolled").exists()


@pytest.mark.parametrize("require", [True, False])
def test_a_user_with_a_device_must_give_its_current_code(settings, staff, require: bool) -> None:
    settings.ADMIN_REQUIRE_2FA = require
    settings.OTP_TOTP_THROTTLE_FACTOR = 0  # no wait between the wrong code and the right one here
    user = staff("support")
    device = device_for(user)

    for token in ("", wrong(device)):
        client = browser()
        refused = log_in(client, user.username, otp_token=token)
        assert refused.status_code == 200, token
        assert b"errornote" in refused.content
        assert not admin_opens(client)

    client = browser()
    assert log_in(client, user.username, otp_token=code(device)).status_code == 302
    assert admin_opens(client)


def test_a_code_is_good_for_one_sign_in_only(staff) -> None:
    user = staff("support")
    device = device_for(user)
    token = code(device)
    assert log_in(browser(), user.username, otp_token=token).status_code == 302
    assert log_in(browser(), user.username, otp_token=token).status_code == 200


def test_with_2fa_off_a_user_without_a_device_signs_in_with_the_password(settings, staff) -> None:
    settings.ADMIN_REQUIRE_2FA = False
    client = browser()
    assert log_in(client, staff("support").username).status_code == 302
    assert admin_opens(client)


def test_a_session_without_the_code_is_refused_once_2fa_is_required(settings, staff, signed_in) -> None:
    client = signed_in(staff("support"))
    settings.ADMIN_REQUIRE_2FA = False
    assert admin_opens(client)
    settings.ADMIN_REQUIRE_2FA = True
    assert not admin_opens(client)


def test_a_user_who_gave_no_code_can_still_log_out(required, staff) -> None:
    client = browser()
    log_in(client, staff("support").username)
    assert client.post("/admin/logout/").status_code == 200
    assert "_auth_user_id" not in client.session


def test_a_non_staff_user_is_refused_whatever_the_password(required, make_user) -> None:
    trader = make_user()
    client = browser()
    assert log_in(client, trader.username).status_code == 200
    assert enrolment_page(client).status_code == 302


def test_the_second_factor_list_names_who_has_one_and_never_shows_a_key(staff, signed_in) -> None:
    device = device_for(staff("finance"))
    client = signed_in(staff("admin"))
    listed = client.get("/admin/otp_totp/totpdevice/")
    detail = client.get(f"/admin/otp_totp/totpdevice/{device.pk}/change/")
    assert listed.status_code == detail.status_code == 200
    for page in (listed, detail):
        assert device.key.encode() not in page.content
        assert b'name="_save"' not in page.content and b"/delete/" not in page.content
    assert signed_in(staff("compliance")).get("/admin/otp_totp/totpdevice/").status_code == 403
