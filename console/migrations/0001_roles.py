"""The staff roles as groups, with their permissions.

The table below is a literal copy of console/roles.py as it was when this migration was written: a
migration must do the same thing whenever it runs, so it cannot read a module that may change
later. tests/console/test_roles.py compares the migrated groups with console/roles.py.

Django creates the permissions that models declare in `Meta.permissions` only after every
migration has run (post_migrate), so this migration creates the ones it needs itself, with the same
content type, codename and name Django would give them; post_migrate then finds them present.
"""

from functools import partial

from django.db import migrations

SUPPORT = (
    "accounts.view_user",
    "accounts.view_account",
    "accounts.view_asset",
    "matching.view_market",
    "matching.view_order",
    "settlement.view_trade",
    "accounts.view_deposit",
    "accounts.view_withdrawal",
    "accounts.view_depositaddress",
)
FINANCE = (
    *SUPPORT,
    "accounts.view_ledgerentry",
    "accounts.view_ledgerline",
    "accounts.view_balanceadjustment",
    "accounts.view_auditlog",
    "accounts.add_asset",
    "accounts.change_asset",
    "accounts.approve_withdrawal",
    "accounts.release_deposit",
    "accounts.propose_adjustment",
    "accounts.approve_adjustment",
    "accounts.export_deposit",
    "accounts.export_withdrawal",
    "accounts.export_ledgerline",
    "settlement.export_trade",
)
MARKETS = (
    "accounts.view_user",
    "accounts.view_asset",
    "matching.view_market",
    "matching.add_market",
    "matching.change_market",
    "matching.halt_market",
    "matching.view_order",
    "matching.cancel_order",
    "settlement.view_trade",
    "settlement.view_engineevent",
    "settlement.view_settlementcursor",
    "settlement.view_consumeroffset",
    "settlement.view_alert",
    "settlement.resolve_alert",
    "matching.view_outboxmessage",
    "matching.view_enginesnapshot",
    "settlement.view_reconciliationrun",
)
LOGIN_RECORDS = ("axes.view_accessattempt", "axes.view_accesslog", "axes.view_accessfailurelog")
COMPLIANCE = (
    "accounts.view_user",
    "accounts.restrict_user",
    "accounts.view_userrestriction",
    "accounts.view_account",
    "matching.view_order",
    "settlement.view_trade",
    "accounts.view_deposit",
    "accounts.view_withdrawal",
    "accounts.view_ledgerentry",
    "accounts.view_ledgerline",
    "accounts.view_auditlog",
    "accounts.export_auditlog",
    *LOGIN_RECORDS,
)
ADMIN = (
    "accounts.view_user",
    "accounts.add_user",
    "accounts.change_user",
    "accounts.manage_staff",
    "auth.view_group",
    "auth.change_group",
    "auth.view_permission",
    "accounts.view_auditlog",
    *LOGIN_RECORDS,
    "axes.delete_accessattempt",
    "otp_totp.view_totpdevice",
    "otp_totp.delete_totpdevice",
)
ROLES = {"support": SUPPORT, "finance": FINANCE, "markets": MARKETS, "compliance": COMPLIANCE, "admin": ADMIN}


def permission_get(apps, dotted):
    """The permission `app_label.codename`, created if the database lacks it yet."""
    app_label, codename = dotted.split(".")
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    models = apps.get_app_config(app_label).get_models()
    action, _, model_name = codename.partition("_")
    for model in models:
        opts = model._meta
        if opts.model_name == model_name and action in opts.default_permissions:
            name = f"Can {action} {opts.verbose_name_raw}"
            break
        declared = dict(opts.permissions)
        if codename in declared:
            name = declared[codename]
            break
    else:
        raise LookupError(f"no model of {app_label} has the permission {codename}")
    content_type, _ = ContentType.objects.get_or_create(app_label=app_label, model=opts.model_name)
    permission, _ = Permission.objects.get_or_create(
        content_type=content_type, codename=codename, defaults={"name": name}
    )
    return permission


def roles_grant(apps, schema_editor, *, added, grant=True):
    """Give each role in `added` its permissions (take them back with grant=False)."""
    Group = apps.get_model("auth", "Group")
    for role, permissions in added.items():
        group = Group.objects.get(name=role)
        change = group.permissions.add if grant else group.permissions.remove
        change(*[permission_get(apps, dotted) for dotted in permissions])


def roles_widening(added):
    """The operation of a later migration that widens roles, each with its own literal table
    `added`: the permissions granted, and taken back when the migration is reversed."""
    return migrations.RunPython(partial(roles_grant, added=added), partial(roles_grant, added=added, grant=False))


def roles_create(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    for role, permissions in ROLES.items():
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.set([permission_get(apps, dotted) for dotted in permissions])


def roles_delete(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("accounts", "0002_custody_withdrawals_adjustments"),
        ("matching", "0004_operator_permissions"),
        ("settlement", "0004_operator_permissions"),
        ("axes", "0010_accessattemptexpiration"),
        ("otp_totp", "0003_add_timestamps"),
    ]

    operations = [migrations.RunPython(roles_create, roles_delete)]
