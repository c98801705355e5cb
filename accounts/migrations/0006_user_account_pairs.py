"""Every user account comes with its sibling: `available` and `locked` of the same asset exist
together (accounts.services.account_get creates them so from now on)."""

from django.db import migrations

SQL = """
INSERT INTO accounts_account (user_id, asset_id, kind, balance, updated_at)
SELECT a.user_id, a.asset_id, pair.kind, 0, now()
FROM accounts_account a
CROSS JOIN (VALUES ('available'), ('locked')) AS pair(kind)
WHERE a.user_id IS NOT NULL AND a.kind IN ('available', 'locked')
ON CONFLICT DO NOTHING
"""


class Migration(migrations.Migration):
    dependencies = [("accounts", "0005_login_end_reason_deactivated")]

    operations = [migrations.RunSQL(SQL, reverse_sql=migrations.RunSQL.noop)]
