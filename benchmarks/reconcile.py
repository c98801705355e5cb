"""What a reconciliation run costs, check by check, on a database holding a long history of trading.

Usage:
    make bench-reconcile                                             # 150,000 events in each of 2 markets
    .venv/bin/python benchmarks/reconcile.py --events 20000 --repeat 3
    .venv/bin/python benchmarks/reconcile.py --keep                  # keep the database, print its name
    .venv/bin/python benchmarks/reconcile.py --database NAME         # time a kept database again
    .venv/bin/python benchmarks/reconcile.py --markdown              # the table as Markdown

Creates a database of its own (exchange_bench_reconcile_<random>) on the PostgreSQL server of
DATABASE_URL (benchmarks/scratch.py), migrates it, creates the demo assets and markets
(`seed_demo`) and a maker and a taker per market, funded by custody deposits. It then trades
through the exchange's own code, with nothing in between where Kafka and Celery would be: orders
placed with `orders_place` in batches of 100, their commands read from the outbox and applied by
the matching engine (`matching.engine.Engine`, so every event is numbered and hashed by the
engine's own chain), the events stored with `events_ingest` and settled with `market_settle`,
both set-based. Every table reconciliation reads (engine events, settlement cursors, trades,
orders, ledger, balances, deposits) is as settlement leaves it, and every check passes.

A round of trading in a market is 600 events: the maker rests 100 sells, the taker buys each of
them with a crossing buy (100 trades), and the maker rests 50 buys far below and cancels them. So
a trade for every 6 events, about the mix of `make bench-e2e` (55,700 trades in some 300,000
events). Rounds go on until each market holds at least --events events.

Then VACUUM (ANALYZE), the state autovacuum leaves the tables in, one untimed full run, and
--repeat rounds of: a full run (`reconcile_full`: every hash chain verified from genesis), --new
events traded in each market, a run from the checkpoints (beat's `reconcile`: each chain verified
from where the run before left it, so just those events), and another with nothing new. The table
gives for each kind of run and each check the median of its own duration (each check records it)
and what it checked, and for the whole run the median wall time, CPU time of this process (the
Python side: decoding and hashing events) and CPU time of the PostgreSQL backend serving it (from
/proc, when the server runs on this host).

The database is dropped at the end unless --keep is given; a database named with --database is
never dropped (it is migrated, traded on to --events where it holds fewer, analysed and timed).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import psycopg
from scratch import conninfo, machine, own_database, progress  # benchmarks/scratch.py, beside this script

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TOPIC = "engine-events"
# Per market: the price everything trades at, the quantity of each order, and where the maker's
# resting buys wait to be cancelled.
PRICE = {"BTC_USDT": Decimal("50000"), "ETH_USDT": Decimal("3000")}
QUANTITY = {"BTC_USDT": Decimal("0.001"), "ETH_USDT": Decimal("0.01")}
FAR_BELOW = Decimal("0.9")
CROSSING, RESTING = 100, 50
# The consumer's batches: KAFKA_MAX_POLL_RECORDS' default.
INGEST_BATCH = 500
EVENTS_PER_ROUND = CROSSING * 5 + RESTING * 2


# --- Trading ----------------------------------------------------------------------------------


@dataclass
class Traders:
    maker: object
    taker: object


@dataclass
class Exchange:
    """The engine and settlement joined as the matching worker and the settlement consumer join
    them, without the broker in between."""

    engine: object
    offset: int = 0

    def relay(self) -> int:
        """Every unpublished command to the engine, its events into the inbox, the inbox settled;
        returns how many events."""
        from django.utils import timezone

        from matching import schemas
        from matching.models import OutboxMessage
        from settlement.services import ReceivedMessage, events_ingest, market_settle

        rows = list(OutboxMessage.objects.filter(published_at__isnull=True).order_by("pk").values_list("pk", "payload"))
        raw = [
            schemas.encode_event(event)
            for _, payload in rows
            for event in self.engine.apply(schemas.decode_command(bytes(payload)))
        ]
        OutboxMessage.objects.filter(pk__in=[pk for pk, _ in rows]).update(published_at=timezone.now())
        markets: set[str] = set()
        for start in range(0, len(raw), INGEST_BATCH):
            chunk = raw[start : start + INGEST_BATCH]
            messages = [
                ReceivedMessage(partition=0, offset=self.offset + i, value=value) for i, value in enumerate(chunk)
            ]
            self.offset += len(chunk)
            markets |= events_ingest(topic=TOPIC, messages=messages)
        for market in sorted(markets):
            while market_settle(market=market):
                pass
        return len(raw)

    def trade_round(self, market: str, traders: Traders) -> int:
        """One round of trading in `market` (see the module's docstring); returns its events."""
        from matching.services import OrderRequest, orders_cancel_all, orders_place

        price, quantity = PRICE[market], QUANTITY[market]
        round_id = uuid.uuid4().hex[:16]

        def orders(side: str, kind: str, count: int, at: Decimal) -> list[OrderRequest]:
            return [
                OrderRequest(
                    cid=f"{kind}{round_id}{i:04d}",
                    symbol=market,
                    side=side,
                    order_type="limit",
                    price=at,
                    quantity=quantity,
                )
                for i in range(count)
            ]

        placed = [
            *orders_place(user=traders.maker, requests=orders("sell", "s", CROSSING, price)),
            *orders_place(user=traders.taker, requests=orders("buy", "b", CROSSING, price)),
            *orders_place(user=traders.maker, requests=orders("buy", "r", RESTING, price * FAR_BELOW)),
        ]
        refused = [p.error for p in placed if p.error is not None]
        if refused:
            raise SystemExit(f"an order of the benchmark was refused: {refused[0]}")
        events = self.relay()
        orders_cancel_all(user=traders.maker, market=market)
        return events + self.relay()


def fund(user: object, asset_symbol: str, amount: Decimal) -> None:
    """Credit `amount` the way money enters: custody reports confirmed transfers to the user's
    deposit address, each below the asset's review threshold so that none is held."""
    from accounts.models import Asset
    from accounts.services import deposit_address_get, deposit_report

    asset = Asset.objects.get(pk=asset_symbol)
    address = deposit_address_get(user=user, asset=asset).address
    chunk = asset.deposit_review_threshold / 2
    while amount > 0:
        part = min(chunk, amount)
        deposit_report(
            asset=asset,
            address=address,
            amount=part,
            tx_id=f"bench-{uuid.uuid4().hex}",
            confirmations=asset.deposit_confirmations,
        )
        amount -= part


def traders_for(markets: list[str], rounds: int) -> dict[str, Traders]:
    """A maker and a taker per market, funded for `rounds` rounds and twice as many again."""
    from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX

    from accounts.models import User
    from matching.models import Market

    found: dict[str, Traders] = {}
    for market in markets:
        base, quote = Market.objects.filter(pk=market).values_list("base_id", "quote_id").get()
        pair = Traders(
            *(
                User.objects.get_or_create(
                    username=f"{role}_{market.lower()}", defaults={"password": UNUSABLE_PASSWORD_PREFIX}
                )[0]
                for role in ("maker", "taker")
            )
        )
        fund(pair.maker, base, 3 * rounds * CROSSING * QUANTITY[market])
        fund(pair.maker, quote, RESTING * QUANTITY[market] * PRICE[market])
        fund(pair.taker, quote, 3 * rounds * CROSSING * QUANTITY[market] * PRICE[market])
        found[market] = pair
    return found


def event_counts() -> dict[str, int]:
    from settlement.models import SettlementCursor

    return dict(SettlementCursor.objects.order_by("market").values_list("market", "seq"))


def load(exchange: Exchange, traders: dict[str, Traders], events: int) -> float:
    """Trade in every market until each holds at least `events` settled events; returns the seconds."""
    started = time.perf_counter()
    report_every = max(events // 10, 1)
    for market, pair in traders.items():
        market_started = time.perf_counter()
        stored = first = event_counts().get(market, 0)
        reported = stored // report_every
        while stored < events:
            stored += exchange.trade_round(market, pair)
            if stored // report_every > reported:
                reported = stored // report_every
                rate = (stored - first) / (time.perf_counter() - market_started)
                progress(f"  {market}: {stored:>9,} / {events:,} events, {rate:,.0f}/s")
    return time.perf_counter() - started


def engine_restore() -> object:
    """The engine as the benchmark left it in a kept database (its snapshot), or a new one."""
    from matching.engine import Engine
    from matching.models import EngineSnapshot

    snapshot = EngineSnapshot.objects.filter(worker=BENCH_WORKER).order_by("-id").first()
    return Engine.restore(bytes(snapshot.data)) if snapshot else Engine()


BENCH_WORKER = "bench-reconcile"


def engine_save(engine: object) -> None:
    """Keep the engine's books and chains with the database, so --database can trade on."""
    from matching.models import EngineSnapshot
    from matching.services import engine_snapshot_save

    since = EngineSnapshot.objects.filter(worker=BENCH_WORKER).order_by("-id").values_list("pk", flat=True).first()
    engine_snapshot_save(
        worker=BENCH_WORKER,
        offsets={},
        commands=0,
        sequences=engine.sequences(),
        data=engine.snapshot(),
        since=since or 0,
        settled=event_counts(),
    )


def vacuum_analyze(url: str) -> float:
    started = time.perf_counter()
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    return time.perf_counter() - started


# --- Timing -----------------------------------------------------------------------------------


def backend_cpu() -> float | None:
    """CPU seconds the PostgreSQL backend serving this process has used, when it runs on this host."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # utime and stime, the 14th and 15th fields of the line (the 12th and 13th after the name).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Runs:
    """The timed runs of one kind."""

    name: str
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    backend_cpus: list[float] = field(default_factory=list)
    checks: list[list[dict]] = field(default_factory=list)

    def record(self, run: Callable[[], object]) -> None:
        backend_before = backend_cpu()
        cpu_before = time.process_time()
        started = time.perf_counter()
        result = run()
        self.walls.append(time.perf_counter() - started)
        self.cpus.append(time.process_time() - cpu_before)
        backend_after = backend_cpu()
        if backend_before is not None and backend_after is not None:
            self.backend_cpus.append(backend_after - backend_before)
        if not result.ok:
            failed = [c for c in result.checks if not c["ok"]]
            raise SystemExit(f"reconciliation failed on the benchmark's data: {failed}")
        self.checks.append(result.checks)


def full_run() -> object:
    from settlement.reconciliation import reconciliation_run

    return reconciliation_run(full=True)


def checkpoint_run() -> object:
    from settlement.reconciliation import reconciliation_run

    return reconciliation_run(full=False)


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:,.0f}"


def report(runs: list[Runs], markdown: bool) -> None:
    header = ["check"]
    for kind in runs:
        header += [f"{kind.name}: checked", f"{kind.name}: median ms"]
    rows = []
    for position, first in enumerate(runs[0].checks[0]):
        row = [first["check"]]
        for kind in runs:
            checked = sorted({run[position]["checked"] for run in kind.checks})
            row.append(f"{checked[0]:,}" if len(checked) == 1 else f"{checked[0]:,}-{checked[-1]:,}")
            row.append(f"{statistics.median(run[position]['duration_ms'] for run in kind.checks):,.0f}")
        rows.append(row)
    for label, values in (
        ("the whole run, wall", lambda k: k.walls),
        ("the whole run, CPU of this process", lambda k: k.cpus),
        ("the whole run, CPU of its PostgreSQL backend", lambda k: k.backend_cpus),
    ):
        row = [label]
        for kind in runs:
            row += ["", median_ms(values(kind)) if values(kind) else "-"]
        rows.append(row)
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + " --- |" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        print("  ".join(cells))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=150_000, help="engine events per market (default 150,000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (median reported; default 3)")
    parser.add_argument(
        "--new", type=int, default=6_000, help="events per market traded before a run from the checkpoints (6,000)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the database at the end and print its name")
    parser.add_argument("--database", help="time this kept database again (trading on to --events if it holds fewer)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    with own_database("reconcile", database=args.database, keep=args.keep) as (name, url, created):
        from django.core.management import call_command
        from django.db import connection

        if created:
            call_command("seed_demo", stdout=io.StringIO())
        markets = sorted(PRICE)
        exchange = Exchange(engine=engine_restore())
        traders = traders_for(markets, -(-(args.events + args.repeat * args.new) // EVENTS_PER_ROUND))
        progress(f"trading until each market holds {args.events:,} events")
        load_s = load(exchange, traders, args.events)
        engine_save(exchange.engine)
        progress("VACUUM (ANALYZE)")
        vacuum_s = vacuum_analyze(url)

        full, after_new, nothing_new = (
            Runs("from genesis"),
            Runs(f"from the checkpoints, {args.new:,} new events a market"),
            Runs("from the checkpoints, nothing new"),
        )
        progress("one run untimed")
        full_run()
        for round_ in range(1, args.repeat + 1):
            progress(f"round {round_} / {args.repeat}: a full run, {args.new:,} new events a market, two runs")
            full.record(full_run)
            for market, pair in traders.items():
                done = 0
                while done < args.new:
                    done += exchange.trade_round(market, pair)
            after_new.record(checkpoint_run)
            nothing_new.record(checkpoint_run)
        engine_save(exchange.engine)
        kinds = [full, after_new, nothing_new]

        with connection.cursor() as cur:
            cur.execute("SHOW server_version")
            (pg_version,) = cur.fetchone()
            cur.execute(
                "SELECT (SELECT count(*) FROM settlement_engineevent), (SELECT count(*) FROM settlement_trade), "
                "(SELECT count(*) FROM matching_order), (SELECT count(*) FROM accounts_ledgerline), "
                "pg_database_size(current_database())"
            )
            events, trades, orders, lines, size = cur.fetchone()
        load_after = os.getloadavg()

        import django

        print(
            f"{machine()}, PostgreSQL {pg_version}, Python {sys.version.split()[0]}, Django {django.get_version()}; "
            f"load average (1, 5, 15 min) {', '.join(f'{v:.2f}' for v in load_before)} before, "
            f"{', '.join(f'{v:.2f}' for v in load_after)} after"
        )
        print(
            f"database {name}: {events:,} engine events in {len(markets)} markets, {trades:,} trades, "
            f"{orders:,} orders, {lines:,} ledger lines ({size / 2**20:,.0f} MiB)"
        )
        print(f"load: {load_s:,.1f} s of trading and settling; VACUUM (ANALYZE): {vacuum_s:,.1f} s")
        print(
            f"one untimed run, then {args.repeat} rounds of: a full run, {args.new:,} events traded in each market, "
            "a run from the checkpoints, another; medians"
        )
        print()
        report(kinds, args.markdown)


if __name__ == "__main__":
    main()
