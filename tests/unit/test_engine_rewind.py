"""Rewinding the matching worker: which snapshot is chosen, what is refused, and that a worker's own
snapshot writes never undo a rewind."""

import time
from collections.abc import Callable

import pytest
from django.core.exceptions import ImproperlyConfigured

from accounts.models import AuditLog
from core.errors import Conflict, InvalidRequest, NotFound
from core.kafka import client, topics
from matching import progress
from matching.engine import AddMarket, Engine, NewOrder
from matching.management.commands.run_matching_engine import Worker
from matching.models import EngineSnapshot
from matching.services import SNAPSHOTS_KEPT, engine_rewind, engine_snapshot_rewound, engine_snapshot_save
from settlement import selectors as settlement_selectors
from settlement.models import ConsumerOffset, EngineEvent, SettlementCursor

pytestmark = [pytest.mark.django_db, pytest.mark.services]

WORKER = "orders:0,1"


def order(order_id: int, market: str = "BTC_USDT") -> NewOrder:
    return NewOrder(
        market=market,
        order_id=order_id,
        user_id=order_id % 3 + 1,
        side="buy" if order_id % 2 else "sell",
        order_type="limit",
        price=1000 + order_id % 7,
        quantity=5,
        quote_quantity=None,
        time_in_force="GTC",
        post_only=False,
        stp="cancel_incoming",
        ts=order_id,
    )


@pytest.fixture
def snapshots(btc_usdt) -> list[tuple[EngineSnapshot, int]]:
    """Three snapshots of one worker, 10 commands apart: (snapshot, BTC_USDT's sequence in it)."""
    engine = Engine()
    engine.apply(AddMarket(market="BTC_USDT", ts=0))
    taken, since, offset = [], 0, 1
    for batch in range(3):
        for i in range(10):
            engine.apply(order(batch * 10 + i + 1))
            offset += 1
        saved = engine_snapshot_save(
            worker=WORKER,
            offsets={0: offset, 1: 0},
            commands=offset,
            sequences=engine.sequences(),
            data=engine.snapshot(),
            since=since,
            settled={},
        )
        since = saved.pk
        taken.append((saved, engine.market_state("BTC_USDT")[1]))
    return taken


def test_the_newest_snapshot_before_the_sequence_is_stored_again_as_the_newest(snapshots):
    _, (second, second_seq), (third, third_seq) = snapshots
    rewound, at = engine_rewind(market="BTC_USDT", seq=third_seq, earliest_offsets={0: 0, 1: 0})

    assert at == second_seq < third_seq
    assert rewound.pk > third.pk
    assert (bytes(rewound.data), rewound.offsets, rewound.commands) == (
        bytes(second.data),
        second.offsets,
        second.commands,
    )
    assert engine_snapshot_rewound(worker=WORKER, since=third.pk)
    audit = AuditLog.objects.get(action="engine_rewind")
    assert audit.target == "market:BTC_USDT"
    assert audit.details["source_snapshot"] == second.pk


def test_a_sequence_before_every_snapshot_replays_the_whole_input_from_an_empty_book(snapshots):
    first_seq = snapshots[0][1]
    rewound, at = engine_rewind(market="BTC_USDT", seq=first_seq, earliest_offsets={})

    assert at == 0
    assert rewound.offsets == {"0": 0, "1": 0}
    assert rewound.commands == 0
    assert Engine.restore(bytes(rewound.data)).markets == ()


def test_refused_when_the_orders_topic_no_longer_holds_the_input(snapshots):
    count = EngineSnapshot.objects.count()
    second_offset = snapshots[1][0].offsets["0"]
    with pytest.raises(Conflict, match="no longer holds"):
        engine_rewind(market="BTC_USDT", seq=snapshots[2][1], earliest_offsets={0: second_offset + 1, 1: 0})
    assert EngineSnapshot.objects.count() == count
    assert not AuditLog.objects.filter(action="engine_rewind").exists()


@pytest.mark.parametrize(
    ("market", "seq", "error"),
    [("NOPE_USDT", 5, NotFound), ("BTC_USDT", 0, InvalidRequest)],
)
def test_bad_requests_change_nothing(snapshots, market, seq, error):
    count = EngineSnapshot.objects.count()
    with pytest.raises(error):
        engine_rewind(market=market, seq=seq, earliest_offsets={})
    assert EngineSnapshot.objects.count() == count


def test_a_worker_does_not_overwrite_a_rewind_with_its_own_snapshot(snapshots):
    third = snapshots[2][0]
    engine_rewind(market="BTC_USDT", seq=snapshots[2][1], earliest_offsets={})
    count = EngineSnapshot.objects.count()

    assert (
        engine_snapshot_save(
            worker=WORKER, offsets={0: 99}, commands=99, sequences={}, data=b"x", since=third.pk, settled={}
        )
        is None
    )
    assert EngineSnapshot.objects.count() == count


def save(since: int, commands: int, sequences: dict[str, int], settled: dict[str, int]) -> int:
    return engine_snapshot_save(
        worker=WORKER,
        offsets={0: commands},
        commands=commands,
        sequences=sequences,
        data=Engine().snapshot(),
        since=since,
        settled=settled,
    ).pk


def kept() -> list[int]:
    return list(EngineSnapshot.objects.filter(worker=WORKER).order_by("-id").values_list("commands", flat=True))


def test_the_newest_snapshots_and_the_oldest_are_kept_while_nothing_is_settled(snapshots):
    since = snapshots[-1][0].pk
    for i in range(SNAPSHOTS_KEPT + 2):
        since = save(since, 100 + i, {"BTC_USDT": 100 + i}, settled={})
    newest = [100 + i for i in reversed(range(SNAPSHOTS_KEPT + 2))][:SNAPSHOTS_KEPT]
    assert kept() == [*newest, snapshots[0][0].commands]


def test_the_newest_wholly_settled_snapshot_is_kept_however_far_settlement_lags(snapshots):
    since = snapshots[-1][0].pk
    for i in range(10):
        since = save(since, 100 + i, {"BTC_USDT": 100 + i, "ETH_USDT": 50}, settled={"BTC_USDT": 103, "ETH_USDT": 50})
    assert kept() == [109, 108, 107, 103]
    since = save(since, 110, {"BTC_USDT": 110, "ETH_USDT": 50}, settled={"BTC_USDT": 109, "ETH_USDT": 50})
    assert kept() == [110, 109, 108]


def test_a_rewind_uses_the_sequences_stored_with_the_snapshots(snapshots):
    since = snapshots[-1][0].pk
    for i in range(10):
        since = save(since, 100 + i, {"BTC_USDT": 100 + i}, settled={"BTC_USDT": 102})
    rewound, at = engine_rewind(market="BTC_USDT", seq=103, earliest_offsets={})
    assert (at, rewound.commands, rewound.sequences) == (102, 102, {"BTC_USDT": 102})


# --- the worker finding events the broker lost ----------------------------------------------------


@pytest.fixture
def worker(btc_usdt):
    client.ensure_topics()
    worker = Worker(partitions=[], snapshot_seconds=60, snapshot_commands=1000, gap_rewind_seconds=0.05)
    worker.engine.apply(AddMarket(market="BTC_USDT", ts=0))
    for order_id in range(1, 5):
        worker.engine.apply(order(order_id))
    worker.consumer = client.consumer()
    SettlementCursor.objects.create(market="BTC_USDT", seq=2)
    yield worker
    worker.consumer.close()


def consumer_at(ends: Callable[[int], int]) -> None:
    """Store the settlement consumer's position on the events topic: `ends(end)` per partition."""
    topic = topics.name(topics.ENGINE_EVENTS)
    c = client.consumer()
    try:
        current = c.end_offsets(client.partitions_of(topics.ENGINE_EVENTS))
    finally:
        c.close()
    for tp, end in current.items():
        ConsumerOffset.objects.update_or_create(topic=topic, partition=tp.partition, defaults={"offset": ends(end)})


def looked_twice(worker: Worker) -> tuple[str, int] | None:
    assert worker.lost_event() is None  # the first look only starts the wait
    time.sleep(0.1)
    return worker.lost_event()


def test_an_event_settlement_never_received_is_found_once(worker):
    consumer_at(lambda end: end)
    assert looked_twice(worker) == ("BTC_USDT", 3)
    assert worker.lost_event() is None  # not asked for again at once


def test_an_event_in_the_inbox_is_not_lost(worker):
    consumer_at(lambda end: end)
    EngineEvent.objects.create(market="BTC_USDT", seq=3, type="accepted", payload={}, hash="0" * 64)
    assert looked_twice(worker) is None


def test_nothing_is_lost_while_the_consumer_has_not_read_what_the_topic_held(worker):
    client.send(topics.ENGINE_EVENTS, "BTC_USDT", b"{}", timeout=10)
    consumer_at(lambda end: max(end - 1, 0))
    assert looked_twice(worker) is None
    consumer_at(lambda end: end)
    time.sleep(0.1)
    assert worker.lost_event() == ("BTC_USDT", 3)


def test_a_market_settled_up_to_the_engine_is_not_watched(worker):
    consumer_at(lambda end: end)
    SettlementCursor.objects.filter(market="BTC_USDT").update(seq=worker.engine.market_state("BTC_USDT")[1])
    assert looked_twice(worker) is None


def test_the_worker_reads_settlement_through_the_reader_the_settlement_app_registers():
    assert progress.settlement_progress() is settlement_selectors


def test_a_worker_with_no_settlement_reader_stops_instead_of_guessing(worker, monkeypatch):
    monkeypatch.setattr(progress, "_registered", [])
    with pytest.raises(ImproperlyConfigured, match="settlement"):
        worker.lost_event()
