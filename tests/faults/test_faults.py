"""Nothing lost, nothing doubled: real processes and services killed or restarted under traffic.

Every scenario sends random orders and cancels from several traders through the real API, injects
its fault, lets the exchange recover, then requires `manage.py reconcile` to pass and the trades in
PostgreSQL to be exactly the trades one uninterrupted engine produces from the same input.
"""

import random
import signal
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
from kafka import KafkaProducer

from tests.concurrency import at_once
from tests.e2e.harness import Exchange, eventually
from tests.faults.harness import (
    PrivateServices,
    Traffic,
    assert_nothing_lost_or_doubled,
    kill,
    wait_until_settled,
)

pytestmark = [pytest.mark.faults, pytest.mark.e2e]


@pytest.fixture(scope="module")
def services(tmp_path_factory) -> Iterator[PrivateServices]:
    private = PrivateServices(tmp_path_factory.mktemp("services"))
    private.start_all()
    yield private
    private.stop_all()


@pytest.fixture(scope="module")
def faulty(services, tmp_path_factory) -> Iterator[Exchange]:
    with Exchange.running(
        tmp_path_factory.mktemp("faulty"),
        database_server=services.config.database_url,
        **services.env,
        # An order taken while the broker is away waits for the relay instead of holding the request.
        KAFKA_MAX_BLOCK_MS="1000",
        KAFKA_PUBLISH_TIMEOUT="1",
        OUTBOX_RETRY_SECONDS="3",
        ENGINE_SNAPSHOT_SECONDS="1",
    ) as exchange:
        yield exchange


@pytest.fixture
def exchange(faulty: Exchange) -> Exchange:
    """The faulty exchange with every process running, whatever the previous scenario left."""
    missing = [name for name in ("engine", "settlement", "relay", "celery", "beat", "api") if name not in faulty.procs]
    if missing:
        faulty.start(*missing)
    return faulty


def test_the_matching_worker_killed_mid_stream_loses_and_doubles_nothing(exchange: Exchange) -> None:
    traffic = Traffic(exchange, seed=1)
    traffic.fund()
    snapshots_before = exchange.query("SELECT count(*) FROM matching_enginesnapshot")[0][0]
    traffic.run(
        140,
        faults={
            25: lambda: kill(exchange, "engine"),
            40: lambda: exchange.start("engine"),
            85: lambda: kill(exchange, "engine"),
            90: lambda: exchange.start("engine"),
        },
    )
    assert_nothing_lost_or_doubled(exchange, traffic)
    assert exchange.query("SELECT count(*) FROM matching_enginesnapshot")[0][0] >= min(snapshots_before, 1)
    assert "engine_restored" in (exchange.workdir / "engine.log").read_text()


def test_the_settlement_consumer_and_celery_killed_mid_batch_lose_and_double_nothing(exchange: Exchange) -> None:
    traffic = Traffic(exchange, seed=2)
    traffic.fund()
    traffic.run(
        140,
        faults={
            20: lambda: kill(exchange, "settlement", "celery"),
            40: lambda: exchange.start("settlement", "celery"),
            70: lambda: kill(exchange, "celery"),
            72: lambda: kill(exchange, "settlement"),
            95: lambda: exchange.start("celery", "settlement"),
        },
    )
    assert_nothing_lost_or_doubled(exchange, traffic)


def test_a_kafka_broker_restart_while_orders_flow_loses_and_doubles_nothing(
    exchange: Exchange, services: PrivateServices
) -> None:
    traffic = Traffic(exchange, seed=3)
    traffic.fund()
    traffic.run(
        120,
        faults={
            30: lambda: services.stop("kafka"),
            45: lambda: services.start("kafka"),
        },
    )
    assert_nothing_lost_or_doubled(exchange, traffic)


def test_a_redis_restart_with_settlements_queued_loses_and_doubles_nothing(
    exchange: Exchange, services: PrivateServices
) -> None:
    traffic = Traffic(exchange, seed=4)
    traffic.fund()
    exchange.signal("celery")
    traffic.run(60)
    # Settlement tasks are waiting in Redis, which keeps nothing across a restart.
    queued = eventually(
        lambda: exchange.query("SELECT count(*) FROM settlement_settlementcursor WHERE seq < received_seq")[0][0],
        what="settlements to queue up",
    )
    assert queued > 0
    services.stop("redis", signal.SIGKILL)
    services.start("redis")
    exchange.start("celery")
    traffic.run(60)
    assert_nothing_lost_or_doubled(exchange, traffic)


def _set_consumer_offsets(exchange: Exchange, topic: str, offsets: dict[int, int]) -> None:
    for partition, offset in offsets.items():
        exchange.query(
            """
            INSERT INTO settlement_consumeroffset (topic, partition, "offset", updated_at)
            VALUES (%s, %s, %s, now())
            ON CONFLICT (topic, partition) DO UPDATE SET "offset" = EXCLUDED."offset"
            RETURNING id
            """,
            topic,
            partition,
            offset,
        )


def _traffic_while_settlement_is_down(exchange: Exchange, *, seed: int, count: int) -> tuple[Traffic, dict[int, int]]:
    """Random traffic with the settlement consumer stopped, until the engine has answered all of it;
    the traffic and the events topic's ends then."""
    traffic = Traffic(exchange, seed=seed)
    traffic.fund()
    exchange.signal("settlement")
    traffic.run(count)

    def stable() -> dict[int, int] | None:
        before = exchange.topic_ends("engine-events")
        time.sleep(2)
        after = exchange.topic_ends("engine-events")
        return after if after == before else None

    return traffic, eventually(stable, timeout=60, what="the engine to go quiet")


def test_engine_events_the_broker_lost_after_acknowledging_them_are_emitted_again(exchange: Exchange) -> None:
    """What a single broker killed before its writes reach the disk does to engine events: they are
    gone, and the matching worker has already snapshotted past them, so no restart brings them back."""
    traffic, ends = _traffic_while_settlement_is_down(exchange, seed=9, count=40)
    # Settlement resumes after everything the engine emitted meanwhile, as if the broker never had it.
    _set_consumer_offsets(exchange, exchange.topic("engine-events"), ends)
    exchange.start("settlement")
    traffic.run(40)
    assert_nothing_lost_or_doubled(exchange, traffic)
    assert "engine_event_lost" in (exchange.workdir / "engine.log").read_text()


def test_every_engine_event_delivered_twice_and_out_of_order_settles_once(exchange: Exchange) -> None:
    topic = exchange.topic("engine-events")
    traffic, ends = _traffic_while_settlement_is_down(exchange, seed=5, count=100)
    originals = exchange.read_topic("engine-events", ends)
    assert originals

    # The copies first, shuffled, in batches of seven: every market sees its events out of order.
    copies = list(originals)
    random.Random(5).shuffle(copies)
    producer = KafkaProducer(bootstrap_servers=exchange.env["KAFKA_BOOTSTRAP_SERVERS"], acks="all")
    for partition, key, value in copies:
        producer.send(topic, key=key, value=value, partition=partition)
    producer.flush(timeout=30)
    producer.close()
    _set_consumer_offsets(exchange, topic, ends)
    exchange.start("settlement", env={"KAFKA_MAX_POLL_RECORDS": "7"})
    wait_until_settled(exchange)

    # Then everything once more from the start: originals and copies again.
    exchange.signal("settlement")
    final_ends = exchange.topic_ends("engine-events")
    _set_consumer_offsets(exchange, topic, dict.fromkeys(ends, 0))
    exchange.start("settlement", env={"KAFKA_MAX_POLL_RECORDS": "7"})
    eventually(
        lambda: all(
            exchange.query(
                'SELECT "offset" FROM settlement_consumeroffset WHERE topic = %s AND partition = %s', topic, partition
            )
            == [(end,)]
            for partition, end in final_ends.items()
            if end
        ),
        timeout=120,
        what="the consumer to read the whole topic again",
    )
    assert_nothing_lost_or_doubled(exchange, traffic)
    assert exchange.query("SELECT count(*) FROM settlement_alert WHERE kind = 'divergent_event'") == [(0,)]


def test_a_postgres_restart_while_orders_come_in_answers_503_and_half_writes_nothing(
    exchange: Exchange, services: PrivateServices
) -> None:
    traffic = Traffic(exchange, seed=6)
    traffic.fund()
    running = traffic.run_in_background(220)
    time.sleep(3)
    services.stop("postgres")
    time.sleep(4)
    services.start("postgres")
    running.join(timeout=300)
    assert not running.is_alive()

    assert traffic.statuses[503] > 0, f"the outage was never seen: {dict(traffic.statuses)}"
    assert traffic.unexpected == []
    refused = [cid for cid, order_id in traffic.placed.items() if order_id is None]
    assert refused
    assert exchange.query("SELECT count(*) FROM matching_order WHERE cid = ANY(%s)", refused) == [(0,)]
    assert_nothing_lost_or_doubled(exchange, traffic)


def test_fifty_concurrent_orders_each_needing_the_whole_balance_accept_exactly_one(exchange: Exchange) -> None:
    trader = exchange.register("allin")
    trader.deposit("USDT", "500")
    # Far below where the other tests' traders sell, so the one order that is accepted rests unfilled.
    body = {"symbol": "BTC_USDT", "side": "Buy", "order_type": "Limit", "price": "100", "quantity": "5"}
    answers = at_once(
        [
            lambda: trader.call("POST", "orders/", json={**body, "cid": f"allin_{uuid.uuid4().hex[:20]}"})
            for _ in range(50)
        ]
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] + [400] * 49, {a.text[:200] for a in answers}
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 400} == {"insufficient_funds"}
    assert trader.balances()["USDT"] == (Decimal("0"), Decimal("500"))
    assert exchange.query("SELECT count(*) FROM matching_order WHERE user_id = %s", trader.id) == [(1,)]
    assert "all invariants hold" in exchange.manage("reconcile")


def test_a_withdrawal_and_an_order_racing_for_the_same_funds_never_both_succeed(exchange: Exchange) -> None:
    for round_ in range(8):
        trader = exchange.register("racer")
        trader.deposit("USDT", "500")
        order = {
            "cid": f"race_{uuid.uuid4().hex[:20]}",
            "symbol": "BTC_USDT",
            "side": "Buy",
            "order_type": "Limit",
            "price": "100",
            "quantity": "5",
        }
        withdraw, place = at_once(
            [
                lambda t=trader: t.call(
                    # 499 and the 1 USDT fee: the whole balance, like the order.
                    "POST",
                    "withdrawals/",
                    json={"asset": "USDT", "amount": "499", "address": "0x" + "ab" * 20},
                ),
                lambda t=trader, o=order: t.call("POST", "orders/", json=o),
            ]
        )
        assert sorted([withdraw.status_code, place.status_code]) == [201, 400], f"round {round_}"
        loser = withdraw if withdraw.status_code == 400 else place
        assert loser.json()["error"]["code"] == "insufficient_funds", loser.text
        assert trader.balances()["USDT"] == (Decimal("0"), Decimal("500"))
    assert "all invariants hold" in exchange.manage("reconcile")
