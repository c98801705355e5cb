"""No privilege escalation through the admin: who may change staff flags, roles, permissions and
passwords, that nobody changes their own, and that each such change is audited. Every change is
attempted the way a browser would, by POSTing the admin's form, with fields a page may not even show."""

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import Asset, AuditLog, Login, User
from tests.console.conftest import code, device_for, log_in
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db


def group(name: str) -> Group:
    return Group.objects.get(name=name)


def change_url(user: User) -> str:
    return f"/admin/accounts/user/{user.pk}/change/"


def form_data(user: User, **changes: object) -> dict:
    """What the user change form posts for `user` as it stands, with `changes` on top (a False flag
    is an absent checkbox, as in a browser)."""
    values = {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "is_active": user.is_active,
        "is_staff": user.is_staff,
        "is_superuser": user.is_superuser,
        "groups": [g.pk for g in user.groups.all()],
        "user_permissions": [p.pk for p in user.user_permissions.all()],
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
        "last_login_0": "",
        "last_login_1": "",
        "accounts-TOTAL_FORMS": "0",
        "accounts-INITIAL_FORMS": "0",
        "accounts-MIN_NUM_FORMS": "0",
        "accounts-MAX_NUM_FORMS": "1000",
        **changes,
    }
    return {k: ("on" if v is True else v) for k, v in values.items() if v is not False}


def post_change(client: Client, user: User, **changes: object):
    return client.post(change_url(user), form_data(user, **changes))


def access(user: User) -> tuple:
    user = User.objects.get(pk=user.pk)
    return (
        user.is_staff,
        user.is_superuser,
        sorted(user.groups.values_list("name", flat=True)),
        sorted(user.user_permissions.values_list("codename", flat=True)),
    )


@pytest.fixture
def desk(staff) -> User:
    """A staff user allowed to edit users' details (view and change user) but not to manage staff."""
    user = staff("support", username="desk")
    user.user_permissions.add(*Permission.objects.filter(codename__in=["change_user"]))
    return user


def test_support_reads_a_user_but_can_change_nothing(staff, signed_in, make_user) -> None:
    client = signed_in(staff("support"))
    trader = make_user()
    page = client.get(change_url(trader))
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert post_change(client, trader, email="new@example.com").status_code == 403
    assert client.post("/admin/accounts/asset/add/", {"symbol": "XRP", "name": "x", "decimals": 6}).status_code == 403
    assert not Asset.objects.filter(pk="XRP").exists()
    assert client.get("/admin/accounts/user/add/").status_code == 403
    assert client.get("/admin/auth/group/").status_code == 403


def test_finance_cannot_manage_staff(staff, signed_in) -> None:
    finance, colleague = staff("finance"), staff("support")
    client = signed_in(finance)
    before = access(colleague), access(finance)

    assert post_change(client, colleague, is_staff=False, groups=[group("admin").pk]).status_code == 403
    assert post_change(client, finance, groups=[group("admin").pk]).status_code == 403
    assert client.get(f"/admin/accounts/user/{colleague.pk}/password/").status_code == 403
    assert client.post(f"/admin/auth/group/{group('finance').pk}/change/", {"name": "finance"}).status_code == 403

    assert (access(colleague), access(finance)) == before


def test_without_manage_staff_the_access_fields_are_shown_read_only_and_a_post_of_them_is_ignored(
    desk, signed_in, make_user
) -> None:
    trader = make_user()
    client = signed_in(desk)
    page = client.get(change_url(trader))
    assert page.status_code == 200
    assert b"Staff status" in page.content and b"Groups" in page.content
    for field in (b'name="is_staff"', b'name="is_superuser"', b'name="groups"', b'name="user_permissions"'):
        assert field not in page.content

    admin_role = group("admin").pk
    all_permissions = list(Permission.objects.values_list("pk", flat=True))
    for target in (trader, desk):
        saved = post_change(
            client,
            target,
            email=f"{target.username}@new.example",
            is_staff=True,
            is_superuser=True,
            groups=[admin_role],
            user_permissions=all_permissions,
        )
        assert saved.status_code == 302, saved.content[:2000]

    assert User.objects.get(pk=trader.pk).email == f"{trader.username}@new.example"
    assert access(trader) == (False, False, [], [])
    assert access(desk) == (True, False, ["support"], ["change_user"])
    assert not AuditLog.objects.filter(action="user_access_change").exists()


def test_nobody_changes_their_own_flags_groups_or_permissions_not_even_an_admin_or_a_superuser(
    staff, signed_in
) -> None:
    admin = staff("admin")
    root = staff(username="root", is_superuser=True)
    for user in (admin, root):
        before = access(user)
        saved = post_change(
            signed_in(user),
            user,
            is_staff=False,
            is_superuser=not user.is_superuser,
            groups=[group("finance").pk],
            user_permissions=[Permission.objects.get(codename="approve_withdrawal").pk],
        )
        assert saved.status_code == 302
        assert access(user) == before


def test_an_admin_grants_roles_and_the_staff_flag_to_someone_else_and_it_is_audited(
    staff, signed_in, make_user
) -> None:
    admin, newcomer = staff("admin"), make_user()
    halt = Permission.objects.get(codename="halt_market")

    saved = post_change(
        signed_in(admin), newcomer, is_staff=True, groups=[group("markets").pk], user_permissions=[halt.pk]
    )

    assert saved.status_code == 302
    assert access(newcomer) == (True, False, ["markets"], ["halt_market"])
    row = AuditLog.objects.get(action="user_access_change")
    assert (row.actor, row.target) == (admin, f"user:{newcomer.pk}")
    assert row.details == {
        "username": newcomer.username,
        "is_staff": {"from": False, "to": True},
        "groups": {"added": ["markets"], "removed": []},
        "user_permissions": {"added": ["matching.halt_market"], "removed": []},
    }

    post_change(signed_in(admin), User.objects.get(pk=newcomer.pk), groups=[], is_active=False)
    removed = AuditLog.objects.filter(action="user_access_change").order_by("-pk").first()
    assert removed.details["groups"] == {"added": [], "removed": ["markets"]}
    assert removed.details["is_active"] == {"from": True, "to": False}


def test_only_a_superuser_makes_someone_a_superuser(staff, signed_in) -> None:
    admin, target = staff("admin"), staff("support")
    post_change(signed_in(admin), target, is_superuser=True)
    assert not User.objects.get(pk=target.pk).is_superuser

    root = staff(username="root", is_superuser=True)
    assert post_change(signed_in(root), target, is_superuser=True).status_code == 302
    assert User.objects.get(pk=target.pk).is_superuser
    row = AuditLog.objects.get(action="user_access_change")
    assert (row.actor, row.details["is_superuser"]) == (root, {"from": False, "to": True})


def test_a_superusers_account_is_closed_to_everyone_but_superusers(staff, signed_in) -> None:
    root = staff(username="root", is_superuser=True)
    client = signed_in(staff("admin"))
    assert post_change(client, root, is_staff=False).status_code == 403
    assert client.get(f"/admin/accounts/user/{root.pk}/password/").status_code == 403
    assert User.objects.get(pk=root.pk).is_staff


def test_someone_elses_password_needs_manage_staff_and_setting_it_is_audited(staff, signed_in, desk) -> None:
    target = staff("finance")
    new_password = {"password1": "An-0ther-Passw0rd", "password2": "An-0ther-Passw0rd", "set_usable_password": "true"}
    url = f"/admin/accounts/user/{target.pk}/password/"

    assert signed_in(desk).post(url, new_password).status_code == 403
    assert User.objects.get(pk=target.pk).check_password(PASSWORD)

    admin = staff("admin")
    assert signed_in(admin).post(url, new_password).status_code == 302
    assert User.objects.get(pk=target.pk).check_password("An-0ther-Passw0rd")
    row = AuditLog.objects.get(action="user_password_set")
    assert (row.actor, row.target, row.details["own"]) == (admin, f"user:{target.pk}", False)


def test_a_refused_password_change_writes_no_audit_row(staff, signed_in) -> None:
    target = staff("finance")
    mismatch = {"password1": "An-0ther-Passw0rd", "password2": "different-one-9", "set_usable_password": "true"}
    assert signed_in(staff("admin")).post(f"/admin/accounts/user/{target.pk}/password/", mismatch).status_code == 200
    assert not AuditLog.objects.filter(action="user_password_set").exists()


def test_roles_change_only_with_manage_staff_never_ones_own_and_are_audited(staff, signed_in) -> None:
    approve = Permission.objects.get(codename="approve_withdrawal")
    admin = staff("admin")
    client = signed_in(admin)

    own = client.post(f"/admin/auth/group/{group('admin').pk}/change/", {"name": "admin", "permissions": [approve.pk]})
    assert own.status_code == 403
    assert not group("admin").permissions.filter(pk=approve.pk).exists()

    support = group("support")
    kept = list(support.permissions.values_list("pk", flat=True))
    saved = client.post(
        f"/admin/auth/group/{support.pk}/change/", {"name": "support", "permissions": [*kept, approve.pk]}
    )
    assert saved.status_code == 302
    row = AuditLog.objects.get(action="group_change")
    assert (row.actor, row.details["permissions"]) == (
        admin,
        {"added": ["accounts.approve_withdrawal"], "removed": []},
    )


def test_an_admin_resets_someones_second_factor_with_a_reason_and_it_is_audited(staff, signed_in) -> None:
    admin, finance = staff("admin"), staff("finance")
    device_for(finance)
    client = signed_in(admin)
    chosen = {"action": "reset_second_factor", "_selected_action": [finance.pk]}

    asked = client.post("/admin/accounts/user/", {**chosen, "index": 0})
    assert asked.status_code == 200
    assert b"Reset their second factor" in asked.content and finance.username.encode() in asked.content

    without_reason = client.post("/admin/accounts/user/", {**chosen, "confirmed": "yes", "reason": " "})
    assert without_reason.status_code == 200
    assert TOTPDevice.objects.filter(user=finance).exists()

    done = client.post("/admin/accounts/user/", {**chosen, "confirmed": "yes", "reason": "phone lost"})
    assert done.status_code == 302
    assert not TOTPDevice.objects.filter(user=finance).exists()
    row = AuditLog.objects.get(action="two_factor_reset")
    assert (row.actor, row.target, row.details["reason"], row.details["devices"]) == (
        admin,
        f"user:{finance.pk}",
        "phone lost",
        1,
    )


def test_nobody_but_the_admin_role_resets_a_second_factor_and_never_their_own(staff, signed_in, desk) -> None:
    finance = staff("finance")
    device_for(finance)
    reset = {"action": "reset_second_factor", "_selected_action": [finance.pk], "confirmed": "yes", "reason": "x"}
    for operator in (desk, staff("compliance")):
        signed_in(operator).post("/admin/accounts/user/", reset)
    assert TOTPDevice.objects.filter(user=finance).exists()

    admin = staff("admin")
    client = Client()
    assert log_in(client, admin.username, otp_token=code(device_for(admin))).status_code == 302
    refused = client.post("/admin/accounts/user/", {**reset, "_selected_action": [admin.pk]}, follow=True)
    assert b"Another administrator resets your own second factor" in refused.content
    assert TOTPDevice.objects.filter(user=admin).exists()
    assert not AuditLog.objects.filter(action="two_factor_reset").exists()


def test_deactivating_a_user_ends_their_tokens_at_once(staff, signed_in, client_for) -> None:
    trader = UserFactory()
    api = client_for(trader)
    assert api.get("/api/balances/").status_code == 200

    assert post_change(signed_in(staff("admin")), trader, is_active=False).status_code == 302

    refused = api.get("/api/balances/")
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "login_ended")
    assert Login.objects.get(user=trader).end_reason == Login.EndReason.DEACTIVATED
