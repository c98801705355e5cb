"""Load test of a running exchange through its public API, end to end.

    make up
    .venv/bin/python benchmarks/load.py --traders 8 --threads 8 --seconds 30

Registers traders, funds them with deposits, then places random limit orders near the touch (and
some cancels) from several threads for a fixed time. Reports what the API sustained (orders/s,
latency percentiles, status codes) and how long the pipeline took to settle everything that was
accepted (matching worker, settlement consumer, Celery), read back through the API.
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import requests

# The traders this script registers log in once, within the run; their password is made per run.
PASSWORD = secrets.token_urlsafe(16)


@dataclass
class Trader:
    base: str
    username: str
    session: requests.Session = field(default_factory=requests.Session)
    order_ids: list[int] = field(default_factory=list)

    def call(self, method: str, path: str, **kwargs: object) -> requests.Response:
        return self.session.request(method, f"{self.base}/api/{path}", timeout=30, **kwargs)

    def login(self) -> None:
        self.session.post(
            f"{self.base}/api/auth/register/",
            json={"username": self.username, "password": PASSWORD, "email": f"{self.username}@example.com"},
            timeout=30,
        ).raise_for_status()
        tokens = self.session.post(
            f"{self.base}/api/auth/token/", json={"username": self.username, "password": PASSWORD}, timeout=30
        )
        tokens.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {tokens.json()['access']}"


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, seconds: float, status: int) -> None:
        with self.lock:
            self.latencies.append(seconds)
            self.statuses[status] += 1


def percentile(values: list[float], q: float) -> float:
    """The value below which the fraction `q` of `values` lies (nearest rank); NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def worker(traders: list[Trader], seconds: float, results: Results, seed: int) -> None:
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        trader = rng.choice(traders)
        if trader.order_ids and rng.random() < 0.2:
            order_id = trader.order_ids.pop(rng.randrange(len(trader.order_ids)))
            started = time.perf_counter()
            answer = trader.call("DELETE", f"orders/{order_id}/")
        else:
            body = {
                "cid": f"load_{uuid.uuid4().hex[:24]}",
                "symbol": "BTC_USDT",
                "side": rng.choice(["Buy", "Sell"]),
                "order_type": "Limit",
                "price": str(50_000 + rng.randint(-20, 20)),
                "quantity": str(rng.randint(1, 50) / 10_000),
            }
            started = time.perf_counter()
            answer = trader.call("POST", "orders/", json=body)
            if answer.status_code == 201:
                trader.order_ids.append(answer.json()["id"])
        results.record(time.perf_counter() - started, answer.status_code)


def pending(trader: Trader) -> int:
    return len(trader.call("GET", "orders/?status=pending&limit=1000").json())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="http://127.0.0.1:8000")
    parser.add_argument("--traders", type=int, default=8)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()

    run = uuid.uuid4().hex[:6]
    traders = [Trader(args.base, f"load_{run}_{i}") for i in range(args.traders)]
    for trader in traders:
        trader.login()
        for asset, amount in (("BTC", "100"), ("USDT", "5000000")):
            # Declared here; the custody simulator that `make up` starts confirms them.
            trader.call("POST", "deposits/", json={"asset": asset, "amount": amount}).raise_for_status()
    while any(b["available"] == "0" for t in traders for b in t.call("GET", "balances/").json() if b["asset"] != "ETH"):
        time.sleep(0.2)

    results = Results()
    threads = [
        threading.Thread(target=worker, args=(traders, args.seconds, results, seed)) for seed in range(args.threads)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sent_for = time.monotonic() - started
    while sum(pending(t) for t in traders):
        time.sleep(0.2)
    settled_after = time.monotonic() - started

    count = len(results.latencies)
    print(f"| requests | {count} in {sent_for:.1f} s, {args.threads} threads, {args.traders} traders |")
    print(f"| throughput | {count / sent_for:,.0f} requests/s |")
    print(
        f"| latency | p50 {statistics.median(results.latencies) * 1000:.1f} ms, "
        f"p99 {percentile(results.latencies, 0.99) * 1000:.1f} ms, max {max(results.latencies) * 1000:.1f} ms |"
    )
    print(f"| statuses | {dict(sorted(results.statuses.items()))} |")
    print(f"| last order settled | {settled_after - sent_for:.1f} s after the last request |")
    return 0 if set(results.statuses) <= {200, 201, 202, 400, 409} else 1


if __name__ == "__main__":
    sys.exit(main())
