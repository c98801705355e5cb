"""The foreign keys that a composite index or a unique constraint already leads lose their own
index (docs/decisions.md, *Each index earns its writes*). matching 0010 and settlement 0009 do the
same with `index_dropped`."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def index_dropped(definition: str) -> migrations.RunSQL:
    """Drop the index that `definition` (`CREATE INDEX name ON table ...`) creates, without blocking
    the table's writes; backwards, create it again the same way. Only in a migration with
    `atomic = False`: neither runs in a transaction."""
    name = definition.split()[2]
    return migrations.RunSQL(
        f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"',
        reverse_sql=definition.replace("CREATE INDEX ", "CREATE INDEX CONCURRENTLY IF NOT EXISTS ", 1),
    )


class Migration(migrations.Migration):
    # DROP INDEX CONCURRENTLY cannot run in a transaction; nothing else is done here.
    atomic = False

    dependencies = [
        ("accounts", "0006_user_account_pairs"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            # Django's AlterField would drop and add the foreign key again, checking every row under
            # a lock: only the indexes change.
            state_operations=[
                migrations.AlterField(
                    model_name="deposit",
                    name="user",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        help_text="Empty while custody's deposit matches no user's address.",
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="deposits",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                migrations.AlterField(
                    model_name="depositaddress",
                    name="asset",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="deposit_addresses",
                        to="accounts.asset",
                    ),
                ),
                migrations.AlterField(
                    model_name="depositaddress",
                    name="user",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="deposit_addresses",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                migrations.AlterField(
                    model_name="idempotencykey",
                    name="user",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                migrations.AlterField(
                    model_name="ledgerline",
                    name="account",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="lines",
                        to="accounts.account",
                    ),
                ),
                migrations.AlterField(
                    model_name="ledgerline",
                    name="asset",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="accounts.asset",
                    ),
                ),
                migrations.AlterField(
                    model_name="withdrawal",
                    name="user",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="withdrawals",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            database_operations=[
                index_dropped(
                    "CREATE INDEX accounts_deposit_user_id_7a9ea367 ON accounts_deposit USING btree (user_id)"
                ),
                index_dropped(
                    "CREATE INDEX accounts_depositaddress_asset_id_5ce9394d ON accounts_depositaddress USING btree (asset_id)"
                ),
                index_dropped(
                    "CREATE INDEX accounts_depositaddress_asset_id_5ce9394d_like ON accounts_depositaddress USING btree (asset_id varchar_pattern_ops)"
                ),
                index_dropped(
                    "CREATE INDEX accounts_depositaddress_user_id_be87c808 ON accounts_depositaddress USING btree (user_id)"
                ),
                index_dropped(
                    "CREATE INDEX accounts_idempotencykey_user_id_ad587486 ON accounts_idempotencykey USING btree (user_id)"
                ),
                index_dropped(
                    "CREATE INDEX accounts_ledgerline_account_id_6f82aeca ON accounts_ledgerline USING btree (account_id)"
                ),
                index_dropped(
                    "CREATE INDEX accounts_ledgerline_asset_id_f7258719 ON accounts_ledgerline USING btree (asset_id)"
                ),
                index_dropped(
                    "CREATE INDEX accounts_ledgerline_asset_id_f7258719_like ON accounts_ledgerline USING btree (asset_id varchar_pattern_ops)"
                ),
                index_dropped(
                    "CREATE INDEX accounts_withdrawal_user_id_093546b4 ON accounts_withdrawal USING btree (user_id)"
                ),
            ],
        ),
    ]
