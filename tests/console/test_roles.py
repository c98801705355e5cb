"""The staff roles the migration creates, checked against the table in console/roles.py and against
what each role is for."""

import pytest
from django.contrib.auth.models import Group

from console.roles import PURPOSES, ROLES

pytestmark = pytest.mark.django_db


def granted(role: str) -> set[str]:
    group = Group.objects.get(name=role)
    return {
        f"{app}.{codename}" for app, codename in group.permissions.values_list("content_type__app_label", "codename")
    }


def test_each_role_is_a_group_with_exactly_the_permissions_of_the_role_table() -> None:
    assert set(Group.objects.values_list("name", flat=True)) >= set(ROLES)
    for role, permissions in ROLES.items():
        assert granted(role) == set(permissions), role
        assert len(permissions) == len(set(permissions)), f"{role} lists a permission twice"
    assert set(PURPOSES) == set(ROLES)


def test_a_role_user_holds_the_role_permissions_and_nothing_else(staff) -> None:
    for role, permissions in ROLES.items():
        user = staff(role)
        assert user.get_all_permissions() == set(permissions), role


def test_support_may_only_look() -> None:
    assert granted("support")
    assert {p.split(".")[1].split("_")[0] for p in granted("support")} == {"view"}


def test_finance_has_support_reading_and_the_money_decisions_but_not_staff_or_markets() -> None:
    finance = granted("finance")
    assert granted("support") <= finance
    for decision in (
        "accounts.approve_withdrawal",
        "accounts.release_deposit",
        "accounts.propose_adjustment",
        "accounts.approve_adjustment",
    ):
        assert decision in finance
    assert not finance & {"accounts.manage_staff", "accounts.change_user", "matching.halt_market"}


def test_only_the_admin_role_manages_staff_second_factors_and_lock_outs() -> None:
    for permission in (
        "accounts.manage_staff",
        "accounts.change_user",
        "auth.change_group",
        "otp_totp.delete_totpdevice",
        "axes.delete_accessattempt",
    ):
        holders = {role for role in ROLES if permission in granted(role)}
        assert holders == {"admin"}, permission


def test_the_admin_role_moves_no_money_and_runs_no_market() -> None:
    admin = granted("admin")
    assert not {p for p in admin if p.startswith(("matching.", "settlement."))}
    assert not admin & {"accounts.approve_withdrawal", "accounts.release_deposit", "accounts.approve_adjustment"}


def test_login_records_are_readable_by_compliance_and_admin_only() -> None:
    records = {"axes.view_accessattempt", "axes.view_accesslog", "axes.view_accessfailurelog"}
    assert {role for role in ROLES if records <= granted(role)} == {"compliance", "admin"}
    assert not any(records & granted(role) for role in ("support", "finance", "markets"))


def test_markets_runs_markets_and_alerts_and_touches_no_money() -> None:
    markets = granted("markets")
    assert {"matching.halt_market", "matching.cancel_order", "settlement.resolve_alert"} <= markets
    assert not {p for p in markets if p.startswith("accounts.") and not p.startswith("accounts.view_")}
