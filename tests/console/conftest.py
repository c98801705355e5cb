"""Staff users in their roles."""

import itertools
from collections.abc import Callable

import pytest
from django.contrib.auth.models import Group

from accounts.models import User
from tests.factories import UserFactory

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
