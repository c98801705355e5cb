"""Set-based writes: one statement for any number of rows.

Each column travels as one array parameter and `unnest` turns the arrays back into rows, so the
statement's text is the same for three rows or three thousand and a batch costs the same number of
round trips whatever it holds. The hot paths that write many rows at once (settling a batch of
engine events, storing a Kafka batch in the inbox) use these; a model's own app still decides what
is written to its tables.
"""

from collections.abc import Iterable, Sequence

from django.db import connection

# (column name, PostgreSQL type of one value)
Column = tuple[str, str]


def unnest_rows(columns: Sequence[Column], rows: Iterable[Sequence[object]], *, alias: str = "u") -> tuple[str, list]:
    """`unnest(%s::type[], ...) AS alias(names)`, and its parameters: one list per column."""
    values = [list(column) for column in zip(*rows, strict=True)] or [[] for _ in columns]
    if len(values) != len(columns):
        raise ValueError(f"rows of {len(values)} values for {len(columns)} columns")
    arrays = ", ".join(f"%s::{kind}[]" for _, kind in columns)
    names = ", ".join(connection.ops.quote_name(name) for name, _ in columns)
    return f"unnest({arrays}) AS {alias}({names})", values


def rows_insert(
    table: str, columns: Sequence[Column], rows: Sequence[Sequence[object]], *, suffix: str = ""
) -> list[tuple]:
    """Insert `rows` into `table` in one statement, in their order; `suffix` may add an
    `ON CONFLICT` or a `RETURNING` clause, whose rows come back in the order of `rows`."""
    if not rows:
        return []
    source, params = unnest_rows(columns, rows)
    names = ", ".join(connection.ops.quote_name(name) for name, _ in columns)
    with connection.cursor() as cursor:
        sql = f"INSERT INTO {table} ({names}) SELECT {names} FROM {source} {suffix}"  # noqa: S608 - callers' names
        cursor.execute(sql, params)
        return cursor.fetchall() if "RETURNING" in suffix.upper() else []
