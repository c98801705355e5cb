"""Signing in to the admin: password, the TOTP second factor, enrolment, lock-out and the login
records; and the API's token login, which counts against the same username."""

import re

import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.test import APIClient

from accounts.models import AuditLog
from console.lockout import client_ip
from tests.console.conftest import BROWSER, code, device_for, log_in, wrong
from tests.factories import PASSWORD

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


def enrolling(user) -> tuple[Client, TOTPDevice]:
    """A session of `user` signed in with the password, on the enrolment page, and the device it
    shows (not yet confirmed)."""
    client = browser()
    log_in(client, user.username)
    enrolment_page(client)
    return client, TOTPDevice.objects.get(user=user, confirmed=False)


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
    client, device = enrolling(user)

    done = client.post("/admin/two-factor/", {"otp_token": code(device)})

    assert done.status_code == 302 and done["Location"] == "/admin/"
    device.refresh_from_db()
    assert device.confirmed
    assert admin_opens(client)
    row = AuditLog.objects.get(action="two_factor_enrolled")
    assert (row.actor, row.target, row.details["device"]) == (user, f"user:{user.pk}", device.pk)


def test_enrolling_with_a_wrong_code_confirms_nothing_and_opens_nothing(required, staff) -> None:
    user = staff("finance")
    client, device = enrolling(user)

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


# --- lock-out and the login records ---------------------------------------------------------------


def test_five_wrong_passwords_lock_the_username_out_even_with_the_right_password(staff) -> None:
    user = staff("finance")
    for attempt in range(4):
        assert log_in(browser(), user.username, password=f"wrong-{attempt}").status_code == 200
    locked = log_in(browser(), user.username, password="wrong-4")
    assert locked.status_code == 429
    assert b"locked out" in locked.content

    client = browser()
    still = log_in(client, user.username)
    assert still.status_code == 429
    assert b"60 minutes" in still.content
    assert not admin_opens(client)


def test_wrong_codes_after_the_right_password_count_as_failed_logins(settings, staff) -> None:
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    user = staff("support")
    device = device_for(user)
    for _ in range(4):
        assert log_in(browser(), user.username, otp_token=wrong(device)).status_code == 200
    assert AccessAttempt.objects.get(username=user.username).failures_since_start == 4
    assert log_in(browser(), user.username, otp_token=wrong(device)).status_code == 429

    client = browser()
    assert log_in(client, user.username, otp_token=code(device)).status_code == 429
    assert not admin_opens(client)


def test_a_successful_sign_in_clears_the_count_of_earlier_failures(staff) -> None:
    user = staff("support")
    for _ in range(4):
        log_in(browser(), user.username, password="wrong-password")
    assert log_in(browser(), user.username).status_code == 302
    assert not AccessAttempt.objects.filter(username=user.username).exists()
    assert log_in(browser(), user.username, password="wrong-again").status_code == 200


def test_every_sign_in_is_recorded_with_the_address_and_the_browser(staff) -> None:
    user = staff("support")
    log_in(browser(), user.username, password="wrong-password", REMOTE_ADDR="192.0.2.7")
    log_in(browser(), user.username, REMOTE_ADDR="192.0.2.8")

    failure = AccessFailureLog.objects.get(username=user.username)
    assert (failure.ip_address, failure.user_agent, failure.locked_out) == ("192.0.2.7", BROWSER, False)
    success = AccessLog.objects.get(username=user.username)
    assert (success.ip_address, success.user_agent, success.path_info) == ("192.0.2.8", BROWSER, "/admin/login/")


def test_behind_trusted_proxies_the_address_is_the_one_the_first_proxy_saw(settings, rf) -> None:
    spoofed = {"HTTP_X_FORWARDED_FOR": "203.0.113.66, 198.51.100.4", "REMOTE_ADDR": "10.0.0.2"}
    settings.TRUSTED_PROXY_COUNT = 0
    assert client_ip(rf.post("/admin/login/", **spoofed)) == "10.0.0.2"
    settings.TRUSTED_PROXY_COUNT = 1
    assert client_ip(rf.post("/admin/login/", **spoofed)) == "198.51.100.4"
    settings.TRUSTED_PROXY_COUNT = 2
    assert client_ip(rf.post("/admin/login/", **spoofed)) == "203.0.113.66"


def test_an_admin_unlocks_a_locked_out_user_and_the_unlock_is_audited(staff, signed_in) -> None:
    user = staff("finance")
    for _ in range(5):
        log_in(browser(), user.username, password="wrong-password")
    assert log_in(browser(), user.username).status_code == 429

    admin = staff("admin")
    attempts = list(AccessAttempt.objects.filter(username=user.username).values_list("pk", flat=True))
    unlocked = signed_in(admin).post(
        "/admin/axes/accessattempt/", {"action": "unlock", "_selected_action": attempts, "index": 0}
    )

    assert unlocked.status_code == 302
    assert log_in(browser(), user.username).status_code == 302
    row = AuditLog.objects.get(action="login_unlock")
    # Five failures and the refused attempt with the right password while locked out.
    assert (row.actor, row.target, row.details["failures"]) == (admin, f"login:{user.username}", 6)


def test_only_the_admin_role_may_unlock(staff, signed_in) -> None:
    user = staff("finance")
    for _ in range(5):
        log_in(browser(), user.username, password="wrong-password")
    attempts = list(AccessAttempt.objects.values_list("pk", flat=True))
    for role in ("compliance", "finance", "support"):
        signed_in(staff(role)).post(
            "/admin/axes/accessattempt/", {"action": "unlock", "_selected_action": attempts, "index": 0}
        )
    assert AccessAttempt.objects.count() == len(attempts)
    assert signed_in(staff("compliance")).get("/admin/axes/accessattempt/").status_code == 200
    assert signed_in(staff("support")).get("/admin/axes/accessattempt/").status_code == 403


# --- the API's token login --------------------------------------------------------------------------


def test_failed_api_token_logins_count_towards_the_admin_lock_out(staff) -> None:
    """One password, one count: a guesser locked out of the admin cannot carry on through the API,
    nor the other way round."""
    user = staff("finance")
    api = APIClient()
    for _ in range(5):
        refused = api.post("/api/auth/token/", {"username": user.username, "password": "wrong"}, format="json")
        assert refused.status_code == 401
        assert set(refused.json()["error"]) == {"code", "message", "fields"}
    assert AccessFailureLog.objects.filter(username=user.username, path_info="/api/auth/token/").count() == 5

    assert log_in(browser(), user.username).status_code == 429


def test_the_admin_lock_out_refuses_the_api_token_login_with_a_json_error(settings, staff) -> None:
    settings.API_LOGIN_FAILURE_LIMIT = 5
    user = staff("finance")
    for _ in range(5):
        log_in(browser(), user.username, password="wrong-password")

    locked = APIClient().post("/api/auth/token/", {"username": user.username, "password": PASSWORD}, format="json")
    assert locked.status_code == 429
    assert locked.json()["error"]["code"] == "login_locked"


def test_a_successful_api_token_login_is_recorded_without_a_session(staff) -> None:
    user = staff("finance")
    api = APIClient(HTTP_USER_AGENT=BROWSER)
    tokens = api.post("/api/auth/token/", {"username": user.username, "password": PASSWORD}, format="json")
    assert tokens.status_code == 200
    record = AccessLog.objects.get(username=user.username)
    assert (record.path_info, record.user_agent, record.session_hash) == ("/api/auth/token/", BROWSER, "")
    assert "sessionid" not in tokens.cookies


def test_the_login_records_open_read_only_for_compliance_and_admin(staff, signed_in) -> None:
    user = staff("support")
    log_in(browser(), user.username, password="wrong-password")
    log_in(browser(), user.username)
    pages = {
        "accesslog": AccessLog.objects.get().pk,
        "accessfailurelog": AccessFailureLog.objects.get().pk,
    }
    log_in(browser(), user.username, password="wrong-again")
    pages["accessattempt"] = AccessAttempt.objects.get().pk

    for role in ("compliance", "admin"):
        client = signed_in(staff(role))
        for model, pk in pages.items():
            listed = client.get(f"/admin/axes/{model}/")
            assert listed.status_code == 200 and user.username.encode() in listed.content, (role, model)
            detail = client.get(f"/admin/axes/{model}/{pk}/change/")
            assert detail.status_code == 200, (role, model)
            assert b"127.0.0.1" in detail.content
            assert b'name="_save"' not in detail.content


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
