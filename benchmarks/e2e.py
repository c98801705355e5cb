"""The exchange's front door and its settlement, measured side by side in one run.

    make bench-e2e                     # starts the stack with raised THROTTLE_* limits if needed
    .venv/bin/python benchmarks/e2e.py --base http://127.0.0.1:8000

Registers and funds traders through the public API (deposits confirmed by the custody simulator
that `make up` starts), then runs five phases from keep-alive sessions, one per client thread:

1. `GET /api/balances/`, the cheapest authenticated call: requests/s and latency;
2. `POST /api/orders/` with resting limit orders far from the touch: orders/s and latency;
3. single crossing orders at a fixed rate (200 orders/s by default): accepted → settled latency;
4. `POST /api/orders/batch/` with batches of resting limit orders: orders/s;
5. crossing batches (a batch of sells, then a batch of buys at the same price, from different
   traders) sent as fast as they are accepted for a minute, then waiting until every trade is
   visible in `GET /api/trades/`: trades/s settled, and whether the backlog grew.

The stages behind the API are read from the timestamps the database keeps (orders.created_at,
the outbox's published_at, the engine events' received_at and settled_at, trades' settled_at)
through SQL on the exchange's database (DATABASE_URL); the settlement backlog and the outbox queue
are sampled every second, and the CPU time of every process of the stack (from /proc) is added up
per phase, which names the stage that bounds each phase. Writes the figures as JSON and a plot
(throughput, backlog and latency over time, per phase) and prints the markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import load  # benchmarks/load.py, beside this script
import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
SYMBOL = "BTC_USDT"
QUANTITY = "0.001"  # 50 USDT at the crossing price, above the minimum notional
CROSS_PRICE = "50000"
TARGETS = {
    "orders_vs_balances": 0.6,
    "orders_per_s": 400,
    "batch_orders_per_s": 4000,
    "trades_per_s": 1000,
    "accepted_to_settled_p99_ms": 250,
}


class Trader(load.Trader):
    """A trader of `benchmarks/load.py` (registration, login, keep-alive session) that also crosses."""

    def order(self, side: str, price: str) -> requests.Response:
        body = {
            "cid": f"e2e_{uuid.uuid4().hex[:24]}",
            "symbol": SYMBOL,
            "side": side,
            "order_type": "Limit",
            "price": price,
            "quantity": QUANTITY,
        }
        return self.call("POST", "orders/", json=body)

    def batch(self, side: str, price: str, size: int) -> requests.Response:
        orders = [
            {
                "cid": f"e2e_{uuid.uuid4().hex[:24]}",
                "symbol": SYMBOL,
                "side": side,
                "order_type": "limit",
                "price": price,
                "quantity": QUANTITY,
            }
            for _ in range(size)
        ]
        return self.call("POST", "orders/batch/", json={"orders": orders})


@dataclass
class Samples:
    """(wall time at the end, seconds, HTTP status, orders placed) of each request of one phase."""

    rows: list[tuple[float, float, int, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def timed(self, send: Callable[[], requests.Response]) -> requests.Response:
        started = time.perf_counter()
        try:
            answer = send()
        except requests.ConnectionError:
            # Counted as status 0, and the thread goes on with a new connection: nothing is sent
            # again, since whether the server took the orders is not known.
            answer = requests.Response()
            answer.status_code = 0
        elapsed = time.perf_counter() - started
        placed = int(200 <= answer.status_code < 300)
        if answer.status_code == 200 and answer.request.path_url.endswith("/batch/"):
            placed = sum(result["status"] == 201 for result in answer.json()["results"])
        with self.lock:
            self.rows.append((time.time(), elapsed, answer.status_code, placed))
        if answer.status_code == 503 and "Retry-After" in answer.headers:
            # The exchange is catching up (MAX_PENDING_ORDERS): wait as it asks, as a client should.
            time.sleep(float(answer.headers["Retry-After"]))
        return answer


# What each process of the stack is, by its command line (`make up` runs the Procfile's lines).
PROCESS_KINDS = (
    ("gunicorn", "api"),
    ("run_matching_engine", "engine"),
    ("run_outbox_relay", "relay"),
    ("run_settlement", "settlement consumer"),
    ("celery -A exchange worker", "celery (settlement)"),
    ("celery -A exchange beat", "beat"),
    ("run_custody_simulator", "custody"),
    ("postgres", "postgresql"),
    ("redis-server", "redis"),
    ("noida", "kafka broker"),
    ("benchmarks/e2e.py", "load generator"),
)


# The process kind each of the stack's processes gives its PostgreSQL connections as their
# application name, `exchange-<EXCHANGE_PROCESS>` (the Procfile, exchange/settings.py).
BACKEND_OWNERS = {
    "api": "api",
    "engine": "engine",
    "relay": "relay",
    "settlement": "settlement consumer",
    "celery": "celery (settlement)",
    "beat": "beat",
    "custody": "custody",
    "bench": "load generator",  # the benchmark's own connections (Sampler, CpuMeter)
}


def backend_owners(db: psycopg.Connection) -> dict[int, str]:
    """The process kind each PostgreSQL backend of the stack works for, by its pid."""
    rows = db.execute("SELECT pid, application_name FROM pg_stat_activity").fetchall()
    names = {pid: (name or "").removeprefix("exchange-") for pid, name in rows}
    return {pid: BACKEND_OWNERS[name] for pid, name in names.items() if name in BACKEND_OWNERS}


# pid -> (kind, CPU seconds so far), as `process_cpu` reads them.
Reading = dict[int, tuple[str, float]]


def process_cpu(owners: dict[int, str] | None = None) -> Reading:
    """Each process of the stack by pid: its kind, and the CPU time (user + system) it used so far,
    with what its exited children used (PostgreSQL's backends that ended are counted in the
    postmaster's). With `owners` (`backend_owners`), a PostgreSQL backend's kind is
    `postgresql for <the kind it works for>`; `postgresql` keeps the rest: the server's own
    processes, other clients' backends and backends that ended."""
    owners = owners or {}
    ticks = os.sysconf("SC_CLK_TCK")
    found: Reading = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kind = next((name for needle, name in PROCESS_KINDS if needle in command), None)
        if kind == "postgresql" and int(entry.name) in owners:
            kind = f"postgresql for {owners[int(entry.name)]}"
        if kind is not None:
            found[int(entry.name)] = (kind, sum(int(value) for value in fields[11:15]) / ticks)
    return found


def cpu_seconds() -> dict[str, float]:
    """CPU time used so far by each kind of process of the stack (`process_cpu`, added up)."""
    totals: dict[str, float] = {}
    for kind, used in process_cpu().values():
        totals[kind] = totals.get(kind, 0.0) + used
    return totals


def cpu_used(before: Reading, after: Reading) -> dict[str, float]:
    """The CPU seconds each kind of process used between two `process_cpu` readings, process by
    process: a process's time goes to the kind it has in `after`. A process that ended in between
    has all its time in its parent's count by `after`, so what it had used by `before` is taken
    off again: off `postgresql` for a backend (the postmaster is its parent), off its own kind for
    the others (gunicorn's and Celery's workers are children of their own kind)."""
    used: dict[str, float] = {}
    for pid, (kind, seconds) in after.items():
        used[kind] = used.get(kind, 0.0) + seconds - before.get(pid, (kind, 0.0))[1]
    for pid, (kind, seconds) in before.items():
        if pid not in after:
            parent = "postgresql" if kind.startswith("postgresql") else kind
            used[parent] = used.get(parent, 0.0) - seconds
    return used


class CpuMeter(threading.Thread):
    """The CPU each kind of process of the stack uses while a phase runs, in cores, with
    PostgreSQL's backends counted for the processes they work for (`backend_owners`).

    It reads every second: Django closes a connection after `CONN_MAX_AGE`, and a backend that
    ended leaves the time it used since the last reading to `postgresql` (its parent's count)."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.db = psycopg.connect(dsn, autocommit=True, application_name="exchange-bench")
        self.owners: dict[int, str] = {}
        self.used: dict[str, float] = {}
        self.stopping = threading.Event()
        self.last = self.read()
        self.started = time.monotonic()

    def read(self) -> Reading:
        self.owners.update(backend_owners(self.db))
        return process_cpu(self.owners)

    def add(self) -> None:
        reading = self.read()
        for kind, seconds in cpu_used(self.last, reading).items():
            self.used[kind] = self.used.get(kind, 0.0) + seconds
        self.last = reading

    def run(self) -> None:
        while not self.stopping.wait(1.0):
            self.add()

    def finish(self) -> dict[str, float]:
        """Stop; the cores each kind used since the meter was made."""
        self.stopping.set()
        self.join()
        self.add()
        self.db.close()
        elapsed = time.monotonic() - self.started
        return {kind: round(seconds / elapsed, 2) for kind, seconds in self.used.items()}


class Sampler(threading.Thread):
    """Every second: events received but not settled (all markets), outbox rows not yet sent, and
    orders not yet accepted by the engine and settled as such (`pending`)."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.rows, self.stopped = dsn, [], threading.Event()

    def run(self) -> None:
        # Named, so that its backend's CPU is counted as the load generator's (`backend_owners`).
        with psycopg.connect(self.dsn, autocommit=True, application_name="exchange-bench") as db:
            while not self.stopped.wait(1.0):
                backlog = db.execute(
                    "select coalesce(sum(received_seq - seq), 0) from settlement_settlementcursor"
                ).fetchone()[0]
                unsent = db.execute(
                    "select count(*) from matching_outboxmessage where published_at is null"
                ).fetchone()[0]
                pending = db.execute("select count(*) from matching_order where status = 'pending'").fetchone()[0]
                self.rows.append((time.time(), int(backlog), int(unsent), int(pending)))


# The tables every order updates (`pending` to `open`, an outbox row marked sent, an event marked
# settled): each update leaves a dead row version behind, and its index entries, until a vacuum.
HOT_TABLES = (
    "matching_order",
    "matching_outboxmessage",
    "accounts_account",
    "settlement_engineevent",
    "settlement_settlementcursor",
    "settlement_consumeroffset",
)


def autovacuum_stands_in(dsn: str) -> bool:
    """Whether this PostgreSQL runs without autovacuum, so that the benchmark vacuums the hot tables
    itself before each phase. Without either, every pending order ever placed stays in the order
    indexes as a dead entry, and each phase pays for all the ones before it: a count of one user's
    live orders, or of all pending ones, reads through them."""
    with psycopg.connect(dsn, autocommit=True) as db:
        off = db.execute("SHOW autovacuum").fetchone()[0] == "off"
    if off:
        print("PostgreSQL runs with autovacuum off: the benchmark vacuums the hot tables before each phase")
    return off


def vacuum(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(f"VACUUM (ANALYZE) {', '.join(HOT_TABLES)}")


class Progress:
    """A one-line progress bar on stderr, by elapsed time, or by the share of the work `done`."""

    def __init__(self, label: str, seconds: float) -> None:
        self.label, self.seconds, self.started = label, seconds, time.monotonic()

    def show(self, note: str = "", done: float | None = None) -> None:
        if done is None:
            done = min(1.0, (time.monotonic() - self.started) / self.seconds) if self.seconds else 1.0
        bar = "#" * int(done * 30)
        sys.stderr.write(f"\r{self.label:<10} [{bar:<30}] {done:4.0%} {note:<40}")
        sys.stderr.flush()

    def close(self, note: str) -> None:
        self.show(note)
        sys.stderr.write("\n")


def run_threads(label: str, seconds: float, target: Callable[[int, float], None], threads: int, samples: Samples):
    deadline = time.monotonic() + seconds
    workers = [threading.Thread(target=target, args=(i, deadline), daemon=True) for i in range(threads)]
    progress = Progress(label, seconds)
    for worker in workers:
        worker.start()
    while any(worker.is_alive() for worker in workers):
        progress.show(f"{len(samples.rows)} requests")
        time.sleep(0.25)
    progress.close(f"{len(samples.rows)} requests")


def summary(samples: Samples, started: float, ended: float) -> dict:
    ok = [seconds for _, seconds, status, _ in samples.rows if status < 300]
    statuses: dict[str, int] = {}
    for _, _, status, _ in samples.rows:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "requests": len(samples.rows),
        "ok": len(ok),
        "seconds": round(ended - started, 2),
        "per_s": round(len(ok) / (ended - started), 1),
        "orders_per_s": round(sum(placed for *_, placed in samples.rows) / (ended - started), 1),
        "p50_ms": round(load.percentile(ok, 0.5) * 1000, 1),
        "p99_ms": round(load.percentile(ok, 0.99) * 1000, 1),
        "statuses": statuses,
    }


def stages(dsn: str, started: float, ended: float) -> dict:
    """Per-stage figures of the orders accepted in [started, ended], from the database's timestamps."""
    window = (datetime.fromtimestamp(started, UTC), datetime.fromtimestamp(ended, UTC))
    ms = "percentile_cont(array[0.5, 0.99]) within group (order by extract(epoch from {}) * 1000)"
    with psycopg.connect(dsn, autocommit=True) as db:
        orders = db.execute(
            "select count(*) from matching_order where created_at between %s and %s", window
        ).fetchone()[0]
        outbox = db.execute(
            f"select count(*), {ms.format('published_at - created_at')}, max(published_at) "  # noqa: S608 - fixed text
            "from matching_outboxmessage where created_at between %s and %s and published_at is not null",
            window,
        ).fetchone()
        # A trade event's ts is the taking order's created_at: accepted → in the settlement inbox
        # covers the outbox, the broker, the matching worker and the settlement consumer.
        events = db.execute(
            f"select count(*), {ms.format('received_at - to_timestamp((payload->>%s)::bigint / 1000.0)')}, "  # noqa: S608
            f"{ms.format('settled_at - received_at')}, max(received_at), max(settled_at) "
            "from settlement_engineevent where type = 'trade' "
            "and to_timestamp((payload->>%s)::bigint / 1000.0) between %s and %s",
            ("ts", "ts", *window),
        ).fetchone()
        trades = db.execute(
            f"select count(*), {ms.format('t.settled_at - greatest(b.created_at, s.created_at)')}, "  # noqa: S608
            "min(t.settled_at), max(t.settled_at) from settlement_trade t "
            "join matching_order b on b.id = t.buy_order_id join matching_order s on s.id = t.sell_order_id "
            "where greatest(b.created_at, s.created_at) between %s and %s",
            window,
        ).fetchone()

    def pair(values: list[float] | None) -> tuple[float | None, float | None]:
        return (round(values[0], 1), round(values[1], 1)) if values and values[0] is not None else (None, None)

    span = ended - started
    last_settled = trades[3].timestamp() if trades[3] else None
    return {
        "orders_accepted": orders,
        "orders_per_s": round(orders / span, 1),
        "outbox_published": outbox[0],
        "outbox_ms": pair(outbox[1]),
        "trade_events": events[0],
        "accepted_to_inbox_ms": pair(events[1]),
        "inbox_to_settled_ms": pair(events[2]),
        "trades": trades[0],
        "accepted_to_settled_ms": pair(trades[1]),
        "last_settled_after_s": round(last_settled - ended, 2) if last_settled else None,
    }


def timeline(dsn: str, started: float, ended: float) -> dict[str, list[tuple[float, int]]]:
    """Per-second counts of each stage's timestamp over the whole run."""
    window = (datetime.fromtimestamp(started, UTC), datetime.fromtimestamp(ended, UTC))
    columns = {
        "orders accepted (orders.created_at)": ("matching_order", "created_at", ""),
        "sent to Kafka (outbox published_at)": ("matching_outboxmessage", "published_at", ""),
        "trade events in settlement inbox (received_at)": ("settlement_engineevent", "received_at", "type = 'trade'"),
        "trades settled (trades.settled_at)": ("settlement_trade", "settled_at", ""),
    }
    out = {}
    with psycopg.connect(dsn, autocommit=True) as db:
        for label, (table, column, where) in columns.items():
            extra = f" and {where}" if where else ""
            rows = db.execute(
                f"select floor(extract(epoch from {column})), count(*) from {table} "  # noqa: S608 - fixed names
                f"where {column} between %s and %s{extra} group by 1 order by 1",
                window,
            ).fetchall()
            out[label] = [(float(second), count) for second, count in rows]
    return out


def host() -> dict:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version()}


def loadavg() -> list[float]:
    return [float(value) for value in Path("/proc/loadavg").read_text().split()[:3]]


def plot(path: Path, phases: dict, samples: dict[str, Samples], stages_per_second: dict, queues: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zero = min(phase["started"] for phase in phases.values())
    figure, (rates, backlog, latency) = plt.subplots(
        3, 1, figsize=(11, 9.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3, 2]}
    )
    colours = {
        "balances": "#dddddd",
        "orders": "#cce5ff",
        "batch": "#e2d9f3",
        "settle": "#d4edda",
        "latency": "#fff3cd",
    }
    for name, phase in phases.items():
        for axis in (rates, backlog, latency):
            axis.axvspan(phase["started"] - zero, phase["ended"] - zero, color=colours[name], alpha=0.6, lw=0)
        rates.text((phase["started"] + phase["ended"]) / 2 - zero, 1, name, ha="center", va="bottom", fontsize=8)
    for index, (name, phase_samples) in enumerate(samples.items()):
        colour = f"C{index}"
        seconds: dict[int, list[float]] = {}
        for at, elapsed, status, _ in phase_samples.rows:
            if status < 300:
                seconds.setdefault(int(at - zero), []).append(elapsed * 1000)
        xs = sorted(seconds)
        rates.plot(xs, [len(seconds[x]) for x in xs], lw=1, color=colour, label=f"API requests/s ({name})")
        latency.plot(xs, [load.percentile(seconds[x], 0.5) for x in xs], lw=1, color=colour, label=f"p50 ({name})")
        latency.plot(
            xs, [load.percentile(seconds[x], 0.99) for x in xs], lw=0.6, ls="--", color=colour, label=f"p99 ({name})"
        )
    for index, (label, rows) in enumerate(stages_per_second.items(), start=len(samples)):
        counts = dict(rows)
        seconds_seen = range(int(min(counts, default=0)), int(max(counts, default=-1)) + 1)
        xs, ys = [second - zero for second in seconds_seen], [counts.get(second, 0) for second in seconds_seen]
        rates.plot(xs, ys, lw=1.4, color=f"C{index}", label=label)
    xs = [at - zero for at, *_ in queues]
    backlog.plot(xs, [row[1] for row in queues], lw=1.2, color="C3", label="engine events not yet settled")
    backlog.plot(xs, [row[2] for row in queues], lw=1.2, color="C0", label="outbox rows not yet sent")
    backlog.plot(xs, [row[3] for row in queues], lw=1.2, color="C2", label="orders pending (not yet accepted)")
    backlog.set_yscale("symlog", linthresh=10)
    rates.set_ylabel("per second (log)")
    rates.set_yscale("symlog", linthresh=10)
    rates.set_title("End to end: throughput per stage, queues and API latency, per phase")
    rates.legend(fontsize=7, ncol=2, loc="upper left")
    backlog.set_ylabel("waiting")
    backlog.legend(fontsize=7, loc="upper left")
    latency.set_ylabel("API latency, ms (log)")
    latency.set_yscale("log")
    latency.set_xlabel("seconds since the first phase started")
    latency.legend(fontsize=7, ncol=5, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def refused(phase: dict) -> str:
    """How many requests of a phase the exchange refused while catching up (503 `overloaded`)."""
    count = phase["statuses"].get("503", 0)
    total = sum(phase["statuses"].values())
    said = f"{count:,} of {total:,} requests refused with 503 while more than MAX_PENDING_ORDERS waited"
    if lost := phase["statuses"].get("0", 0):
        said += f"; {lost:,} lost to a connection error"
    return said


def table(result: dict) -> Iterator[str]:
    phases, stage = result["phases"], result["stages"]
    balances, orders, batch = phases["balances"], phases["orders"], phases["batch"]
    settle, fixed = phases["settle"], phases["latency"]
    ratio = orders["per_s"] / balances["per_s"] if balances["per_s"] else float("nan")

    def ms(pair: list | tuple) -> str:
        return " / ".join("-" if value is None else f"{value:,.0f}" for value in pair)

    yield "| measure | measured | target |"
    yield "| --- | --- | --- |"
    yield (
        f"| `GET /api/balances/` | {balances['per_s']:,.0f} requests/s, p50 / p99 "
        f"{balances['p50_ms']:,.0f} / {balances['p99_ms']:,.0f} ms | - |"
    )
    yield (
        f"| `POST /api/orders/` (resting) | {orders['per_s']:,.0f} orders/s, p50 / p99 "
        f"{orders['p50_ms']:,.0f} / {orders['p99_ms']:,.0f} ms | ≥ 400 orders/s |"
    )
    yield f"| orders / balances | {ratio:.2f} | ≥ 0.6 |"
    yield (
        f"| `POST /api/orders/batch/` ({batch['size']} resting orders a request) | {batch['orders_per_s']:,.0f} "
        f"orders/s, p50 / p99 {batch['p50_ms']:,.0f} / {batch['p99_ms']:,.0f} ms a request | ≥ 4,000 orders/s |"
    )
    yield (
        f"| crossing batches: trades settled | {settle['trades_per_s']:,.0f} trades/s over "
        f"{settle['seconds']:.0f} s ({settle['trades']:,} trades; per second: median "
        f"{settle['settled_per_s_median']:,.0f}; at the start / end of the minute, orders pending "
        f"{settle['pending_start']:,} / {settle['pending_end']:,} and events waiting "
        f"{settle['backlog_start']:,} / {settle['backlog_end']:,}; the last settled "
        f"{settle['visible_after_s']:.1f} s after the phase; {refused(settle)}) "
        "| ≥ 1,000 trades/s for 60 s, no growing backlog |"
    )
    yield (
        f"| accepted → settled at {fixed['rate']:.0f} crossing orders/s asked ({fixed['sent_per_s']:,.0f} sent/s) "
        f"| p50 / p99 {ms(stage['latency']['accepted_to_settled_ms'])} ms | p99 < 250 ms |"
    )
    for name in [phase for phase in phases if phase != "balances"]:  # in the order they ran
        figures = stage[name]
        yield (
            f"| stages, {name} phase: outbox → Kafka p50 / p99 | {ms(figures['outbox_ms'])} ms "
            f"({figures['outbox_published']:,} of {figures['orders_accepted']:,} orders) | - |"
        )
        if figures["trade_events"]:
            yield (
                f"| stages, {name} phase: accepted → settlement inbox (outbox, broker, engine, consumer) "
                f"| {ms(figures['accepted_to_inbox_ms'])} ms | - |"
            )
            yield (
                f"| stages, {name} phase: inbox → settled (Celery settlement) | "
                f"{ms(figures['inbox_to_settled_ms'])} ms | - |"
            )


def cpu_table(result: dict) -> Iterator[str]:
    """CPU used by each process of the stack in each phase, in cores (1.00 = one core all the time)."""
    phases = [name for name in result["phases"] if result["phases"][name].get("cpu")]
    kinds = sorted(
        {kind for name in phases for kind in result["phases"][name]["cpu"]},
        key=lambda kind: -max(result["phases"][name]["cpu"].get(kind, 0) for name in phases),
    )
    yield "| process | " + " | ".join(phases) + " |"
    yield "| --- |" + " --- |" * len(phases)
    for kind in kinds:
        cells = [f"{result['phases'][name]['cpu'].get(kind, 0):.2f}" for name in phases]
        yield f"| {kind} | " + " | ".join(cells) + " |"
    totals = [f"{sum(result['phases'][name]['cpu'].values()):.2f}" for name in phases]
    yield "| all of the above | " + " | ".join(totals) + " |"


LATEST, PREVIOUS = "<!-- bench-e2e: latest run -->", "<!-- bench-e2e: earlier runs -->"


def record(result: dict, page: Path) -> None:
    """Put this run's tables in `page` between the LATEST markers, and the run they replace at the
    top of the earlier runs, so every run's figures stay for comparison."""
    loads = result["loadavg"]
    block = "\n".join(
        [
            f"Run of {result['date']} (`{result['command']}`), host: {result['host']['nproc']} CPUs, "
            f"{result['host']['cpu']}, Python {result['host']['python']}; 1-minute load average from "
            f"{min(row[0] for row in loads):.1f} to {max(row[0] for row in loads):.1f} during the run."
            + (
                " PostgreSQL ran with autovacuum off, so the benchmark vacuumed the hot tables before each phase."
                if result.get("vacuumed")
                else ""
            ),
            "",
            *table(result),
            "",
            "CPU used by each process of the stack, in cores (1.00 is one core all the time), per phase:",
            "",
            *cpu_table(result),
        ]
    )
    text = page.read_text()
    head, rest = text.split(LATEST, 1)
    earlier, tail = rest.split(LATEST, 1)
    before, after = tail.split(PREVIOUS, 1)
    if earlier.strip():
        after = f"\n\n{earlier.strip()}{after}"
    page.write_text(f"{head}{LATEST}\n{block}\n{LATEST}{before}{PREVIOUS}{after}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default=f"http://127.0.0.1:{os.environ.get('PORT', '8000')}")
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/exchange"))
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument(
        "--latency-threads",
        type=int,
        default=24,
        help="client threads of the latency phase, each sending a sell and then a buy and waiting for each "
        "answer: enough for the rate even when each answer takes 100 ms (they share the traders of --threads)",
    )
    parser.add_argument("--balances-seconds", type=float, default=20.0)
    parser.add_argument("--orders-seconds", type=float, default=20.0)
    parser.add_argument("--batch-seconds", type=float, default=20.0)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--settle-seconds", type=float, default=60.0)
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=200.0, help="crossing orders/s of the latency phase")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated phases to run (balances,orders,batch,settle,latency), printed as JSON and not "
        "written to docs/: for comparing settings side by side, such as gunicorn's worker model",
    )
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "bench-e2e.json")
    parser.add_argument("--png", type=Path, default=ROOT / "docs" / "bench-e2e.png")
    parser.add_argument("--page", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    n = args.threads

    # Each thread has its own seller (even) and buyer (odd): a buy never meets its own trader's sell.
    # The crossing phases (settle, latency) have traders of their own: the orders of the resting
    # phases (orders, batch) stay open, and placing an order counts its owner's open orders for the
    # open-order cap, so traders that held them would make every crossing order count thousands.
    run = uuid.uuid4().hex[:6]
    traders = [Trader(args.base, f"e2e_{run}_{i}") for i in range(4 * n)]
    progress = Progress("setup", 0)
    for i, trader in enumerate(traders):
        progress.show(f"registering and funding {i + 1}/{len(traders)}")
        trader.login()
        for asset, amount in (("BTC", "100"), ("USDT", "5000000")):
            # Declared here; the custody simulator that `make up` starts confirms them.
            trader.call("POST", "deposits/", json={"asset": asset, "amount": amount}).raise_for_status()
    while any(b["available"] == "0" for t in traders for b in t.call("GET", "balances/").json() if b["asset"] != "ETH"):
        progress.show("waiting for custody to confirm the deposits")
        time.sleep(0.5)
    progress.close("traders funded")
    sellers, buyers = traders[0 : 2 * n : 2], traders[1 : 2 * n : 2]
    crossing_sellers, crossing_buyers = traders[2 * n :: 2], traders[2 * n + 1 :: 2]

    phases: dict[str, dict] = {}
    samples = {name: Samples() for name in ("balances", "orders", "batch", "settle", "latency")}
    loads: list[list[float]] = [loadavg()]
    sampler = Sampler(args.dsn)
    sampler.start()

    def balances(i: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            samples["balances"].timed(lambda: sellers[i].call("GET", "balances/"))

    def resting(i: int, deadline: float) -> None:
        # Far from the touch on both sides: they rest, and never meet the crossing phases' orders.
        k = 0
        while time.monotonic() < deadline:
            trader, side, price = (buyers[i], "Buy", "40000") if k % 2 else (sellers[i], "Sell", "60000")
            samples["orders"].timed(lambda t=trader, s=side, p=price: t.order(s, p))
            k += 1

    def resting_batches(i: int, deadline: float) -> None:
        k = 0
        while time.monotonic() < deadline:
            trader, side, price = (buyers[i], "buy", "40000") if k % 2 else (sellers[i], "sell", "60000")
            samples["batch"].timed(lambda t=trader, s=side, p=price: t.batch(s, p, args.batch_size))
            k += 1

    pairs = {"settle": [0] * n, "latency": [0] * args.latency_threads}

    def crossing_batches(i: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            sell = samples["settle"].timed(lambda: crossing_sellers[i].batch("sell", CROSS_PRICE, args.batch_size))
            buy = samples["settle"].timed(lambda: crossing_buyers[i].batch("buy", CROSS_PRICE, args.batch_size))
            if sell.status_code == buy.status_code == 200:
                placed = [sum(r["status"] == 201 for r in answer.json()["results"]) for answer in (sell, buy)]
                pairs["settle"][i] += min(placed)

    def crossing(interval: float) -> Callable[[int, float], None]:
        def send(i: int, deadline: float) -> None:
            start = time.monotonic()
            k = 0
            while time.monotonic() < deadline:
                wait = start + k * interval - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                sell = samples["latency"].timed(lambda: crossing_sellers[i % n].order("Sell", CROSS_PRICE))
                buy = samples["latency"].timed(lambda: crossing_buyers[i % n].order("Buy", CROSS_PRICE))
                if sell.status_code == buy.status_code == 201:
                    pairs["latency"][i] += 1
                k += 1

        return send

    vacuumed = autovacuum_stands_in(args.dsn)

    def phase(name: str, seconds: float, target: Callable[[int, float], None], threads: int = n) -> tuple[float, float]:
        if vacuumed:
            vacuum(args.dsn)
        meter, started = CpuMeter(args.dsn), time.time()
        meter.start()
        run_threads(name, seconds, target, threads, samples[name])
        ended, cpu = time.time(), meter.finish()
        phases[name] = {"started": started, "ended": ended, **summary(samples[name], started, ended), "cpu": cpu}
        loads.append(loadavg())
        return started, ended

    def drained(label: str, limit: float = 600.0) -> None:
        """Wait until every order is accepted and every event settled: the next phase starts empty."""
        progress, since = Progress(label, 0), time.time()
        while time.time() - since < limit:
            _, events, unsent, pending = sampler.rows[-1] if sampler.rows else (0, 0, 0, 0)
            progress.show(f"{unsent} unsent, {pending} pending orders, {events} events waiting")
            if sampler.rows and sampler.rows[-1][0] > since + 1 and events == unsent == pending == 0:
                break
            time.sleep(0.5)
        progress.close(f"drained in {time.time() - since:.0f} s")

    def settle_phase() -> None:
        started, ended = phase("settle", args.settle_seconds, crossing_batches)
        expected = sum(pairs["settle"])
        progress = Progress("settling", 0)
        while (trades := stages(args.dsn, started, ended)["trades"]) < expected:
            progress.show(f"{trades}/{expected} trades settled")
            if time.time() - ended > 600:
                break
            time.sleep(0.5)
        visible = time.time()
        progress.close(f"{trades}/{expected} trades settled")
        inside = [row for row in sampler.rows if started <= row[0] <= ended]
        settled = timeline(args.dsn, started, ended)["trades settled (trades.settled_at)"]
        per_second = [count for second, count in settled]
        phases["settle"].update(
            pairs=sum(pairs["settle"]),
            trades=trades,
            visible_after_s=round(visible - ended, 2),
            trades_per_s=round(trades / (visible - started), 1),
            settled_per_s_median=load.percentile(per_second, 0.5) if per_second else 0,
            backlog_start=inside[0][1] if inside else 0,
            backlog_end=inside[-1][1] if inside else 0,
            pending_start=inside[0][3] if inside else 0,
            pending_end=inside[-1][3] if inside else 0,
        )

    def latency_phase() -> None:
        # Pairs per thread per second: `rate` orders/s in all, two orders a pair.
        interval = 2 * args.latency_threads / args.rate
        started, ended = phase("latency", args.latency_seconds, crossing(interval), args.latency_threads)
        phases["latency"].update(
            rate=args.rate,
            sent_per_s=round(len(samples["latency"].rows) / (ended - started), 1),
            pairs=sum(pairs["latency"]),
        )
        settle_by = time.time() + 120
        while time.time() < settle_by:
            figures = stages(args.dsn, started, ended)
            if figures["trades"] >= sum(pairs["latency"]):
                break
            time.sleep(0.5)

    def batch_phase() -> None:
        phase("batch", args.batch_seconds, resting_batches)
        phases["batch"]["size"] = args.batch_size

    # The phases in their order. The single crossing orders come before the bulk phases: the
    # development broker's CPU grows with the messages it holds (docs/benchmarks.md), and after the
    # batch and settle phases it holds about 300,000 of them for the next 5 minutes, which a Kafka
    # cluster would not charge to the next phase. Each crossing phase starts with nothing pending.
    steps: list[tuple[str, Callable[[], object], bool]] = [
        ("balances", lambda: phase("balances", args.balances_seconds, balances), False),
        ("orders", lambda: phase("orders", args.orders_seconds, resting), False),
        ("latency", latency_phase, True),
        ("batch", batch_phase, False),
        ("settle", settle_phase, True),
    ]
    # `--only`: a part of the run, for comparing settings side by side; nothing is written to docs/.
    only = [name for name in args.only.split(",") if name]
    for name, run, starts_drained in steps:
        if only and name not in only:
            continue
        if starts_drained:
            drained("drain")
        run()
    sampler.stopped.set()
    if only:
        report = {
            name: {k: v for k, v in figures.items() if k not in ("started", "ended")}
            for name, figures in phases.items()
        }
        for name in ("settle", "latency"):
            if name in phases:
                report[name]["stages"] = stages(args.dsn, phases[name]["started"], phases[name]["ended"])
        print(json.dumps(report, indent=1))
        return 0

    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "host": host(),
        "vacuumed": vacuumed,
        "loadavg": loads,
        "targets": TARGETS,
        "phases": phases,
        "stages": {name: stages(args.dsn, phases[name]["started"], phases[name]["ended"]) for name in phases},
        "queues": sampler.rows,
    }
    first, last = phases["balances"]["started"], time.time()
    per_second = timeline(args.dsn, first, last)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    plot(args.png, phases, samples, per_second, sampler.rows)
    print("\n".join(table(result)))
    print("\nCPU per process, in cores, per phase:\n")
    print("\n".join(cpu_table(result)))
    print(f"\nhost: {result['host']}, load average (1/5/15 min) after each phase: {loads}")
    print(f"statuses per phase: { {name: phase['statuses'] for name, phase in phases.items()} }")
    record(result, args.page)
    print(f"written: {args.json}, {args.png}, {args.page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
