"""Rewinding the matching worker: which snapshot is chosen, what is refused, and that a worker's own
snapshot writes never undo a rewind."""

import pytest

from accounts.models import AuditLog
from exchange.errors import Conflict, InvalidRequest, NotFound
from matching.engine import AddMarket, Engine, NewOrder
from matching.models import EngineSnapshot
from matching.services import SNAPSHOTS_KEPT, engine_rewind, engine_snapshot_rewound, engine_snapshot_save

pytestmark = pytest.mark.django_db

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
            worker=WORKER, offsets={0: offset, 1: 0}, commands=offset, data=engine.snapshot(), since=since
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

    assert engine_snapshot_save(worker=WORKER, offsets={0: 99}, commands=99, data=b"x", since=third.pk) is None
    assert EngineSnapshot.objects.count() == count


def test_only_the_newest_snapshots_are_kept(snapshots):
    since = snapshots[-1][0].pk
    for i in range(SNAPSHOTS_KEPT + 2):
        since = engine_snapshot_save(
            worker=WORKER, offsets={0: 100 + i}, commands=100 + i, data=Engine().snapshot(), since=since
        ).pk
    kept = list(EngineSnapshot.objects.filter(worker=WORKER).order_by("-id").values_list("commands", flat=True))
    assert kept == [100 + i for i in reversed(range(SNAPSHOTS_KEPT + 2))][:SNAPSHOTS_KEPT]
