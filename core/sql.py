"""Set-based SQL for the hot paths: many rows in one statement, built from the models' own fields.

`unnest_rows` turns rows into `SELECT * FROM unnest(%s::type[], ...)`, one array parameter per column,
cast to the column's database type, so a single statement (alone or as a step of a larger one)
inserts any number of rows with a fixed text. The values go through each field's own conversion to
the database, as the ORM's would.
"""

from collections.abc import Sequence
from typing import Any

from django.db import connection, models


def table(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def unnest_rows(model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]) -> tuple[str, list]:
    """`(sql, params)` of a SELECT yielding `rows` (tuples of model values, in `fields` order)."""
    columns = [model._meta.get_field(name) for name in fields]
    casts = ", ".join(f"%s::{column.cast_db_type(connection)}[]" for column in columns)
    params = [[column.get_db_prep_save(row[i], connection) for row in rows] for i, column in enumerate(columns)]
    return f"SELECT * FROM unnest({casts})", params  # noqa: S608 - casts from the model's fields


def insert_rows(model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]) -> tuple[str, list]:
    """`(sql, params)` of one INSERT of `rows` into `model`'s table."""
    names = ", ".join(connection.ops.quote_name(model._meta.get_field(name).column) for name in fields)
    select, params = unnest_rows(model, fields, rows)
    return f"INSERT INTO {table(model)} ({names}) {select}", params
