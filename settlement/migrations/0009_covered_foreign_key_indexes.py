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
        ("matching", "0010_covered_foreign_key_indexes"),
        ("settlement", "0008_chain_checkpoint"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            # Django's AlterField would drop and add the foreign key again, checking every row under
            # a lock: only the indexes change.
            state_operations=[
                migrations.AlterField(
                    model_name="trade",
                    name="buyer",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                migrations.AlterField(
                    model_name="trade",
                    name="market",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="trades",
                        to="matching.market",
                    ),
                ),
                migrations.AlterField(
                    model_name="trade",
                    name="seller",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            database_operations=[
                index_dropped(
                    "CREATE INDEX settlement_trade_buyer_id_6c36bdad ON settlement_trade USING btree (buyer_id)"
                ),
                index_dropped(
                    "CREATE INDEX settlement_trade_market_id_999dd15f ON settlement_trade USING btree (market_id)"
                ),
                index_dropped(
                    "CREATE INDEX settlement_trade_market_id_999dd15f_like ON settlement_trade USING btree (market_id varchar_pattern_ops)"
                ),
                index_dropped(
                    "CREATE INDEX settlement_trade_seller_id_851a70d7 ON settlement_trade USING btree (seller_id)"
                ),
            ],
        ),
    ]
