"""Every index of the exchange's own tables earns its writes: no index that another one of the same
table already serves. Each insert and each update of an indexed column writes every index of the
table, and the hottest tables (orders, ledger lines, trades) take several rows an order or a trade.

An index is redundant when another index of the same table starts with the same columns, with the
same operator classes and orders, and the first is neither unique (it enforces something) nor partial nor on an
expression (it serves something the other cannot). Django's index of a foreign key is the usual
case: a composite index or a unique constraint led by the same column serves the same lookups.
"""

import pytest
from django.apps import apps
from django.db import connection

# Their models, not the many-to-many tables Django makes for the user model (its groups and permissions).
OWN_APPS = ("accounts", "matching", "settlement", "console")

_INDEXES_SQL = """
SELECT t.relname, c.relname, i.indkey::int2[], array(
         SELECT (i.indclass[k], i.indoption[k])::text FROM generate_subscripts(i.indkey, 1) k ORDER BY k
       ), i.indisunique,
       i.indpred IS NOT NULL OR i.indexprs IS NOT NULL
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
WHERE t.relname = ANY(%s)
"""


def redundant_indexes(tables: list[str]) -> list[str]:
    """`table: index (served by other)` for every redundant index of `tables`. Of two identical
    plain indexes, the one whose name sorts first is kept."""
    with connection.cursor() as cursor:
        cursor.execute(_INDEXES_SQL, [tables])
        rows = cursor.fetchall()
    found = []
    for table, name, columns, classes, unique, special in rows:
        if unique or special:
            continue
        width = len(columns)
        servers = [
            (other_unique, len(other_columns), other)
            for other_table, other, other_columns, other_classes, other_unique, other_special in rows
            if other_table == table
            and other != name
            and not other_special
            and list(other_columns[:width]) == list(columns)
            and list(other_classes[:width]) == list(classes)
            and (other_unique or len(other_columns) > width or other < name)
        ]
        if servers:
            found.append(f"{table}: {name} (served by {max(servers)[2]})")
    return sorted(found)


def own_tables() -> list[str]:
    return sorted(
        model._meta.db_table
        for label in OWN_APPS
        for model in apps.get_app_config(label).get_models()
        if model._meta.managed and not model._meta.proxy
    )


@pytest.mark.django_db
def test_no_index_of_the_exchanges_tables_is_served_by_another():
    assert redundant_indexes(own_tables()) == []


@pytest.mark.django_db
def test_a_redundant_index_is_found():
    """The check itself: an index on a column that a composite index leads is reported; a unique
    one is not, since it enforces something."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE index_probe (a int, b int, c int)")
        cursor.execute("CREATE INDEX index_probe_ab ON index_probe (a, b)")
        cursor.execute("CREATE INDEX index_probe_a ON index_probe (a)")
        cursor.execute("CREATE INDEX index_probe_a_again ON index_probe (a)")
        cursor.execute("CREATE UNIQUE INDEX index_probe_c ON index_probe (c)")
        cursor.execute("CREATE INDEX index_probe_c_plain ON index_probe (c)")
        cursor.execute("CREATE INDEX index_probe_b ON index_probe (b)")
    assert redundant_indexes(["index_probe"]) == [
        "index_probe: index_probe_a (served by index_probe_ab)",
        "index_probe: index_probe_a_again (served by index_probe_ab)",
        "index_probe: index_probe_c_plain (served by index_probe_c)",
    ]
