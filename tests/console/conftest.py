"""Staff users in their roles, signed in to the admin, and the codes their authenticator apps show."""

import itertools
import time
from collections.abc import Callable

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from tests.factories import PASSWORD, UserFactory

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) operator-test"
_numbers = itertools.count()


@pytest.fixture
def staff(db: None) -> Callable[..., User]:
    """`staff("finance")`: a staff user in that role's group (no role: staff with no permission)."""

    def make(role: str | None = None, *, username: str | None = None, **fields: object) -> User:
        user = UserFactory(username=username or f"{role or 'staff'}{next(_numbers)}", is_staff=True, **fields)
        if role:
            user.groups.add(Group.objects.get(name=role))
        return user

    return make


@pytest.fixture
def signed_in() -> Callable[[User], Client]:
    """A test client whose session belongs to `user`, as a password-only sign-in leaves it."""

    def make(user: User) -> Client:
        client = Client(HTTP_USER_AGENT=BROWSER)
        client.force_login(user)
        return client

    return make


def device_for(user: User) -> TOTPDevice:
    return TOTPDevice.objects.create(user=user, name="phone", confirmed=True)


def code(device: TOTPDevice, *, steps_ahead: int = 0) -> str:
    """The code the user's app shows now (or that many 30-second steps later)."""
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits)
    totp.time = time.time() + steps_ahead * device.step
    return f"{totp.token():0{device.digits}d}"


def wrong(device: TOTPDevice) -> str:
    """A six-digit code the device accepts at no time step near now."""
    near = {code(device, steps_ahead=n) for n in range(-2, 3)}
    return next(c for c in (f"{n:06d}" for n in range(1_000_000)) if c not in near)


def log_in(client: Client, username: str, password: str = PASSWORD, otp_token: str = "", **extra: object):
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": password, "otp_token": otp_token, "next": "/admin/"},
        **extra,
    )
