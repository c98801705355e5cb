"""Reads about operators: their second factor."""

from django.conf import settings
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User


def totp_devices_confirmed(*, user: User) -> list[TOTPDevice]:
    return list(TOTPDevice.objects.devices_for_user(user, confirmed=True).order_by("pk"))


def second_factor_satisfied(*, user: User) -> bool:
    """Whether this signed-in user's session has the second factor the admin asks of it.

    `user` comes from a request that went through django-otp's middleware. A session verified by a
    device always passes. Otherwise: never with `ADMIN_REQUIRE_2FA` on; with it off, only for a user
    who has no confirmed device (whoever has one must have given its code).
    """
    if user.is_verified():
        return True
    if settings.ADMIN_REQUIRE_2FA:
        return False
    # Asked several times per page (the site asks has_permission for each part it draws): once is enough.
    if not hasattr(user, "_console_has_device"):
        user._console_has_device = TOTPDevice.objects.devices_for_user(user, confirmed=True).exists()
    return not user._console_has_device
