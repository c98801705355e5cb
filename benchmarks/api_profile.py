"""Where the API spends its CPU: a balance read, one order, a batch of 100, profiled in one process.

    make bench-api
    .venv/bin/python benchmarks/api_profile.py --requests 300

Runs the requests through Django's test client (the whole middleware and DRF stack, no HTTP server)
against the development database, as one funded trader, and reports for each kind of request the
CPU time it took in this process (`time.process_time`, so waiting on PostgreSQL or Redis is not
counted) and its wall time, then where the CPU went by package (cProfile's own CPU time per
function, summed per top-level package). The CPU of PostgreSQL, Redis and the other processes is
`make bench-e2e`'s to measure. Refused with EXCHANGE_ENV=production: it credits its trader with a
custody report.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")
for name, value in (("THROTTLE_USER", "100000000/minute"), ("THROTTLE_ORDERS", "100000000/minute")):
    os.environ.setdefault(name, value)
os.environ.setdefault("MAX_OPEN_ORDERS_PER_USER", "100000000")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from funding import trader_funded  # noqa: E402 - benchmarks/funding.py, beside this script
from rest_framework.test import APIClient  # noqa: E402

from accounts.services import login_start  # noqa: E402


def trader() -> APIClient:
    user = trader_funded(
        username=f"profile_{uuid.uuid4().hex[:8]}",
        amounts={"USDT": "100000000", "BTC": "10000"},
        tx_prefix=f"profile-{uuid.uuid4().hex}",
    )
    client = APIClient(SERVER_NAME=settings.ALLOWED_HOSTS[0] if settings.ALLOWED_HOSTS else "localhost")
    _, access = login_start(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


def order(side: str = "buy") -> dict:
    price = "40000" if side == "buy" else "60000"  # far from the touch: they rest
    return {
        "cid": f"profile_{uuid.uuid4().hex[:24]}",
        "symbol": "BTC_USDT",
        "side": side,
        "order_type": "limit",
        "price": price,
        "quantity": "0.001",
    }


def package(filename: str, function: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    if str(ROOT) in filename:
        return "exchange's own code: " + filename.split(str(ROOT) + "/", 1)[1].split("/", 1)[0]
    if filename == "~":
        return "built-ins (sockets, str, dict...)"
    return "standard library"


def measure(label: str, send: Callable[[], object], count: int, per: int) -> None:
    send()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(count):
        send()
    cpu, wall = (time.process_time() - cpu) / count, (time.perf_counter() - wall) / count
    profile = cProfile.Profile(time.process_time)  # CPU, like the figure above, not waiting
    profile.enable()
    for _ in range(count):
        send()
    profile.disable()
    spent: Counter[str] = Counter()
    for (filename, _, function), (_, _, own, _, _) in pstats.Stats(profile).stats.items():
        spent[package(filename, function)] += own
    total = sum(spent.values())
    print(f"\n{label}: {cpu * 1000:.2f} ms of CPU a request ({cpu * 1000 / per:.3f} ms an order)", end="")
    print(f", wall {wall * 1000:.2f} ms")
    for name, seconds in spent.most_common(8):
        print(f"  {seconds / total:6.1%}  {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    if settings.EXCHANGE_ENV == "production":
        raise SystemExit("api_profile credits a trader through a custody report: refused in production")
    client = trader()

    def balances() -> None:
        assert client.get("/api/balances/").status_code == 200

    def one() -> None:
        answer = client.post("/api/orders/", order(), format="json")
        assert answer.status_code == 201, answer.content

    def batch() -> None:
        answer = client.post("/api/orders/batch/", {"orders": [order("sell") for _ in range(100)]}, format="json")
        assert answer.status_code == 200 and answer.json()["results"][0]["status"] == 201, answer.content[:300]

    measure("GET /api/balances/", balances, args.requests, 1)
    measure("POST /api/orders/", one, args.requests, 1)
    measure("POST /api/orders/batch/ (100 orders)", batch, max(args.requests // 20, 5), 100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
