"""Set-based SQL for the hot paths: one statement for any number of rows.

Each column travels as one array parameter and `unnest` turns the arrays back into rows, so the
statement's text is the same for three rows or three thousand and a batch costs the same number of
round trips whatever it holds. Placing orders and settling a batch of engine events use these; a
model's own app still decides what is written to its tables. Values are of the types psycopg adapts
itself: str, int, bool, Decimal, aware datetime, bytes, None (a foreign key as its id).
"""

import re
from collections.abc import Iterable, Sequence
from functools import cache

from django.db import connection, models

# (column name, PostgreSQL type of one value)
Column = tuple[str, str]


def table(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


@cache
def columns(model: type[models.Model], fields: tuple[str, ...]) -> list[Column]:
    """The columns of `model`'s `fields` (by field name), with their database types: one source for
    the types of every set-based write."""
    found = [model._meta.get_field(name) for name in fields]
    # An explicit cast to varchar(n) would cut a longer value silently; cast to varchar, and the
    # column refuses what does not fit, as an insert of the value itself would.
    return [(field.column, re.sub(r"^varchar\(\d+\)$", "varchar", field.cast_db_type(connection))) for field in found]


def unnest_rows(columns: Sequence[Column], rows: Iterable[Sequence[object]], *, alias: str = "u") -> tuple[str, list]:
    """`unnest(%s::type[], ...) AS alias(names)`, and its parameters: one list per column."""
    values = [list(column) for column in zip(*rows, strict=True)] or [[] for _ in columns]
    if len(values) != len(columns):
        raise ValueError(f"rows of {len(values)} values for {len(columns)} columns")
    arrays = ", ".join(f"%s::{kind}[]" for _, kind in columns)
    names = ", ".join(connection.ops.quote_name(name) for name, _ in columns)
    return f"unnest({arrays}) AS {alias}({names})", values


def insert_sql(table: str, columns: Sequence[Column], rows: Sequence[Sequence[object]]) -> tuple[str, list]:
    """`(sql, params)` of one INSERT of `rows`, in their order, to run alone or as a step of a
    larger statement."""
    source, params = unnest_rows(columns, rows)
    names = ", ".join(connection.ops.quote_name(name) for name, _ in columns)
    return f"INSERT INTO {table} ({names}) SELECT {names} FROM {source}", params  # noqa: S608 - callers' names


def rows_insert(
    table: str, columns: Sequence[Column], rows: Sequence[Sequence[object]], *, suffix: str = ""
) -> list[tuple]:
    """Insert `rows` into `table` in one statement, in their order; `suffix` may add an
    `ON CONFLICT` or a `RETURNING` clause, whose rows come back in the order of `rows`."""
    if not rows:
        return []
    statement, params = insert_sql(table, columns, rows)
    with connection.cursor() as cursor:
        cursor.execute(f"{statement} {suffix}", params)
        return cursor.fetchall() if "RETURNING" in suffix.upper() else []
