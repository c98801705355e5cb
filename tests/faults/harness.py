"""Private services, random traffic and the uninterrupted-run oracle for the fault-injection suite.

The suite restarts PostgreSQL, Redis and the Kafka broker, so it runs its own of each (from the same
packages `make run` falls back to), on ports of their own, and never touches the machine's.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import requests

from exchange import stack
from tests.e2e.harness import Exchange, Trader, eventually, free_port

# What the API may answer to the traffic below, faults or not. A 500 is never one of them.
EXPECTED_STATUSES = {200, 201, 202, 400, 409, 503}


class PrivateServices:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.config = stack.Config(
            database_url=f"postgres://postgres@127.0.0.1:{free_port()}/postgres",
            redis_url=f"redis://127.0.0.1:{free_port()}/0",
            kafka=f"127.0.0.1:{free_port()}",
            port=0,
        )
        # Run as root, PostgreSQL runs as the `postgres` account, which must reach its data folder:
        # pytest's own temporary folders are closed to other accounts, so it gets one in the open
        # temporary folder, made here and removed at the end.
        self.postgres_dir = Path(tempfile.gettempdir()) / f"exchange-faults-{uuid.uuid4().hex[:8]}"
        self.postgres_dir.mkdir(mode=0o755)
        self.specs = {
            "postgres": stack.postgres_spec(self.config, self.postgres_dir),
            "redis": stack.redis_spec(self.config, workdir),
            "kafka": stack.kafka_spec(self.config, workdir),
        }
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> dict[str, str]:
        return {
            "REDIS_URL": self.config.redis_url,
            "CELERY_BROKER_URL": self.config.redis_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.config.kafka,
        }

    def start(self, name: str) -> None:
        spec = self.specs[name]
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        self.procs[name] = subprocess.Popen(
            spec.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **stack.run_as(spec.user)
        )
        eventually(spec.ready, timeout=60, what=f"private {name}")

    def stop(self, name: str, sig: int | None = None) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, sig or self.specs[name].stop_signal)
        proc.wait(timeout=60)

    def start_all(self) -> None:
        for name in self.specs:
            self.start(name)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        shutil.rmtree(self.postgres_dir, ignore_errors=True)


def _price(base: Decimal, rng: random.Random) -> str:
    return str(base + Decimal(rng.randint(-6, 6)))


@dataclass
class Traffic:
    """Random orders and cancels from a few traders, crossing often."""

    exchange: Exchange
    seed: int
    traders: list[Trader] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    placed: dict[str, int | None] = field(default_factory=dict)  # cid -> order id, None if refused
    unexpected: list[str] = field(default_factory=list)

    def fund(self, count: int = 4) -> None:
        for _ in range(count):
            trader = self.exchange.register("fault")
            trader.deposit("BTC", "5")
            trader.deposit("USDT", "500000")
            self.traders.append(trader)

    def _record(self, answer: requests.Response | None, what: str) -> requests.Response | None:
        status = answer.status_code if answer is not None else "no answer"
        self.statuses[status] += 1
        if status not in EXPECTED_STATUSES:
            body = answer.text[:300] if answer is not None else ""
            self.unexpected.append(f"{what}: {status} {body}")
        return answer

    def _call(self, trader: Trader, method: str, path: str, **kwargs: object) -> requests.Response | None:
        try:
            return trader.call(method, path, timeout=30, **kwargs)
        except requests.RequestException:
            return None

    def step(self, rng: random.Random) -> None:
        trader = rng.choice(self.traders)
        roll = rng.random()
        if roll < 0.2:
            mine = [oid for cid, oid in self.placed.items() if oid and cid.startswith(trader.username[-8:])]
            if mine:
                order_id = rng.choice(mine)
                self._record(self._call(trader, "DELETE", f"orders/{order_id}/"), f"cancel {order_id}")
                return
        cid = f"{trader.username[-8:]}_{uuid.uuid4().hex[:16]}"
        market, base = rng.choice([("BTC_USDT", Decimal(50000)), ("ETH_USDT", Decimal(3000))])
        side = rng.choice(["Buy", "Sell"])
        body: dict[str, object] = {"cid": cid, "symbol": market, "side": side}
        if roll > 0.95:
            body["order_type"] = "Market"
            if side == "Buy":
                body["quote_quantity"] = "100"
            else:
                body["quantity"] = "0.001" if market == "BTC_USDT" else "0.01"
        else:
            body.update(order_type="Limit", price=_price(base, rng))
            body["quantity"] = str(Decimal(rng.randint(1, 20)) * Decimal("0.001" if market == "BTC_USDT" else "0.01"))
        answer = self._record(self._call(trader, "POST", "orders/", json=body), f"order {cid}")
        created = answer is not None and answer.status_code in (200, 201)
        self.placed[cid] = answer.json()["id"] if created else None

    def run(self, count: int, *, faults: dict[int, object] | None = None, pace: float = 0.0) -> None:
        """`count` steps; before step k, call faults[k] (a fault to inject), if any. With `pace`, a
        step starts at most every `pace` seconds."""
        rng = random.Random(self.seed)
        started = time.monotonic()
        for k in range(count):
            if faults and k in faults:
                faults[k]()
            if pace and (wait := started + k * pace - time.monotonic()) > 0:
                time.sleep(wait)
            self.step(rng)

    def run_in_background(self, count: int, *, pace: float = 0.04) -> threading.Thread:
        """The steps on a thread of their own, paced, so that they still come in when a fault injected
        a few seconds later, by the clock, strikes: as fast as the API answers, a few hundred
        steps can be over before it."""
        thread = threading.Thread(target=self.run, args=(count,), kwargs={"pace": pace}, daemon=True)
        thread.start()
        return thread


def uninterrupted_run(exchange: Exchange) -> tuple[set[tuple], dict[str, int]]:
    """The trades, and the last sequence per market, that one engine produces from the same input
    without any interruption."""
    from matching import schemas
    from matching.engine import Engine, Trade

    engine = Engine()
    trades: set[tuple] = set()
    # Exactly what the matching worker consumed: the orders topic, partition by partition.
    for _, _, value in exchange.read_topic("orders"):
        for event in engine.apply(schemas.decode_command(value)):
            if isinstance(event, Trade):
                trades.add(
                    (event.market, event.seq, event.maker_order_id, event.taker_order_id, event.price, event.quantity)
                )
    return trades, engine.sequences()


def settled_trades(exchange: Exchange) -> set[tuple]:
    rows = exchange.query(
        """
        SELECT t.market_id, t.seq, t.buy_order_id, t.sell_order_id, t.taker_side, t.price, t.quantity,
               m.tick_size, m.lot_size
        FROM settlement_trade t JOIN matching_market m ON m.symbol = t.market_id
        """
    )
    trades = set()
    for market, seq, buy, sell, taker_side, price, quantity, tick, lot in rows:
        maker, taker = (sell, buy) if taker_side == "buy" else (buy, sell)
        trades.add((market, seq, maker, taker, int(price / tick), int(quantity / lot)))
    return trades


def wait_until_settled(exchange: Exchange, *, timeout: float = 120.0) -> tuple[set[tuple], dict[str, int]]:
    """Until nothing is pending anywhere and every market is settled up to the engine's last event."""

    def quiet() -> tuple[set[tuple], dict[str, int]] | None:
        if exchange.query(
            "SELECT count(*) FROM matching_order WHERE status = 'pending' "
            "OR (cancel_requested_at IS NOT NULL AND status IN ('open', 'partially_filled'))"
        ) != [(0,)]:
            return None
        if exchange.query("SELECT count(*) FROM matching_outboxmessage WHERE published_at IS NULL") != [(0,)]:
            return None
        expected, sequences = uninterrupted_run(exchange)
        cursors = dict(exchange.query("SELECT market, seq FROM settlement_settlementcursor"))
        if any(cursors.get(market, 0) != seq for market, seq in sequences.items()):
            return None
        return expected, sequences

    return eventually(quiet, timeout=timeout, interval=1.0, what="the exchange to settle everything")


def assert_nothing_lost_or_doubled(exchange: Exchange, traffic: Traffic) -> None:
    expected, _ = wait_until_settled(exchange)
    assert traffic.unexpected == []
    assert expected, "the traffic produced no trade at all"
    assert settled_trades(exchange) == expected
    for cid, order_id in traffic.placed.items():
        if order_id is None:
            continue
        rows = exchange.query(
            "SELECT count(*) FROM accounts_ledgerentry WHERE reference = %s AND kind = 'order_lock'",
            f"order:{order_id}",
        )
        assert rows == [(1,)], f"order {order_id} ({cid}) was saved without exactly one lock"
    report = exchange.manage("reconcile")
    assert "all invariants hold" in report, report


def kill(exchange: Exchange, *names: str, sig: int = signal.SIGKILL) -> None:
    for name in names:
        exchange.signal(name, sig)
