"""Roles gain what came with the change history and the console's lists: every role that changes
rules, and compliance and admin, read the history of changes (django-pghistory's events);
compliance also reads balance adjustments and deposit addresses. A literal copy, like 0001."""

from importlib import import_module

from django.db import migrations

roles_widening = import_module("console.migrations.0001_roles").roles_widening

ADDED = {
    "finance": ("pghistory.view_events",),
    "markets": ("pghistory.view_events",),
    "compliance": (
        "pghistory.view_events",
        "accounts.view_balanceadjustment",
        "accounts.view_depositaddress",
    ),
    "admin": ("pghistory.view_events",),
}


class Migration(migrations.Migration):
    dependencies = [
        ("console", "0001_roles"),
        ("accounts", "0003_history_and_append_only"),
        ("pghistory", "0007_auto_20250421_0444"),
    ]

    operations = [roles_widening(ADDED)]
