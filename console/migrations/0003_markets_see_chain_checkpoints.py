"""The markets role reads the hash chains' checkpoints, beside the reconciliation runs that move
them. A literal copy, like 0001."""

from importlib import import_module

from django.db import migrations

ADDED = {"markets": ("settlement.view_chaincheckpoint",)}


def roles_extend(apps, schema_editor):
    import_module("console.migrations.0001_roles").roles_grant(apps, ADDED)


def roles_shrink(apps, schema_editor):
    import_module("console.migrations.0001_roles").roles_grant(apps, ADDED, grant=False)


class Migration(migrations.Migration):
    dependencies = [
        ("console", "0002_roles_see_history"),
        ("settlement", "0008_chain_checkpoint"),
    ]

    operations = [migrations.RunPython(roles_extend, roles_shrink)]
