"""A database of a benchmark's own on DATABASE_URL's PostgreSQL server, and what each report says of
the host: shared by the benchmarks that load data of their own (admin_orders.py, reconcile.py).

Only the server and credentials of DATABASE_URL are used (default postgres://postgres@127.0.0.1:5432/);
the database is created, migrated and, unless kept, dropped at the end.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432/"


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu})"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def conninfo(url: str) -> str:
    """psycopg's spelling of a Django database URL; with no database named, the server's postgres."""
    parts = urlsplit(url)
    path = parts.path if parts.path not in ("", "/") else "/postgres"
    return urlunsplit(("postgresql", parts.netloc, path, parts.query, ""))


def create_database(server: str, name: str) -> None:
    with psycopg.connect(conninfo(server), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(server: str, name: str) -> None:
    with psycopg.connect(conninfo(server), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def setup_django(url: str, process: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")
    os.environ.setdefault("EXCHANGE_PROCESS", process)
    import django

    django.setup()


@contextmanager
def own_database(benchmark: str, *, database: str | None, keep: bool) -> Iterator[tuple[str, str, bool]]:
    """Django set up on a migrated database of the benchmark's own; yields (its name, its URL,
    whether it was created now and is empty).

    With `database`, that kept database is used again and never dropped; otherwise a new one,
    exchange_bench_<benchmark>_<random>, is created and dropped at the end unless `keep`.
    """
    server = os.environ.get("DATABASE_URL", DEFAULT_SERVER)
    name = database or f"exchange_bench_{benchmark}_{secrets.token_hex(4)}"
    url = with_database(server, name)
    try:
        if not database:
            progress(f"creating database {name}")
            create_database(server, name)
        setup_django(url, f"bench-{benchmark}")
        from django.core.management import call_command

        progress("migrating")
        call_command("migrate", verbosity=0)
        yield name, url, not database
    finally:
        if database or keep:
            progress(f"database kept: {name} (drop it with: DROP DATABASE {name};)")
        else:
            # WITH (FORCE) closes this process's own connections to it as well.
            progress(f"dropping database {name}")
            drop_database(server, name)
