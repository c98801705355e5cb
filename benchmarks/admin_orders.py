"""Benchmark of the admin's orders list on a database holding a million orders.

Usage:
    .venv/bin/python benchmarks/admin_orders.py                      # 1,000,000 orders, 5 rounds
    .venv/bin/python benchmarks/admin_orders.py --orders 100000 --repeat 3
    .venv/bin/python benchmarks/admin_orders.py --keep               # keep the database, print its name
    .venv/bin/python benchmarks/admin_orders.py --database NAME      # time a kept database again
    .venv/bin/python benchmarks/admin_orders.py --markdown           # the table as Markdown

Creates a database of its own (exchange_bench_admin_<random>) on the PostgreSQL server of
DATABASE_URL (default postgres://postgres@127.0.0.1:5432/; only the server and credentials are
used), migrates it, creates the assets, the two markets and the traders, loads the orders with
COPY and runs VACUUM ANALYZE, the state autovacuum leaves a table in. It then opens the orders
list the way an operator does, as a superuser created for the run, through Django's test client:
the request runs in this process (URL routing, middleware, the admin view, the queries over a
real connection, the template) but no HTTP server or socket is involved. Each page is requested
once untimed, then --repeat times, the pages interleaved so that every page sees the same
background load; the table gives min/median/max of the wall time per request, and for the
median request the number of SQL statements and the slowest one's time.

The database is dropped at the end unless --keep is given; a database named with --database is
never dropped (nor loaded again: it is migrated, analysed and timed).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import secrets
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg import sql
from scratch import conninfo, machine, own_database, progress  # benchmarks/scratch.py, beside this script

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SUPERUSER = "bench-operator"
DAYS = 90
MARKET_SHARE = {"BTC_USDT": 0.65, "ETH_USDT": 0.35}
MID_PRICE = {"BTC_USDT": 65_000.0, "ETH_USDT": 3_200.0}
# Order sizes in lots, drawn log-uniformly: from 0.0001 to 0.5 BTC and from 0.001 to 20 ETH.
LOTS = {"BTC_USDT": (10, 50_000), "ETH_USDT": (10, 200_000)}
LOT_SIZE = {"BTC_USDT": Decimal("0.00001"), "ETH_USDT": Decimal("0.0001")}
# What becomes of an order, by kind. Resting (GTC) limit orders are mostly cancelled by the
# market makers that place them; immediate orders (IOC, FOK, market) fill or are cancelled at once.
GTC_OUTCOMES = {"cancelled": 0.60, "filled": 0.26, "open": 0.08, "partially_filled": 0.03, "rejected": 0.03}
IMMEDIATE_OUTCOMES = {"filled": 0.70, "cancelled": 0.25, "rejected": 0.05}
# The newest orders wait for the engine (pending) this often.
RECENT_PENDING = (500, 0.4)
ORDER_COLUMNS = [
    "user_id",
    "market_id",
    "cid",
    "side",
    "order_type",
    "time_in_force",
    "post_only",
    "stp",
    "price",
    "quantity",
    "quote_quantity",
    "filled",
    "filled_quote",
    "fee",
    "locked",
    "maker_fee_rate",
    "taker_fee_rate",
    "status",
    "reason",
    "cancel_requested_at",
    "resends",
    "resent_at",
    "created_at",
    "updated_at",
]


COLUMN_LIST = re.compile(r'SELECT (?:DISTINCT )?(?:"\w+"\."\w+"(?: AS "\w+")?, )+"\w+"\."\w+"(?: AS "\w+")? FROM')


def abbreviated(statement: str) -> str:
    """One line, the long column lists of the SELECTs elided, at most 600 characters."""
    text = COLUMN_LIST.sub("SELECT ... FROM", " ".join(statement.split()))
    return text if len(text) <= 600 else text[:600] + " ..."


# --- The data ---------------------------------------------------------------------------------


def create_markets_and_traders(traders: int) -> list[int]:
    """The seed's assets and markets (rows only: no engine is listening), and the traders."""
    from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX

    from accounts.models import Asset, User
    from matching.management.commands.seed_demo import ASSETS, MARKETS
    from matching.models import Market

    for symbol, rules in ASSETS.items():
        Asset.objects.get_or_create(symbol=symbol, defaults=rules)
    for symbol, base, quote, tick, lot, min_notional in MARKETS:
        Market.objects.get_or_create(
            symbol=symbol,
            defaults={
                "base_id": base,
                "quote_id": quote,
                "tick_size": tick,
                "lot_size": lot,
                "min_notional": min_notional,
            },
        )
    joined = datetime.now(UTC) - timedelta(days=DAYS + 30)
    User.objects.bulk_create(
        (
            User(username=name, email=f"{name}@example.com", password=UNUSABLE_PASSWORD_PREFIX, date_joined=joined)
            for name in (f"trader{n:05d}" for n in range(1, traders + 1))
        ),
        batch_size=2_000,
    )
    return list(User.objects.filter(username__startswith="trader").order_by("pk").values_list("pk", flat=True))


def check_columns(conn: psycopg.Connection) -> None:
    """COPY applies no Django defaults: every column but id must be written."""
    from matching.models import Order

    columns = {f.column for f in Order._meta.concrete_fields} - {"id"}
    if columns != set(ORDER_COLUMNS):
        differ = sorted(columns ^ set(ORDER_COLUMNS))
        raise SystemExit(f"matching_order's columns changed, ORDER_COLUMNS needs updating: {differ}")


def order_rows(count: int, user_ids: list[int], rng: random.Random, now: datetime):
    """Tab-separated lines of matching_order, oldest first (ids follow time, as they do live).

    Activity is skewed the way it is on an exchange: the trader of rank r places orders in
    proportion to 1/r, so a few market makers place most of them and most traders few.
    """
    cum_weights: list[float] = []
    total = 0.0
    for rank in range(1, len(user_ids) + 1):
        total += 1 / rank
        cum_weights.append(total)
    owners = rng.choices(user_ids, cum_weights=cum_weights, k=count)
    markets = list(MARKET_SHARE)
    market_weights = list(MARKET_SHARE.values())
    start = now - timedelta(days=DAYS)
    step = timedelta(days=DAYS).total_seconds() / count
    mids = dict(MID_PRICE)
    gtc = (list(GTC_OUTCOMES), list(GTC_OUTCOMES.values()))
    immediate = (list(IMMEDIATE_OUTCOMES), list(IMMEDIATE_OUTCOMES.values()))
    recent, pending_share = RECENT_PENDING
    for i in range(count):
        created = start + timedelta(seconds=(i + rng.random()) * step)
        market = rng.choices(markets, market_weights)[0]
        mids[market] *= 1 + rng.gauss(0, 0.0004)
        mid = mids[market]
        side = "buy" if rng.random() < 0.5 else "sell"
        fewest, most = LOTS[market]
        lots = int(fewest * (most / fewest) ** rng.random())
        quantity = LOT_SIZE[market] * lots
        roll = rng.random()
        if roll < 0.08:
            order_type, tif, price = "market", "IOC", None
        else:
            order_type = "limit"
            tif = "GTC" if roll < 0.89 else ("IOC" if roll < 0.97 else "FOK")
            offset = rng.uniform(0, 0.01) if tif == "GTC" else -0.001
            price = Decimal(round(mid * (1 - offset if side == "buy" else 1 + offset), 2))
        post_only = tif == "GTC" and rng.random() < 0.05
        if count - i <= recent and rng.random() < pending_share:
            status = "pending"
        else:
            names, weights = gtc if tif == "GTC" else immediate
            status = rng.choices(names, weights)[0]
        fill_price = price if price is not None else Decimal(round(mid, 2))
        quote_quantity = None
        if order_type == "market" and side == "buy":
            quote_quantity = (quantity * fill_price).quantize(Decimal("0.01"))
        if status == "filled":
            filled = quantity
        elif status == "partially_filled" or (status == "cancelled" and rng.random() < 0.3):
            filled = LOT_SIZE[market] * max(1, int(lots * rng.random()))
        else:
            filled = Decimal(0)
        filled_quote = (filled * fill_price).quantize(Decimal("0.00000001"))
        fee = (
            (filled * Decimal("0.001")).quantize(Decimal("0.00000001"))
            if side == "buy"
            else (filled_quote * Decimal("0.001")).quantize(Decimal("0.00000001"))
        )
        locked = Decimal(0)
        if status in ("pending", "open", "partially_filled"):
            left = quantity - filled
            if side == "sell":
                locked = left
            elif quote_quantity is not None:
                locked = quote_quantity
            else:
                locked = (left * fill_price).quantize(Decimal("0.00000001"))
        reason = ""
        cancel_requested = None
        if status == "cancelled":
            if tif != "GTC":
                reason = "ioc"
            elif rng.random() < 0.05:
                reason = "self_trade"
            else:
                reason = "user"
                cancel_requested = created + timedelta(seconds=rng.expovariate(1 / 600))
        elif status == "rejected":
            reason = "post_only_would_cross" if post_only else ("fok_not_fillable" if tif == "FOK" else "invalid")
        if status in ("pending", "open"):
            updated = created
        elif cancel_requested is not None:
            updated = cancel_requested + timedelta(milliseconds=rng.randint(2, 200))
        else:
            updated = created + timedelta(milliseconds=rng.randint(2, 200))
        # A market buy names the quote to spend instead of a quantity.
        shown_quantity = None if order_type == "market" and side == "buy" else quantity
        yield (
            f"{owners[i]}\t{market}\t{rng.getrandbits(96):024x}\t{side}\t{order_type}\t{tif}\t"
            f"{'t' if post_only else 'f'}\tcancel_incoming\t{_value(price)}\t{_value(shown_quantity)}\t"
            f"{_value(quote_quantity)}\t{filled}\t{filled_quote}\t{fee}\t{locked}\t0.001\t0.002\t{status}\t{reason}\t"
            f"{_value(cancel_requested)}\t0\t\\N\t{created.isoformat()}\t{updated.isoformat()}\n"
        )


def _value(value: object) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def load_orders(url: str, count: int, user_ids: list[int], seed: int) -> float:
    """COPY the orders in one transaction; returns the seconds it took."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    copy_sql = sql.SQL("COPY matching_order ({}) FROM STDIN").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in ORDER_COLUMNS)
    )
    report_every = max(count // 10, 1)
    started = time.perf_counter()
    with psycopg.connect(conninfo(url)) as conn:
        check_columns(conn)
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            chunk: list[str] = []
            for i, line in enumerate(order_rows(count, user_ids, rng, now), 1):
                chunk.append(line)
                if len(chunk) == 10_000 or i == count:
                    copy.write("".join(chunk).encode())
                    chunk.clear()
                if i % report_every == 0:
                    elapsed = time.perf_counter() - started
                    rate = i / elapsed
                    progress(
                        f"  orders {i:>11,} / {count:,} ({i / count:4.0%}), {rate:,.0f}/s, "
                        f"{(count - i) / rate:,.0f} s left"
                    )
        progress("  committing (index and foreign-key checks finish here)")
        conn.commit()
    return time.perf_counter() - started


def vacuum_analyze(url: str) -> float:
    started = time.perf_counter()
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) matching_order")
        conn.execute("VACUUM (ANALYZE) accounts_user")
    return time.perf_counter() - started


# --- The pages --------------------------------------------------------------------------------


@dataclass
class Page:
    name: str
    url: str
    walls: list[float] = field(default_factory=list)
    queries: list[list[dict]] = field(default_factory=list)

    def median_run(self) -> int:
        ordered = sorted(range(len(self.walls)), key=self.walls.__getitem__)
        return ordered[(len(ordered) - 1) // 2]

    def statements(self) -> list[dict]:
        return self.queries[self.median_run()]

    def slowest(self) -> dict:
        return max(self.statements(), key=lambda q: float(q["time"]))


def pages_for_data() -> list[Page]:
    """The pages an operator opens, with parameters taken from the data itself."""
    from django.db import connection

    from matching.models import Order

    base = "/admin/matching/order/"
    with connection.cursor() as cur:
        cur.execute(
            "SELECT u.username, count(*) FROM matching_order o JOIN accounts_user u ON u.id = o.user_id "
            "GROUP BY u.username ORDER BY count(*) DESC, u.username"
        )
        by_activity = cur.fetchall()
        cur.execute("SELECT count(*), max(id), max(created_at) FROM matching_order")
        count, last_id, newest = cur.fetchone()
    busiest, busiest_orders = by_activity[0]
    typical, typical_orders = by_activity[len(by_activity) // 2]
    day = (newest - timedelta(days=DAYS // 2)).date()
    per_page = 100
    last_page = max(1, -(-count // per_page))
    deep = max(1, last_page // 2)
    order_id = Order.objects.filter(pk__lte=last_id // 2).order_by("-pk").values_list("pk", flat=True).first()
    return [
        Page("first page", base),
        Page(f"page {deep:,} (halfway)", f"{base}?p={deep}"),
        Page(f"page {last_page:,} (the last)", f"{base}?p={last_page}"),
        Page("status: open", f"{base}?status__exact=open"),
        Page("market: ETH_USDT", f"{base}?market__symbol__exact=ETH_USDT"),
        Page(
            f"date hierarchy: {day.isoformat()}",
            f"{base}?created_at__day={day.day}&created_at__month={day.month}&created_at__year={day.year}",
        ),
        Page(f"search: busiest trader ({busiest_orders:,} orders)", f"{base}?q={busiest}"),
        Page(f"search: typical trader ({typical_orders:,} orders)", f"{base}?q={typical}"),
        Page("search: order id", f"{base}?q={order_id}"),
        Page("one order's change page", f"{base}{order_id}/change/"),
    ]


def time_pages(pages: list[Page], repeat: int) -> None:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, override_settings

    from accounts.models import User

    operator, created = User.objects.get_or_create(
        username=SUPERUSER, defaults={"is_staff": True, "is_superuser": True, "email": "operator@example.com"}
    )
    if created:
        operator.set_password(secrets.token_urlsafe(16))
        operator.save()
    client = Client()
    client.force_login(operator)

    def get(page: Page) -> tuple[float, list[dict]]:
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get(page.url)
            wall = time.perf_counter() - started
        if response.status_code != 200:
            raise SystemExit(f"{page.url} answered {response.status_code}")
        return wall, captured.captured_queries

    # Static files are served from the collected manifest in production; their URLs cost nothing
    # worth measuring here, and the plain storage needs no collectstatic first.
    plain_static = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    # WhiteNoise warns once that nothing was collected: the same reason.
    warnings.filterwarnings("ignore", "No directory at", UserWarning)
    with override_settings(STORAGES=plain_static):
        progress("  warming up: each page once, untimed")
        for page in pages:
            get(page)
        for round_ in range(1, repeat + 1):
            progress(f"  round {round_} / {repeat}")
            for page in pages:
                wall, queries = get(page)
                page.walls.append(wall)
                page.queries.append(queries)


def report(pages: list[Page], markdown: bool) -> None:
    header = ["page", "URL", "min ms", "median ms", "max ms", "statements", "slowest statement ms"]
    rows = []
    for page in pages:
        rows.append(
            [
                page.name,
                page.url,
                f"{min(page.walls) * 1000:,.0f}",
                f"{statistics.median(page.walls) * 1000:,.0f}",
                f"{max(page.walls) * 1000:,.0f}",
                str(len(page.statements())),
                f"{float(page.slowest()['time']) * 1000:,.0f}",
            ]
        )
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + " --- |" * len(header))
        for row in rows:
            row[1] = f"`{row[1]}`"
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
            print("  ".join(cells))
    print()
    print("Slowest statement of each page's median request:")
    for page in pages:
        slowest = page.slowest()
        print(f"- {page.name} ({float(slowest['time']) * 1000:,.0f} ms): {abbreviated(slowest['sql'])}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=1_000_000, help="orders to load (default 1,000,000)")
    parser.add_argument("--traders", type=int, default=10_000, help="traders placing them (default 10,000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed requests per page (median reported)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", action="store_true", help="keep the database at the end and print its name")
    parser.add_argument("--database", help="time this kept database again instead of creating and loading one")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()[0]
    load_s = vacuum_s = None
    with own_database("admin", database=args.database, keep=args.keep) as (name, url, created):
        from django.conf import settings
        from django.db import connection, connections

        if created:
            progress(f"creating the markets and {args.traders:,} traders")
            user_ids = create_markets_and_traders(args.traders)
            progress(f"loading {args.orders:,} orders with COPY")
            load_s = load_orders(url, args.orders, user_ids, args.seed)
        progress("VACUUM (ANALYZE)")
        vacuum_s = vacuum_analyze(url)
        pages = pages_for_data()
        progress(f"timing {len(pages)} pages, {args.repeat} rounds")
        time_pages(pages, args.repeat)
        with connection.cursor() as cur:
            cur.execute("SHOW server_version")
            pg_version = cur.fetchone()[0]
            cur.execute("SELECT count(*), pg_total_relation_size('matching_order') FROM matching_order")
            orders, size = cur.fetchone()
            cur.execute("SELECT status, count(*) FROM matching_order GROUP BY status ORDER BY count(*) DESC")
            mix = cur.fetchall()
        connections.close_all()
        load_after = os.getloadavg()[0]

        import django

        print(
            f"{machine()}, PostgreSQL {pg_version}, Python {sys.version.split()[0]}, Django {django.get_version()}, "
            f"load average {load_before:.2f} before / {load_after:.2f} after"
        )
        print(
            f"database {name} on {settings.DATABASES['default']['HOST']}: {orders:,} orders "
            f"({size / 2**20:,.0f} MiB with indexes)"
        )
        if load_s is not None:
            print(f"load: {load_s:,.1f} s to generate and COPY the orders (commit included)")
        print(f"VACUUM (ANALYZE): {vacuum_s:,.1f} s")
        print("statuses: " + ", ".join(f"{s} {n / orders:.1%}" for s, n in mix))
        print(
            f"each page requested once untimed, then {args.repeat} times (interleaved); "
            "in-process through Django's test client as a superuser"
        )
        print()
        report(pages, args.markdown)


if __name__ == "__main__":
    main()
