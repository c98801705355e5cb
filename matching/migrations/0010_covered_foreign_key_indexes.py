"""The foreign keys that a composite index or a unique constraint already leads lose their own
index, as in accounts 0007."""

from importlib import import_module

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

index_dropped = import_module("accounts.migrations.0007_covered_foreign_key_indexes").index_dropped


class Migration(migrations.Migration):
    # DROP INDEX CONCURRENTLY cannot run in a transaction; nothing else is done here.
    atomic = False

    dependencies = [
        ("accounts", "0007_covered_foreign_key_indexes"),
        ("matching", "0009_outbox_no_notify"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            # Django's AlterField would drop and add the foreign key again, checking every row under
            # a lock: only the indexes change.
            state_operations=[
                migrations.AlterField(
                    model_name="order",
                    name="market",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="orders",
                        to="matching.market",
                    ),
                ),
                migrations.AlterField(
                    model_name="order",
                    name="user",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="orders",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            database_operations=[
                index_dropped(
                    "CREATE INDEX matching_order_market_id_730d6cc7 ON matching_order USING btree (market_id)"
                ),
                index_dropped(
                    "CREATE INDEX matching_order_market_id_730d6cc7_like ON matching_order USING btree (market_id varchar_pattern_ops)"
                ),
                index_dropped("CREATE INDEX matching_order_user_id_35b75015 ON matching_order USING btree (user_id)"),
            ],
        ),
    ]
