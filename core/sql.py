"""Set-based SQL for the hot paths: many rows in one statement, built from the models' own fields.

`unnest_rows` turns rows into `SELECT * FROM unnest(%s::type[], ...)`, one array parameter per column,
cast to the column's database type, so a single statement (alone or as a step of a larger one)
inserts any number of rows with a fixed text. Values are the models' attribute values (a foreign key
as its id) of the types psycopg adapts itself: str, int, bool, Decimal, aware datetime, bytes, None.
"""

from collections.abc import Sequence
from functools import cache
from typing import Any

from django.db import connection, models


def table(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


@cache
def _cast(model: type[models.Model], name: str) -> str:
    return model._meta.get_field(name).cast_db_type(connection)


def unnest_rows(model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]) -> tuple[str, list]:
    """`(sql, params)` of a SELECT yielding `rows` (tuples of model values, in `fields` order)."""
    casts = ", ".join(f"%s::{_cast(model, name)}[]" for name in fields)
    params = [[row[i] for row in rows] for i in range(len(fields))]
    return f"SELECT * FROM unnest({casts})", params  # noqa: S608 - casts from the model's fields


def insert_rows(model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]) -> tuple[str, list]:
    """`(sql, params)` of one INSERT of `rows` into `model`'s table."""
    names = ", ".join(connection.ops.quote_name(model._meta.get_field(name).column) for name in fields)
    select, params = unnest_rows(model, fields, rows)
    return f"INSERT INTO {table(model)} ({names}) {select}", params
