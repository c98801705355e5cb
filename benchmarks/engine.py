"""Benchmark of the matching-engine core against a minimal price-time book.

Usage:
    .venv/bin/python benchmarks/engine.py              # 1,000,000 commands
    .venv/bin/python benchmarks/engine.py --quick      # 100,000 commands
    .venv/bin/python benchmarks/engine.py --commands 250000 --repeat 5

Prints a Markdown table.  The stream is generated up front (random.Random(42))
so that generation is never timed: ~60% resting limit orders near the touch,
~30% cancels of live orders, ~10% marketable orders (IOC limits, market sells
by quantity, market buys by quote budget).
"""

import argparse
import gc
import os
import random
import resource
import statistics
import sys
import time
import tracemalloc
from bisect import insort
from collections import deque
from collections.abc import Sequence
from hashlib import sha256
from pathlib import Path
from typing import Self

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from matching.engine import (
    AddMarket,
    CancelOrder,
    Command,
    Engine,
    NewOrder,
)
from matching.engine.chain import verify_chain
from matching.engine.events import canonical

MARKET = "BTC-USD"


class MinimalBook:
    """A bare price-time book for comparison: no events, no hashing, no checks.

    Same data-structure choices as the core (dict of levels, sorted key list
    with the best price last, deques, lazy cancel), so the ratio measures what
    events, sequencing, hashing and validation cost.
    """

    def __init__(self) -> None:
        self.levels: tuple[dict[int, deque[list[int]]], dict[int, deque[list[int]]]] = ({}, {})
        self.lots: tuple[dict[int, int], dict[int, int]] = ({}, {})
        # Side 0 = bids (key = price), side 1 = asks (key = -price); best last.
        self.keys: tuple[list[int], list[int]] = ([], [])
        self.orders: dict[int, tuple[int, int, list[int]]] = {}
        self.trades = 0

    def _take(self, side: int, bound: int | None, qty: int, budget: int | None) -> tuple[int, int | None]:
        other = 1 - side
        levels, lots, keys = self.levels[other], self.lots[other], self.keys[other]
        sign = 1 if other == 0 else -1
        orders = self.orders
        while keys and (bound is None or keys[-1] >= bound):
            price = keys[-1] * sign
            if budget is not None:
                if budget < price:
                    break
                qty = budget // price
            level = levels[price]
            while qty and level:
                entry = level[0]
                if not entry[1]:
                    level.popleft()
                    continue
                fill = min(qty, entry[1])
                entry[1] -= fill
                qty -= fill
                lots[price] -= fill
                self.trades += 1
                if budget is not None:
                    budget -= fill * price
                if not entry[1]:
                    level.popleft()
                    del orders[entry[0]]
            if not lots[price]:
                del levels[price], lots[price]
                keys.pop()
            if budget is not None:
                qty = 0
            if not qty:
                break
        return qty, budget

    def apply(self, cmd: Command) -> None:
        if type(cmd) is CancelOrder:
            found = self.orders.pop(cmd.order_id, None)
            if found is not None:
                side, price, entry = found
                self.lots[side][price] -= entry[1]
                entry[1] = 0
                if not self.lots[side][price]:
                    del self.levels[side][price], self.lots[side][price]
                    keys = self.keys[side]
                    keys.remove(price if side == 0 else -price)
            return
        if type(cmd) is not NewOrder:
            return
        side = 0 if cmd.side == "buy" else 1
        if cmd.order_type == "market":
            self._take(side, None, cmd.quantity or 0, cmd.quote_quantity)
            return
        price = cmd.price
        bound = -price if side == 0 else price
        qty, _ = self._take(side, bound, cmd.quantity, None)
        if qty and cmd.time_in_force == "GTC":
            entry = [cmd.order_id, qty]
            self.orders[cmd.order_id] = (side, price, entry)
            level = self.levels[side].get(price)
            if level is None:
                level = self.levels[side][price] = deque()
                self.lots[side][price] = 0
                insort(self.keys[side], price if side == 0 else -price)
            level.append(entry)
            self.lots[side][price] += qty


def generate(count: int, seed: int = 42) -> list[Command]:
    """A deterministic command stream; a MinimalBook tracks which orders are live."""
    rng = random.Random(seed)
    book = MinimalBook()
    commands: list[Command] = [AddMarket(MARKET, 0)]
    live: list[int] = []
    owners: dict[int, int] = {}
    mid = 100_000
    oid = 0
    ts = 1_700_000_000_000
    while len(commands) < count:
        ts += rng.randint(0, 3)
        if rng.random() < 0.02:
            mid += rng.choice((-1, 1))
        roll = rng.random()
        user = rng.randint(1, 1_000)
        qty = rng.randint(1, 10)
        if roll < 0.30 and live:
            # Cancel a live order; ids the book has filled meanwhile are dropped.
            while live:
                i = rng.randrange(len(live))
                live[i], live[-1] = live[-1], live[i]
                candidate = live.pop()
                if candidate in book.orders:
                    cmd: Command = CancelOrder(MARKET, candidate, owners.pop(candidate), ts)
                    break
            else:
                continue
        elif roll < 0.90 or not live:
            oid += 1
            side = rng.choice(("buy", "sell"))
            offset = rng.randint(0, 15)
            price = mid - offset if side == "buy" else mid + 1 + offset
            cmd = NewOrder(MARKET, oid, user, side, "limit", price, qty, None, "GTC", False, "cancel_incoming", ts)
            live.append(oid)
            owners[oid] = user
        else:
            oid += 1
            kind = rng.random()
            if kind < 0.4:
                side = rng.choice(("buy", "sell"))
                price = mid + 3 if side == "buy" else mid - 3
                cmd = NewOrder(MARKET, oid, user, side, "limit", price, qty, None, "IOC", False, "cancel_incoming", ts)
            elif kind < 0.7:
                cmd = NewOrder(
                    MARKET, oid, user, "sell", "market", None, qty, None, "IOC", False, "cancel_incoming", ts
                )
            else:
                budget = qty * mid
                cmd = NewOrder(
                    MARKET, oid, user, "buy", "market", None, None, budget, "IOC", False, "cancel_incoming", ts
                )
        book.apply(cmd)
        commands.append(cmd)
    return commands


class Pass:
    """Wall and CPU seconds of one timed pass.

    CPU time is reported beside wall time because the machine is shared: when
    other processes hold the cores, wall time also counts the time this
    process spent waiting for one.
    """

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> Self:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def run_full(commands: Sequence[Command]) -> tuple[Pass, int, int]:
    """One timed pass of the core: (timing, events, orders resting at the end).

    The engine is dropped, and its garbage collected, before returning: a
    finished engine left alive would be re-scanned by the collector during
    the next pass, of either implementation, and slow it down.
    """
    engine = Engine()
    apply = engine.apply
    events = 0
    with Pass() as timing:
        for cmd in commands:
            events += len(apply(cmd))
    resting = len(engine.open_orders(MARKET))
    del engine, apply
    gc.collect()
    return timing, events, resting


def run_minimal(commands: Sequence[Command]) -> Pass:
    book = MinimalBook()
    apply = book.apply
    with Pass() as timing:
        for cmd in commands:
            apply(cmd)
    del book, apply
    gc.collect()
    return timing


def latencies(commands: Sequence[Command]) -> tuple[int, int, int, int]:
    """Per-command wall time in ns: (p50, p99, p99.9, timer overhead).

    Each apply is bracketed by perf_counter_ns; the reported percentiles have
    the median cost of an empty bracket subtracted.
    """
    clock = time.perf_counter_ns
    empty = []
    for _ in range(100_000):
        t0 = clock()
        empty.append(clock() - t0)
    overhead = int(statistics.median(empty))
    engine = Engine()
    apply = engine.apply
    samples = [0] * len(commands)
    for i, cmd in enumerate(commands):
        t0 = clock()
        apply(cmd)
        samples[i] = clock() - t0
    samples.sort()
    n = len(samples)

    def pct(p: float) -> int:
        return max(samples[min(n - 1, int(n * p))] - overhead, 0)

    return pct(0.50), pct(0.99), pct(0.999), overhead


def peak_traced_memory(commands: Sequence[Command]) -> int:
    """Peak bytes allocated while the core runs the stream (tracemalloc pass)."""
    tracemalloc.start()
    engine = Engine()
    for cmd in commands:
        engine.apply(cmd)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def chain_costs(commands: Sequence[Command]) -> dict[str, float]:
    """CPU µs of the stream's hash chain, per event: verifying it as settlement does
    (`verify_chain`), the sha256 calls alone (one a link, as the chain is), and the sha256 calls if
    each command's events were hashed as one block (one call over their canonical bytes joined):
    what a link per command instead of per event would save, in the engine and in the verifier."""
    engine = Engine()
    per_command = [engine.apply(cmd) for cmd in commands]
    del engine
    events = [event for batch in per_command for event in batch]
    with Pass() as verifying:
        verify_chain(events)
    links = [[canonical(event) for event in batch] for batch in per_command if batch]
    raw = bytes(32)
    with Pass() as per_event:
        for batch in links:
            for link in batch:
                raw = sha256(raw + link).digest()
    raw = bytes(32)
    with Pass() as per_block:
        for batch in links:
            raw = sha256(raw + b"".join(batch)).digest()
    count = len(events)
    del per_command, events, links
    gc.collect()
    return {
        "verify_us": verifying.cpu / count * 1e6,
        "hash_event_us": per_event.cpu / count * 1e6,
        "hash_block_us": per_block.cpu / count * 1e6,
    }


def restore_benchmark(resting: int) -> dict[str, float]:
    """Snapshot and restore an engine holding ``resting`` resting orders."""
    engine = Engine()
    engine.apply(AddMarket(MARKET, 0))
    rng = random.Random(7)
    for oid in range(1, resting + 1):
        side = "buy" if oid % 2 else "sell"
        offset = rng.randint(0, 999)
        price = 100_000 - 1 - offset if side == "buy" else 100_000 + offset
        engine.apply(
            NewOrder(
                MARKET,
                oid,
                rng.randint(1, 10_000),
                side,
                "limit",
                price,
                rng.randint(1, 100),
                None,
                "GTC",
                False,
                "cancel_incoming",
                oid,
            )
        )
    t0 = time.perf_counter()
    data = engine.snapshot()
    t1 = time.perf_counter()
    restored = Engine.restore(data)
    t2 = time.perf_counter()
    same = restored.state_digest() == engine.state_digest()
    if not same:
        raise SystemExit("restored engine differs from the original")
    return {"snapshot_s": t1 - t0, "restore_s": t2 - t1, "bytes": len(data)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 commands and 100,000 resting orders")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes per implementation (median)")
    parser.add_argument("--resting", type=int, default=1_000_000, help="resting orders for snapshot/restore")
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc pass")
    args = parser.parse_args(argv)
    count = 100_000 if args.quick else args.commands
    resting = 100_000 if args.quick else args.resting

    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    commands = generate(count)
    gen_s = time.perf_counter() - t0
    # The pre-built stream is harness data that a live engine never holds;
    # freezing it keeps the collector from re-scanning a million command
    # objects.  Collection stays enabled for everything the engine allocates.
    gc.collect()
    gc.freeze()
    mix = {"new limit GTC": 0, "new IOC limit": 0, "market": 0, "cancel": 0, "other": 0}
    for cmd in commands:
        if type(cmd) is CancelOrder:
            mix["cancel"] += 1
        elif type(cmd) is NewOrder:
            if cmd.order_type == "market":
                mix["market"] += 1
            elif cmd.time_in_force == "IOC":
                mix["new IOC limit"] += 1
            else:
                mix["new limit GTC"] += 1
        else:
            mix["other"] += 1

    full: list[Pass] = []
    minimal: list[Pass] = []
    events = resting_after = 0
    # Interleaved so that both implementations see the same background load.
    for _ in range(args.repeat):
        timing, events, resting_after = run_full(commands)
        full.append(timing)
        minimal.append(run_minimal(commands))
    p50, p99, p999, overhead = latencies(commands)
    peak = 0 if args.no_memory else peak_traced_memory(commands)
    chain = chain_costs(commands)
    maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    restore = restore_benchmark(resting)
    load_after = os.getloadavg()[0]

    def rate(passes: list[Pass], attr: str) -> float:
        return count / statistics.median(getattr(p, attr) for p in passes)

    full_wall, full_cpu = rate(full, "wall"), rate(full, "cpu")
    min_wall, min_cpu = rate(minimal, "wall"), rate(minimal, "cpu")
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load_before:.2f} before / "
        f"{load_after:.2f} after, stream of {count:,} commands generated in {gen_s:.1f} s"
    )
    print("mix: " + ", ".join(f"{k} {v / count:.1%}" for k, v in mix.items()))
    print(f"{events:,} events ({events / count:.2f} per command), {resting_after:,} orders resting at the end")
    print()
    print("| measure | value |")
    print("| --- | --- |")
    print(f"| full core, commands/s by wall time (median of {args.repeat}) | {full_wall:,.0f} |")
    print(f"| full core, commands/s by CPU time (median of {args.repeat}) | {full_cpu:,.0f} |")
    print(f"| full core, passes wall/CPU (s) | {', '.join(f'{p.wall:.2f}/{p.cpu:.2f}' for p in full)} |")
    print(f"| minimal book, commands/s by wall time | {min_wall:,.0f} |")
    print(f"| minimal book, commands/s by CPU time | {min_cpu:,.0f} |")
    print(f"| minimal book, passes wall/CPU (s) | {', '.join(f'{p.wall:.2f}/{p.cpu:.2f}' for p in minimal)} |")
    print(f"| full / minimal throughput (CPU time) | {full_cpu / min_cpu:.2f} |")
    print(f"| events/s (CPU time) | {events * full_cpu / count:,.0f} |")
    print(
        f"| latency p50 / p99 / p99.9 per command (ns, timer overhead {overhead} ns removed) "
        f"| {p50:,} / {p99:,} / {p999:,} |"
    )
    print(f"| verifying the chain (`verify_chain`, as settlement does), CPU µs an event | {chain['verify_us']:.2f} |")
    print(
        f"| of which the sha256 calls: one a link (each event) / one a command's events joined, CPU µs an event "
        f"| {chain['hash_event_us']:.2f} / {chain['hash_block_us']:.2f} |"
    )
    if peak:
        print(f"| peak traced memory of the core over the stream | {peak / 2**20:,.1f} MiB |")
    print(f"| process max RSS (stream, engines, restore test) | {maxrss_kib / 1024:,.0f} MiB |")
    print(f"| snapshot of {resting:,} resting orders: size | {restore['bytes'] / 2**20:,.1f} MiB |")
    print(f"| snapshot time | {restore['snapshot_s']:.2f} s |")
    print(f"| restore time | {restore['restore_s']:.2f} s |")


if __name__ == "__main__":
    main()
