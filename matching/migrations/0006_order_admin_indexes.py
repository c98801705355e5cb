# The admin looks orders up by cid (see OrderAdmin.get_search_results).

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    # Built concurrently: a plain CREATE INDEX would hold up every order placed while it reads the table.
    atomic = False

    dependencies = [
        ("matching", "0005_market_history"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="order",
            index=models.Index(fields=["cid"], name="order_cid"),
        ),
    ]
