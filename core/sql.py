"""Set-based SQL for the hot paths: one statement for any number of rows.

Each column travels as one array parameter (in binary) and `unnest` turns the arrays back into
rows, so the statement's text is the same for three rows or three thousand and a batch costs the
same number of round trips whatever it holds. Placing orders and settling a batch of engine events
use these; a model's own app still decides what is written to its tables. Values are of the types
psycopg adapts itself: str, int, bool, Decimal, aware datetime, bytes, None (a foreign key as its
id).

They run on `cursor()`, which binds the parameters on the server and has PostgreSQL prepare each
statement once per connection: parsing and planning these statements cost PostgreSQL more CPU than
running them, and their text never changes, so each process plans each of them once.
"""

import re
from collections.abc import Iterable, Sequence
from functools import cache

import psycopg
from django.db import connection, models
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper

# (column name, PostgreSQL type of one value)
Column = tuple[str, str]


@cache
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


@cache
def select_list(model: type[models.Model], alias: str, omit: tuple[str, ...] = ()) -> tuple[str, tuple[str, ...]]:
    """`alias.column, ...` of `model`'s concrete fields in the model's order, but those named in
    `omit`, and their attribute names: the columns of a hand-written read whose rows `instance`
    turns into the model (the omitted fields deferred, as `QuerySet.defer` leaves them)."""
    fields = [field for field in model._meta.concrete_fields if field.name not in omit]
    listed = ", ".join(f"{alias}.{connection.ops.quote_name(field.column)}" for field in fields)
    return listed, tuple(field.attname for field in fields)


def instance(model: type[models.Model], attnames: tuple[str, ...], values: Sequence[object]) -> models.Model:
    """The model of one row of a `select_list` read, as Django builds it from a queryset's row.
    Only for fields whose values psycopg already returns as the field holds them (not JSON)."""
    return model.from_db(connection.alias, attnames, values)


def unnest_rows(columns: Sequence[Column], rows: Iterable[Sequence[object]], *, alias: str = "u") -> tuple[str, list]:
    """`unnest(%b::type[], ...) AS alias(names)`, and its parameters: one list per column.

    The arrays travel in binary (`%b`): their text form is built in Python, each element quoted and
    escaped (every quote of a JSON document, match by match), which cost the consumer's store more
    than half of its CPU. A jsonb column's values are wrapped in psycopg's `Jsonb`."""
    return _unnest_text(tuple(columns), alias), _column_values(columns, rows)


def _column_values(columns: Sequence[Column], rows: Iterable[Sequence[object]]) -> list[list]:
    """One list per column of `rows`' values."""
    values = [list(column) for column in zip(*rows, strict=True)] or [[] for _ in columns]
    if len(values) != len(columns):
        raise ValueError(f"rows of {len(values)} values for {len(columns)} columns")
    return values


# The texts depend only on the table and the columns: built once, not for every placement.
@cache
def _names(columns: tuple[Column, ...]) -> str:
    return ", ".join(connection.ops.quote_name(name) for name, _ in columns)


@cache
def _unnest_text(columns: tuple[Column, ...], alias: str) -> str:
    arrays = ", ".join(f"%b::{kind}[]" for _, kind in columns)
    return f"unnest({arrays}) AS {alias}({_names(columns)})"


@cache
def _insert_text(table: str, columns: tuple[Column, ...]) -> str:
    names = _names(columns)
    return f"INSERT INTO {table} ({names}) SELECT {names} FROM {_unnest_text(columns, 'u')}"  # noqa: S608 - callers' names


def insert_sql(table: str, columns: Sequence[Column], rows: Sequence[Sequence[object]]) -> tuple[str, list]:
    """`(sql, params)` of one INSERT of `rows`, in their order, to run alone or as a step of a
    larger statement."""
    return _insert_text(table, tuple(columns)), _column_values(columns, rows)


def rows_insert(
    table: str, columns: Sequence[Column], rows: Sequence[Sequence[object]], *, suffix: str = ""
) -> list[tuple]:
    """Insert `rows` into `table` in one statement, in their order; `suffix` may add an
    `ON CONFLICT` or a `RETURNING` clause, whose rows come back in the order of `rows`."""
    if not rows:
        return []
    statement, params = insert_sql(table, columns, rows)
    with cursor() as cursor_:
        cursor_.execute(f"{statement} {suffix}", params)
        return cursor_.fetchall() if "RETURNING" in suffix.upper() else []


class _Preparing(psycopg.Cursor):
    """psycopg's own cursor (Django's are client-side binding, which cannot prepare), asking for every
    statement to be prepared; `prepare_threshold` None (DATABASE_PREPARED_STATEMENTS off, for a
    transaction-pooling proxy) turns preparing off and leaves server-side binding."""

    def execute(self, query, params=None, *, prepare=None, binary=None):
        return super().execute(query, params, prepare=True, binary=binary)


class _Logged(CursorDebugWrapper):
    """Django's debug cursor (DEBUG, or a test capturing queries) for `_Preparing`: psycopg keeps no
    text of a prepared statement's execution, where Django reads it back, so the statement is
    composed with its parameters here, as Django would show it."""

    def execute(self, sql, params=None):
        try:
            shown = self.db.ops.compose_sql(sql, params)
        except (psycopg.Error, TypeError, ValueError):
            shown = sql
        with self.debug_sql(shown):
            return CursorWrapper.execute(self, sql, params)


def cursor() -> CursorWrapper:
    """A cursor on Django's connection, in its transaction, for a hot path's fixed statements: each is
    prepared on first use and executed from its plan afterwards. Django sees it as any other cursor
    (health checks, error wrapping, query capture in tests). A statement whose text changes with its
    input (an IN list, say) would fill the connection's cache of prepared statements: build those with
    `unnest_rows` instead. psycopg drops its prepared statements after a ROLLBACK, so they are
    prepared again after a transaction that failed."""
    with connection.wrap_database_errors:
        connection.close_if_health_check_failed()
        connection.ensure_connection()
        connection.validate_thread_sharing()
        raw = _Preparing(connection.connection)
        return _Logged(raw, connection) if connection.queries_logged else CursorWrapper(raw, connection)
