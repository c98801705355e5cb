"""Each stage behind the API on its own, in this process: the outbox relay, the settlement consumer's
store, and settlement.

    make bench-stages
    .venv/bin/python benchmarks/stages.py --rows 10000 --single 300 --repeat 3
    .venv/bin/python benchmarks/stages.py --keep          # keep the database and the topics, print their names

Creates a database of its own (exchange_bench_stages_<random>, `benchmarks/scratch.py`) on the
PostgreSQL server of DATABASE_URL (only the server and credentials are used), migrates it, creates the demo assets and
markets (`seed_demo`), registers traders and funds them through custody reports
(`deposit_report`, with the asset's confirmations). It needs the Kafka-compatible broker of
KAFKA_BOOTSTRAP_SERVERS (`make up` starts one) and uses topics of its own (KAFKA_TOPIC_PREFIX
followed by bench-stages-<random>-), so the running exchange's engine never sees its orders.

Each round, the traders place orders through `orders_place` (batches of up to 100, crossing each
other in both markets: limit, IOC, FOK, post-only and market orders, and cancels of some of them
through `order_cancel`), and then each stage runs alone over what the round placed:

1. the outbox relay: `outbox_relay_batch(limit=OUTBOX_BATCH_SIZE)` drains --rows outbox rows into
   the orders topic, as `run_outbox_relay` does; before it, --single rows are drained one at a
   time (`limit=1`) for comparison;
2. the settlement consumer's store: the round's commands go through the matching engine's core in
   this process exactly as `run_matching_engine` passes them (`schemas.decode_command`,
   `Engine.apply`, `schemas.encode_event`, key = market), the events go to the engine-events topic
   and come back in the batches `run_settlement`'s consumer reads (`Consumer.poll`, at most
   KAFKA_MAX_POLL_RECORDS); `events_ingest` then stores those batches, timed;
3. settlement: `market_settle` applies the stored events of each market, a batch of
   SETTLEMENT_BATCH_SIZE at a time, as the Celery task does.

Only the stage's own calls are timed: placing orders, the engine and Kafka's round trip of the
events are not. For each stage it reports the wall rate, the CPU per item of this process
(`time.process_time`: Python, psycopg and kafka-python's sender thread, not the waiting) and, when
PostgreSQL runs on this host, the CPU its backend used for this process's connection (from
/proc). A first round (--warmup rows) is not timed: in it, the statements of each relay pass,
each stored batch and each settlement batch are counted with `CaptureQueriesContext`, whose log
renders every statement with its parameters and would add to the CPU of a timed round. Every round
must be settled whole (no alert, every market's cursor at the last event received), and after the
last one every order must have been answered by the engine and every check of the full
reconciliation (`reconciliation_checks`) must pass: otherwise the events were wrong, and it stops
without printing figures.

The database and the topics are dropped at the end unless --keep is given. Refused with
EXCHANGE_ENV=production: it credits traders through custody reports.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import secrets
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import e2e  # benchmarks/e2e.py, beside this script: the progress bar
from funding import trader_funded
from scratch import machine, own_database, progress  # benchmarks/scratch.py: the database of its own

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Where the orders are priced: around a fixed middle, within STEPS price steps either side, so that
# buys and sells keep meeting.
MIDDLE = {"BTC_USDT": (Decimal("50000"), Decimal("1")), "ETH_USDT": (Decimal("3000"), Decimal("0.1"))}
STEPS = 10
MARKET_SHARE = {"BTC_USDT": 0.7, "ETH_USDT": 0.3}
# What kind each order is; the rest are resting (GTC) limit orders.
KINDS = {"market": 0.05, "ioc": 0.10, "fok": 0.02, "post_only": 0.03}
# Of the rows each batch of a trader adds, this share cancels the trader's earlier orders of the round.
CANCEL_SHARE = 0.05
PLACE_BATCH = 100
# What each trader is credited, through custody: below the demo assets' review thresholds.
FUNDING = {"BTC": "5000", "ETH": "50000", "USDT": "50000000"}


class Bar(e2e.Progress):
    """A progress bar by the share of the work done, redrawn at most four times a second."""

    def __init__(self, label: str, total: int) -> None:
        super().__init__(label, 0)
        self.total, self.drawn = max(total, 1), 0.0

    def __call__(self, done: int) -> None:
        if time.monotonic() - self.drawn >= 0.25:
            self.show(f"{done:,} / {self.total:,}", min(done / self.total, 1.0))
            self.drawn = time.monotonic()


# --- The traders and their orders -----------------------------------------------------------------


def traders_fund(count: int, run: str) -> list:
    """`count` traders, each credited with every demo asset through custody's report."""
    return [
        trader_funded(username=f"stages_{run}_{i}", amounts=FUNDING, tx_prefix=f"stages-{run}-{i}")
        for i in range(count)
    ]


@dataclass
class OrderFlow:
    """Orders of funded traders placed through `orders_place`, crossing each other, and cancels of
    some of them through `order_cancel`: every row they add to the outbox is a real command."""

    traders: list
    seed: int
    run: str
    placed: int = 0
    batches: int = 0
    trader: object | None = None
    rng: random.Random = field(init=False)
    markets: dict = field(init=False)

    def __post_init__(self) -> None:
        from matching.models import Market

        self.rng = random.Random(self.seed)
        self.markets = {market.symbol: market for market in Market.objects.filter(pk__in=MARKET_SHARE)}

    def request(self, side: str):
        from matching.services import OrderRequest

        rng = self.rng
        symbol = rng.choices(list(MARKET_SHARE), list(MARKET_SHARE.values()))[0]
        market = self.markets[symbol]
        middle, step = MIDDLE[symbol]
        quantity = market.lot_size * rng.randint(50, 500)
        self.placed += 1
        cid = f"stages_{self.run}_{self.placed:010d}"
        roll, kind = rng.random(), "gtc"
        for name, share in KINDS.items():
            if roll < share:
                kind = name
                break
            roll -= share
        if kind == "market" and side == "buy":
            spend = (middle * quantity).quantize(market.quote_unit)
            return OrderRequest(cid=cid, symbol=symbol, side=side, order_type="market", quote_quantity=spend)
        if kind == "market":
            return OrderRequest(cid=cid, symbol=symbol, side=side, order_type="market", quantity=quantity)
        return OrderRequest(
            cid=cid,
            symbol=symbol,
            side=side,
            order_type="limit",
            price=middle + step * rng.randint(-STEPS, STEPS),
            quantity=quantity,
            time_in_force={"ioc": "IOC", "fok": "FOK"}.get(kind, "GTC"),
            post_only=kind == "post_only",
        )

    def place(self, rows: int, bar: Callable[[int], None] = lambda done: None) -> int:
        """Place orders, and cancel some of them, until they have added `rows` rows to the outbox."""
        from matching.services import order_cancel, orders_place

        written = 0
        earlier: dict[int, list[int]] = {trader.pk: [] for trader in self.traders}
        while written < rows:
            # Buys and sells by turns, each batch another trader's than the one before: a batch crosses
            # the orders of others (its own only where they were left resting from earlier).
            self.batches += 1
            side = ("buy", "sell")[self.batches % 2]
            self.trader = self.rng.choice([t for t in self.traders if t is not self.trader])
            trader = self.trader
            size = min(PLACE_BATCH, rows - written)
            mine = earlier[trader.pk]
            cancels = [mine.pop(self.rng.randrange(len(mine))) for _ in range(min(int(size * CANCEL_SHARE), len(mine)))]
            results = orders_place(user=trader, requests=[self.request(side) for _ in range(size - len(cancels))])
            refused = next((result.error for result in results if result.error is not None), None)
            if refused is not None:
                raise SystemExit(f"an order was refused, the flow needs changing: {refused}")
            mine.extend(result.order.pk for result in results)
            for order_id in cancels:
                order_cancel(user=trader, order_id=order_id)
            written += len(results) + len(cancels)
            bar(written)
        return written


# --- The engine and the events topic ----------------------------------------------------------------


class EngineFeed:
    """The matching worker's part, in this process: the commands of the outbox, in the order the relay
    publishes them, through the engine's core as `run_matching_engine` passes them on (decoded with
    `schemas.decode_command`, applied, each event encoded with `schemas.encode_event` and keyed by its
    market)."""

    def __init__(self) -> None:
        from matching.engine import Engine

        self.engine = Engine()
        self.after = 0

    def events(self) -> tuple[list[tuple[str, bytes]], Counter[str]]:
        """What the engine emits for the commands queued since the last call, and how many of each type."""
        from core.kafka import topics
        from matching import schemas
        from matching.models import OutboxMessage

        queued = OutboxMessage.objects.filter(pk__gt=self.after, topic=topics.ORDERS).order_by("pk")
        emitted: list[tuple[str, bytes]] = []
        types: Counter[str] = Counter()
        for pk, payload in queued.values_list("pk", "payload").iterator(chunk_size=2_000):
            for event in self.engine.apply(schemas.decode_command(bytes(payload))):
                emitted.append((event.market, schemas.encode_event(event)))
                types[event.TYPE] += 1
            self.after = pk
        return emitted, types


class EventsTopic:
    """The engine-events topic of this run: events sent as the worker sends them, and read back in the
    batches the settlement consumer reads (`run_settlement`'s `Consumer.poll`)."""

    SEND_CHUNK = 2_000

    def __init__(self) -> None:
        from settlement.management.commands.run_settlement import Consumer

        self.consumer = Consumer(partitions=[])
        self.consumer.connect()

    def round_trip(self, emitted: list[tuple[str, bytes]]) -> list[list]:
        from core.kafka import client, topics

        bar = Bar("kafka", 2 * len(emitted))
        for start in range(0, len(emitted), self.SEND_CHUNK):
            chunk = [(topics.ENGINE_EVENTS, market, raw) for market, raw in emitted[start : start + self.SEND_CHUNK]]
            sent, error = client.send_batch(chunk, timeout=60)
            if sent < len(chunk):
                raise SystemExit(f"the broker did not acknowledge the engine's events: {error!r}")
            bar(start + len(chunk))
        batches: list[list] = []
        read, deadline = 0, time.monotonic() + 60
        while read < len(emitted):
            messages = self.consumer.poll()
            if messages:
                batches.append(messages)
                read += len(messages)
                bar(len(emitted) + read)
            elif time.monotonic() > deadline:
                raise SystemExit(f"only {read:,} of the {len(emitted):,} events sent came back from the broker")
        bar.close(f"{len(emitted):,} events sent and read back in {len(batches)} batches")
        return batches

    def close(self) -> None:
        self.consumer.teardown(ready=True)


# --- Timing -----------------------------------------------------------------------------------------


@dataclass
class Timing:
    """One stage of one round: items done and calls made, wall and CPU seconds of this process, and the
    CPU seconds of its PostgreSQL backend (None when PostgreSQL does not run on this host)."""

    items: int
    calls: int
    wall: float
    cpu: float
    database: float | None


def backend_cpu(database: str) -> tuple[int, float | None]:
    """The pid of this process's PostgreSQL backend and the CPU seconds it has used, read from /proc
    when that process is this database's backend on this host."""
    from django.db import connection

    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    proc = Path(f"/proc/{pid}")
    try:
        if database.encode() not in (proc / "cmdline").read_bytes():
            return pid, None
        fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return pid, None
    return pid, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def timed(database: str, stage: Callable[[], tuple[int, int]]) -> Timing:
    pid, db_before = backend_cpu(database)
    cpu, wall = time.process_time(), time.perf_counter()
    items, calls = stage()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    pid_after, db_after = backend_cpu(database)
    same = pid == pid_after and db_before is not None and db_after is not None
    return Timing(items, calls, wall, cpu, db_after - db_before if same else None)


def counted(statements: list[int] | None, function: Callable[..., object], **kwargs: object) -> object:
    """`function(**kwargs)`; with a list, the number of statements it ran (BEGIN and COMMIT aside) is
    appended to it."""
    if statements is None:
        return function(**kwargs)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        result = function(**kwargs)
    statements.append(sum(query["sql"] not in ("BEGIN", "COMMIT") for query in queries))
    return result


# --- The stages -------------------------------------------------------------------------------------


def relay(limit: int, rows: int, statements: list[int] | None = None) -> tuple[int, int]:
    """Drain the outbox as `run_outbox_relay` does: passes of `limit` rows until a pass finds fewer."""
    from matching.services import outbox_relay_batch

    bar = Bar(f"relay x{limit}", rows)
    sent = passes = 0
    while True:
        done = counted(statements, outbox_relay_batch, limit=limit)
        passes += 1
        if done.failed:
            raise SystemExit(f"the broker did not acknowledge a relay pass ({done.sent} of {done.taken} sent)")
        sent += done.sent
        bar(sent)
        if done.taken < limit:
            bar.close(f"{sent:,} rows in {passes:,} passes")
            return sent, passes


def store(batches: list[list], statements: list[int] | None = None) -> tuple[int, int]:
    """`events_ingest` of each batch the consumer read, as `run_settlement` stores them."""
    from core.kafka import topics
    from settlement.services import events_ingest

    topic = topics.name(topics.ENGINE_EVENTS)
    total = sum(len(messages) for messages in batches)
    bar, stored = Bar("store", total), 0
    for messages in batches:
        counted(statements, events_ingest, topic=topic, messages=messages)
        stored += len(messages)
        bar(stored)
    bar.close(f"{stored:,} events in {len(batches)} batches")
    return stored, len(batches)


def settle(markets: list[str], events: int, statements: list[int] | None = None) -> tuple[int, int]:
    """`market_settle` of each market until its backlog is applied, as the Celery task does."""
    from django.conf import settings

    from settlement.services import market_settle

    bar, applied, batches = Bar("settle", events), 0, 0
    for market in markets:
        while True:
            count = counted(statements, market_settle, market=market, limit=settings.SETTLEMENT_BATCH_SIZE)
            applied += count
            batches += 1
            bar(applied)
            if count < settings.SETTLEMENT_BATCH_SIZE:
                break
    bar.close(f"{applied:,} events in {batches} batches")
    return applied, batches


def settlement_stopped(markets: list[str]) -> str:
    """Why settlement did not apply every event it stored, or "" when it did."""
    from settlement.models import Alert, SettlementCursor

    alerts = list(Alert.objects.values_list("kind", "market", "message"))
    if alerts:
        return "; ".join(f"{kind} {market}: {message}" for kind, market, message in alerts)
    for cursor in SettlementCursor.objects.filter(market__in=markets):
        if cursor.status != SettlementCursor.Status.OK or cursor.seq != cursor.received_seq:
            return f"market {cursor.market} is {cursor.status} at #{cursor.seq} of {cursor.received_seq}"
    return ""


# --- A round -----------------------------------------------------------------------------------------


@dataclass
class Round:
    relay_single: Timing
    relay: Timing
    store: Timing
    settle: Timing
    trades: int
    types: Counter[str]


def run_round(
    flow: OrderFlow,
    feed: EngineFeed,
    topic: EventsTopic,
    *,
    rows: int,
    single: int,
    database: str,
    statements: dict[str, list[int]] | None = None,
) -> Round:
    """Place the round's orders, then run each stage over them alone. With `statements`, the number of
    statements of each call is collected in it, by stage."""
    from django.conf import settings

    from settlement.models import Trade

    def counts(stage: str) -> list[int] | None:
        return None if statements is None else statements.setdefault(stage, [])

    bar = Bar("place", single + rows)
    flow.place(single, bar)
    relay_single = timed(database, lambda: relay(1, single, counts("relay, one row a pass")))
    flow.place(rows, lambda done: bar(single + done))
    bar.close(f"{single + rows:,} outbox rows")
    batch = settings.OUTBOX_BATCH_SIZE
    relay_batch = timed(database, lambda: relay(batch, rows, counts(f"relay, passes of {batch}")))
    if relay_single.items != single or relay_batch.items != rows:
        raise SystemExit(f"the relay sent {relay_single.items} + {relay_batch.items} rows, not {single} + {rows}")

    emitted, types = feed.events()
    batches = topic.round_trip(emitted)
    stored = timed(database, lambda: store(batches, counts("store, a Kafka batch")))
    trades = Trade.objects.count()
    markets = sorted(flow.markets)
    settled = timed(database, lambda: settle(markets, len(emitted), counts("settle, a batch")))
    trades = Trade.objects.count() - trades
    stopped = settlement_stopped(markets)
    if stopped or settled.items != len(emitted):
        raise SystemExit(f"settlement applied {settled.items:,} of {len(emitted):,} events: {stopped}")
    return Round(relay_single, relay_batch, stored, settled, trades, types)


def prepare(*, traders: int, run: str, seed: int) -> tuple[OrderFlow, EngineFeed, EventsTopic]:
    """The demo assets and markets (the commands that open the markets relayed, as the engine must
    see them first), the topics, and the funded traders' order flow."""
    from django.conf import settings
    from django.core.management import call_command

    from core.kafka import client

    call_command("seed_demo", stdout=io.StringIO())
    client.ensure_topics()
    relay(settings.OUTBOX_BATCH_SIZE, len(MARKET_SHARE))
    flow = OrderFlow(traders_fund(traders, run), seed=seed, run=run)
    return flow, EngineFeed(), EventsTopic()


# --- The report ----------------------------------------------------------------------------------------


def spread(values: list[float], form: str) -> str:
    """The median and, in brackets, the lowest and the highest."""
    if len(values) == 1:
        return form.format(values[0])
    low, middle, high = min(values), statistics.median(values), max(values)
    return f"{form.format(middle)} ({form.format(low)} to {form.format(high)})"


def rate(counts: list[int], timings: list[Timing], unit: str) -> str:
    return spread([n / t.wall for n, t in zip(counts, timings, strict=True)], "{:,.0f}") + f" {unit}/s"


def per_item(seconds: list[float | None], counts: list[int], each: str) -> str:
    if any(value is None for value in seconds):
        return "not on this host"
    return spread([s * 1000 / n for s, n in zip(seconds, counts, strict=True)], "{:.3f}") + f" ms {each}"


def stage_row(label: str, timings: list[Timing], rates: str, counts: list[int], each: str) -> list[str]:
    """A stage's line: its wall rate, and the CPU of this process and of its PostgreSQL backend per item."""
    return [
        label,
        rates,
        per_item([t.cpu for t in timings], counts, each),
        per_item([t.database for t in timings], counts, each),
    ]


def report(rounds: list[Round], statements: dict[str, list[int]]) -> None:
    from django.conf import settings

    batch = settings.OUTBOX_BATCH_SIZE
    relayed, single = [r.relay for r in rounds], [r.relay_single for r in rounds]
    stored, settled = [r.store for r in rounds], [r.settle for r in rounds]
    trades = [r.trades for r in rounds]
    rows = [
        stage_row(f"outbox relay, passes of {batch}", relayed, rate([t.items for t in relayed], relayed, "rows"),
                  [t.items for t in relayed], "a row"),
        stage_row("outbox relay, one row a pass", single, rate([t.items for t in single], single, "rows"),
                  [t.items for t in single], "a row"),
        stage_row("settlement consumer's store (events_ingest)", stored,
                  rate([t.items for t in stored], stored, "events"), [t.items for t in stored], "an event"),
        stage_row("settlement (market_settle)", settled,
                  f"{rate(trades, settled, 'trades')}, {rate([t.items for t in settled], settled, 'events')}",
                  trades, "a trade"),
    ]  # fmt: skip
    header = ["stage", "rate (wall)", "CPU of this process", "CPU of its PostgreSQL backend"]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print("Statements a call, BEGIN and COMMIT aside, counted in the untimed round (CaptureQueriesContext):")
    for stage, counts in statements.items():
        low, high = min(counts), max(counts)
        print(f"- {stage}: {low if low == high else f'{low} to {high}'} ({len(counts)} calls)")


def broker_check() -> None:
    """Stop, saying what to do, when no broker answers: the relay's figures are a real broker's."""
    from django.conf import settings

    from exchange.health import CHECKS

    try:
        CHECKS["kafka"]()
    except OSError as exc:
        brokers = ", ".join(settings.KAFKA["BOOTSTRAP_SERVERS"])
        raise SystemExit(
            f"no Kafka broker answers on {brokers} ({exc}): start the local one with `make up`, or point "
            "KAFKA_BOOTSTRAP_SERVERS at one"
        ) from exc


def measure(args: argparse.Namespace, *, run: str, database: str) -> tuple[list[Round], dict[str, list[int]]]:
    """An untimed round that counts statements, then the timed rounds; then the checks that the
    events were all settled and that the books reconcile."""
    from matching.models import Order
    from settlement.reconciliation import reconciliation_checks

    progress(f"creating the demo markets and topics, and {args.traders} traders funded through custody")
    flow, feed, events_topic = prepare(traders=args.traders, run=run, seed=args.seed)
    try:
        progress(f"untimed round of {args.warmup:,} rows, counting statements")
        statements: dict[str, list[int]] = {}
        single = min(args.single, 50)
        run_round(flow, feed, events_topic, rows=args.warmup, single=single, database=database, statements=statements)
        rounds = []
        for number in range(1, args.repeat + 1):
            progress(f"round {number} / {args.repeat}: {args.single:,} + {args.rows:,} outbox rows")
            rounds.append(run_round(flow, feed, events_topic, rows=args.rows, single=args.single, database=database))
    finally:
        events_topic.close()
    progress("checking: every order answered by the engine, and the full reconciliation")
    pending = Order.objects.filter(status=Order.Status.PENDING).count()
    failed = [check for check in reconciliation_checks() if not check.ok]
    if pending or failed:
        problems = "; ".join(f"{c.check}: {', '.join(c.problems[:3])}" for c in failed)
        raise SystemExit(f"{pending} orders left pending; reconciliation: {problems or 'ok'}")
    return rounds, statements


def describe(rounds: list[Round], load_before: tuple[float, float, float]) -> None:
    """The host, the software, the load, and what each round did."""
    import django
    import kafka
    from django.conf import settings
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        (pg_version,) = cursor.fetchone()
    load_after = os.getloadavg()
    types = sum((r.types for r in rounds), Counter())
    print(
        f"{machine()}, PostgreSQL {pg_version}, Python {sys.version.split()[0]}, Django {django.get_version()}, "
        f"kafka-python {kafka.__version__}, broker {', '.join(settings.KAFKA['BOOTSTRAP_SERVERS'])}"
    )
    print(
        "load average (1, 5, 15 min): "
        + " before, ".join(", ".join(f"{v:.2f}" for v in load) for load in (load_before, load_after))
        + " after"
    )
    print(
        f"{len(rounds)} timed rounds after an untimed one, each: {rounds[0].relay_single.items:,} outbox rows "
        f"relayed one at a time, then {rounds[0].relay.items:,} in passes of {settings.OUTBOX_BATCH_SIZE}; their "
        f"engine events stored in the consumer's Kafka batches (at most "
        f"{settings.KAFKA['CONSUMER']['max_poll_records']}) and settled in batches of "
        f"{settings.SETTLEMENT_BATCH_SIZE}. Median (lowest to highest) of the rounds."
    )
    print(
        f"events a round, on average: {sum(types.values()) / len(rounds):,.0f} ("
        + ", ".join(f"{kind} {count / len(rounds):,.0f}" for kind, count in types.most_common())
        + f"); Kafka batches a round {statistics.mean(r.store.calls for r in rounds):,.1f}, "
        f"settlement batches {statistics.mean(r.settle.calls for r in rounds):,.1f}"
    )
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000, help="outbox rows relayed in passes, a round (10,000)")
    parser.add_argument("--single", type=int, default=300, help="outbox rows relayed one at a time, a round (300)")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds; the median is reported (3)")
    parser.add_argument("--warmup", type=int, default=1_000, help="outbox rows of the untimed first round (1,000)")
    parser.add_argument("--traders", type=int, default=8, help="traders placing the orders (8)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", action="store_true", help="keep the database and the topics, and print their names")
    args = parser.parse_args(argv)
    if os.environ.get("EXCHANGE_ENV") == "production":
        raise SystemExit("benchmarks/stages.py credits traders through custody reports: refused in production")

    run = secrets.token_hex(4)
    # Topics of its own, so that the running exchange's matching worker never reads these orders.
    os.environ["KAFKA_TOPIC_PREFIX"] = f"{os.environ.get('KAFKA_TOPIC_PREFIX', '')}bench-stages-{run}-"
    # Every order stays pending until its round is settled.
    os.environ.setdefault("MAX_OPEN_ORDERS_PER_USER", "100000000")
    load_before = os.getloadavg()
    with own_database("stages", database=None, keep=args.keep) as (name, _, _):
        from core.kafka import client, topics

        topic_names = [topics.name(t) for t in topics.ALL]
        broker_check()
        try:
            rounds, statements = measure(args, run=run, database=name)
        finally:
            if args.keep:
                progress(f"topics kept: {', '.join(topic_names)}")
            else:
                try:
                    client.delete_topics(topic_names)
                except Exception as exc:  # noqa: BLE001 - the figures stand; the topics are only left over
                    progress(f"could not delete the topics ({exc!r}); delete {', '.join(topic_names)} by hand")
        describe(rounds, load_before)
        report(rounds, statements)
    return 0


if __name__ == "__main__":
    sys.exit(main())
