"""The markets role reads the hash chains' checkpoints, beside the reconciliation runs that move
them. A literal copy, like 0001."""

from importlib import import_module

from django.db import migrations

roles_widening = import_module("console.migrations.0001_roles").roles_widening

ADDED = {"markets": ("settlement.view_chaincheckpoint",)}


class Migration(migrations.Migration):
    dependencies = [
        ("console", "0002_roles_see_history"),
        ("settlement", "0008_chain_checkpoint"),
    ]

    operations = [roles_widening(ADDED)]
