"""Writes about operators: second factors, unlocking logins, the development staff accounts.

Each public function is one transaction and writes its audit row inside it.
"""

from collections.abc import Iterable

from axes.models import AccessAttempt
from django.db import transaction
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from accounts.services import audit_record
from core.errors import Conflict, InvalidRequest

DEVICE_NAME = "authenticator app"


def two_factor_device_pending(*, user: User) -> TOTPDevice:
    """The device a user is setting up, created on the first visit and the same on every later one,
    so that a QR code already scanned stays good until the user confirms it."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name=DEVICE_NAME, confirmed=False)
    return device


def two_factor_enrol(*, user: User, token: str) -> TOTPDevice:
    """Confirm the device the user is setting up with the first code it shows.

    A wrong code leaves the device unconfirmed, and django-otp's growing wait between wrong codes
    (kept on the device) is committed, not rolled back with the refusal.
    """
    with transaction.atomic():
        if TOTPDevice.objects.filter(user=user, confirmed=True).exists():
            raise Conflict("already_enrolled", "You already have a second factor; sign in with its code.")
        device = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=False).order_by("pk").first()
        if device is None:
            raise InvalidRequest("no_device", "Open the set-up page again to get a QR code.")
        if device.verify_token(token):
            device.confirmed = True
            device.save(update_fields=["confirmed"])
            TOTPDevice.objects.filter(user=user, confirmed=False).delete()
            audit_record(
                actor=user,
                action="two_factor_enrolled",
                target=f"user:{user.pk}",
                username=user.get_username(),
                device=device.pk,
            )
            return device
    raise InvalidRequest(
        "invalid_code",
        "That code does not match. Check that the phone's clock is right and type the newest code.",
        field="otp_token",
    )


@transaction.atomic
def two_factor_reset(*, user_id: int, acting_user: User, reason: str) -> int:
    """Delete every TOTP device of a user, who must then set up a new one at their next sign-in."""
    reason = reason.strip()
    if not reason:
        raise InvalidRequest("reason_required", "Say why the second factor is reset.", field="reason")
    user = User.objects.select_for_update().get(pk=user_id)
    if user.pk == acting_user.pk:
        raise InvalidRequest("own_second_factor", "Another administrator resets your own second factor.")
    if user.is_superuser and not acting_user.is_superuser:
        raise InvalidRequest("superuser_account", "Only a superuser resets a superuser's second factor.")
    devices = TOTPDevice.objects.filter(user=user)
    count = devices.count()
    if not count:
        raise InvalidRequest("no_second_factor", f"{user.get_username()} has no second factor to reset.")
    devices.delete()
    audit_record(
        actor=acting_user,
        action="two_factor_reset",
        target=f"user:{user.pk}",
        username=user.get_username(),
        devices=count,
        reason=reason,
    )
    return count


@transaction.atomic
def login_unlock(*, attempt_ids: Iterable[int], acting_user: User) -> int:
    """Forget failed admin logins (django-axes' access attempts), which lifts a lock-out at once."""
    attempts = list(
        AccessAttempt.objects.select_for_update()
        .filter(pk__in=list(attempt_ids))
        .order_by("pk")
        .values("pk", "username", "ip_address", "failures_since_start")
    )
    for attempt in attempts:
        audit_record(
            actor=acting_user,
            action="login_unlock",
            target=f"login:{attempt['username']}",
            ip_address=attempt["ip_address"],
            failures=attempt["failures_since_start"],
        )
    AccessAttempt.objects.filter(pk__in=[a["pk"] for a in attempts]).delete()
    return len(attempts)
