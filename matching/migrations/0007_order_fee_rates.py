# Each order keeps the fee rates it was placed under. Existing orders get their market's rates of
# today, the only rates there is a record of for them (settlement applied those until now).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("matching", "0006_order_admin_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="order",
            name="maker_fee_rate",
            field=models.DecimalField(
                decimal_places=6, help_text="Fee rate when it makes liquidity.", max_digits=8, null=True
            ),
        ),
        migrations.AddField(
            model_name="order",
            name="taker_fee_rate",
            field=models.DecimalField(
                decimal_places=6, help_text="Fee rate when it takes liquidity.", max_digits=8, null=True
            ),
        ),
        migrations.RunSQL(
            sql="""
                UPDATE matching_order AS o
                SET maker_fee_rate = m.maker_fee, taker_fee_rate = m.taker_fee
                FROM matching_market AS m
                WHERE o.market_id = m.symbol
            """,
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.AlterField(
            model_name="order",
            name="maker_fee_rate",
            field=models.DecimalField(decimal_places=6, help_text="Fee rate when it makes liquidity.", max_digits=8),
        ),
        migrations.AlterField(
            model_name="order",
            name="taker_fee_rate",
            field=models.DecimalField(decimal_places=6, help_text="Fee rate when it takes liquidity.", max_digits=8),
        ),
        migrations.AddConstraint(
            model_name="order",
            constraint=models.CheckConstraint(
                condition=models.Q(maker_fee_rate__gte=0)
                & models.Q(maker_fee_rate__lt=1)
                & models.Q(taker_fee_rate__gte=0)
                & models.Q(taker_fee_rate__lt=1),
                name="order_fee_rates_in_range",
            ),
        ),
    ]
