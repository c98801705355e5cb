"""The matching worker killed with SIGKILL at random points of a long random command stream.

The worker runs as a real process between a real Kafka broker and PostgreSQL (where it keeps its
snapshots). After every kill it is restarted; at the end its event stream, deduplicated by sequence
number, its final hashes and its final books must be exactly those of one uninterrupted engine fed
the same commands.
"""

import random
import signal
import time
from collections.abc import Iterator

import pytest
from kafka import KafkaProducer

from matching import schemas
from matching.engine import AddMarket, CancelAll, CancelOrder, Command, Engine, HaltMarket, NewOrder, ResumeMarket
from tests.e2e.harness import Exchange, eventually

pytestmark = pytest.mark.e2e

MARKETS = ("REC_A", "REC_B", "REC_C", "REC_D")
COMMANDS = 40_000


def random_stream(seed: int, count: int) -> list[Command]:
    rng = random.Random(seed)
    stream: list[Command] = [AddMarket(market=m, ts=0) for m in MARKETS]
    live: dict[str, list[tuple[int, int]]] = {m: [] for m in MARKETS}
    halted: set[str] = set()
    next_id = 1_000_000
    for ts in range(1, count + 1):
        market = rng.choice(MARKETS)
        user = rng.randint(1, 12)
        roll = rng.random()
        if roll < 0.28 and live[market]:
            order_id, owner = live[market].pop(rng.randrange(len(live[market])))
            stream.append(CancelOrder(market=market, order_id=order_id, user_id=owner, ts=ts))
        elif roll < 0.29:
            stream.append(CancelAll(market=market, user_id=user, ts=ts))
        elif roll < 0.295:
            stream.append((ResumeMarket if market in halted else HaltMarket)(market=market, ts=ts))
            halted ^= {market}
        else:
            next_id += 1
            side = rng.choice(("buy", "sell"))
            if roll > 0.93:
                budget = rng.randint(1_000, 50_000) if side == "buy" else None
                stream.append(
                    NewOrder(
                        market=market,
                        order_id=next_id,
                        user_id=user,
                        side=side,
                        order_type="market",
                        price=None,
                        quantity=None if budget else rng.randint(1, 30),
                        quote_quantity=budget,
                        time_in_force="IOC",
                        post_only=False,
                        stp=rng.choice(("cancel_incoming", "cancel_resting")),
                        ts=ts,
                    )
                )
            else:
                stream.append(
                    NewOrder(
                        market=market,
                        order_id=next_id,
                        user_id=user,
                        side=side,
                        order_type="limit",
                        price=rng.randint(990, 1010),
                        quantity=rng.randint(1, 40),
                        quote_quantity=None,
                        time_in_force=rng.choice(("GTC", "GTC", "GTC", "IOC", "FOK")),
                        post_only=rng.random() < 0.05,
                        stp="cancel_incoming",
                        ts=ts,
                    )
                )
                live[market].append((next_id, user))
    return stream


def reference_run(stream: list[Command]) -> tuple[Engine, dict[tuple[str, int], bytes]]:
    """One uninterrupted engine fed `stream`, and its chained events' wire bytes by (market, seq)."""
    reference = Engine()
    expected = {}
    for command in stream:
        for event in reference.apply(command):
            if event.seq:
                expected[(event.market, event.seq)] = schemas.encode_event(event)
    return reference, expected


def send_commands(exchange: Exchange, stream: list[Command]) -> None:
    """Put `stream` on the exchange's orders topic, as the API's outbox would."""
    servers = exchange.env.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    producer = KafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=5)
    topic = exchange.topic("orders")
    for command in stream:
        producer.send(topic, key=command.market.encode(), value=schemas.encode_command(command))
    producer.flush(timeout=60)
    producer.close()


@pytest.fixture(scope="module")
def engine_only(tmp_path_factory) -> Iterator[Exchange]:
    with Exchange.engine_only(
        tmp_path_factory.mktemp("recovery"), ENGINE_SNAPSHOT_SECONDS="0.5", ENGINE_SNAPSHOT_COMMANDS="3000"
    ) as exchange:
        yield exchange


def test_a_worker_killed_at_random_points_ends_exactly_where_an_uninterrupted_one_does(engine_only: Exchange):
    exchange = engine_only
    stream = random_stream(seed=7, count=COMMANDS)
    reference, expected = reference_run(stream)
    send_commands(exchange, stream)

    def consumed() -> int:
        rows = exchange.query("SELECT commands FROM matching_enginesnapshot ORDER BY id DESC LIMIT 1")
        return rows[0][0] if rows else 0

    rng = random.Random(11)
    exchange.start("engine")
    kills = 0
    for _ in range(5):
        time.sleep(rng.uniform(0.5, 2.0))
        if consumed() >= len(stream):
            break
        exchange.signal("engine", signal.SIGKILL)
        kills += 1
        exchange.start("engine")
    eventually(lambda: consumed() >= len(stream), timeout=180, what="the worker to consume the whole stream")
    exchange.signal("engine", signal.SIGTERM)
    assert kills >= 3, "the stream ended before the worker could be killed a few times"

    received = [value for _, _, value in exchange.read_topic("engine-events")]
    seen: dict[tuple[str, int], bytes] = {}
    for value in received:
        event = schemas.decode_event(value)
        if event.market not in MARKETS:
            continue  # the demo markets the set-up created
        key = (event.market, event.seq)
        # An event emitted again after a restart is the same event, byte for byte.
        assert seen.setdefault(key, value) == value, f"{key} was emitted twice with different content"
    assert seen == expected
    assert len(received) > len(expected), "no event was ever emitted twice: the kills hit nothing"

    final_hashes = {m: reference.market_state(m)[2] for m in MARKETS}
    last = {m: max(seq for market, seq in seen if market == m) for m in MARKETS}
    assert {m: schemas.decode_event(seen[(m, last[m])]).hash for m in MARKETS} == final_hashes

    [(data,)] = exchange.query("SELECT data FROM matching_enginesnapshot ORDER BY id DESC LIMIT 1")
    final = Engine.restore(bytes(data))
    for market in MARKETS:
        assert final.market_state(market) == reference.market_state(market)
        assert final.open_orders(market) == reference.open_orders(market)
        assert final.depth(market, 10_000) == reference.depth(market, 10_000)
