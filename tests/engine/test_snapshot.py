import gc
import pickle

import pytest

from matching.engine import SNAPSHOT_VERSION, AddMarket, Engine, HaltMarket

from .builders import MARKET, cancel, engine_with, limit, market, shapes


def busy_engine() -> Engine:
    engine = engine_with(MARKET, "ETH-USD")
    for cmd in [
        limit(1, 1, "sell", 100, 5),
        limit(2, 2, "sell", 100, 3),
        limit(3, 3, "sell", 101, 4),
        limit(4, 4, "buy", 99, 2),
        limit(5, 5, "buy", 100, 6),  # fills 1, partly 2
        cancel(3, 3),
        cancel(77, 8),  # an early cancel
        limit(6, 6, "buy", 50, 1, market="ETH-USD"),
        HaltMarket("ETH-USD", 9),
    ]:
        engine.apply(cmd)
    return engine


def test_a_restored_engine_has_the_same_state_and_continues_identically() -> None:
    original = busy_engine()
    restored = Engine.restore(original.snapshot())
    assert restored.state_digest() == original.state_digest()
    assert restored.markets == original.markets
    for name in original.markets:
        assert restored.market_state(name) == original.market_state(name)
        assert restored.open_orders(name) == original.open_orders(name)
        assert restored.depth(name, 10) == original.depth(name, 10)
    rest = [
        limit(7, 7, "buy", 101, 10),
        limit(77, 8, "sell", 90, 1),  # the early cancel applies after restore
        limit(5, 5, "buy", 1, 1),  # duplicate id known only from the snapshot
        cancel(1, 1),  # already done before the snapshot
        limit(8, 1, "buy", 10, 1, market="ETH-USD"),  # still halted
        market(9, 9, "sell", 3),
    ]
    for cmd in rest:
        assert restored.apply(cmd) == original.apply(cmd)
    assert restored.state_digest() == original.state_digest()


def test_the_snapshot_carries_early_cancels_seen_ids_and_halts() -> None:
    restored = Engine.restore(busy_engine().snapshot())
    assert shapes(restored.apply(limit(77, 8, "sell", 90, 1))) == [("accepted", 77), ("cancelled", 77, "user")]
    assert shapes(restored.apply(limit(1, 1, "sell", 90, 1))) == [("rejected", 1, "duplicate_order_id")]
    assert shapes(restored.apply(cancel(1, 1))) == [("rejected", 1, "already_done")]
    assert shapes(restored.apply(cancel(2, 9))) == [("rejected", 2, "not_owner")]
    assert restored.market_state("ETH-USD")[0] == "halted"


def test_snapshot_of_a_restored_engine_is_byte_identical() -> None:
    data = busy_engine().snapshot()
    assert Engine.restore(data).snapshot() == data


def test_closed_ids_are_written_by_id_and_read_in_any_order() -> None:
    original = busy_engine()
    magic, version, (markets, early) = pickle.loads(original.snapshot())  # noqa: S301 (our own bytes)
    closed = markets[0][6]
    pairs = list(zip(closed[::2], closed[1::2], strict=True))
    assert len(pairs) > 1
    assert pairs == sorted(pairs)
    # Earlier versions wrote the ids in the order they finished.
    shuffled = [x for pair in reversed(pairs) for x in pair]
    markets[0] = (*markets[0][:6], shuffled)
    restored = Engine.restore(pickle.dumps((magic, version, (markets, early)), protocol=5))
    assert restored.snapshot() == original.snapshot()
    assert restored.state_digest() == original.state_digest()
    assert shapes(restored.apply(cancel(1, 1))) == [("rejected", 1, "already_done")]
    assert shapes(restored.apply(cancel(1, 2))) == [("rejected", 1, "not_owner")]


def test_an_empty_engine_round_trips() -> None:
    restored = Engine.restore(Engine().snapshot())
    assert restored.markets == ()
    assert restored.state_digest() == Engine().state_digest()
    assert shapes(restored.apply(AddMarket("X", 0))) == [("market_added",)]


def test_state_digest_differs_when_books_differ() -> None:
    a, b = engine_with(), engine_with()
    a.apply(limit(1, 1, "buy", 10, 1))
    b.apply(limit(1, 1, "buy", 10, 2))
    assert a.state_digest() != b.state_digest()


def test_restoring_an_unknown_snapshot_version_raises_value_error() -> None:
    empty_state = ([], [])
    assert Engine.restore(pickle.dumps(("matching.engine.snapshot", SNAPSHOT_VERSION, empty_state))).markets == ()
    for bad in (SNAPSHOT_VERSION + 1, 0, "1", None):
        with pytest.raises(ValueError, match="unsupported snapshot version"):
            Engine.restore(pickle.dumps(("matching.engine.snapshot", bad, empty_state)))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a pickle",
        pickle.dumps({"markets": []}),
        pickle.dumps(("something else", 1, ([], []))),
        pickle.dumps(("matching.engine.snapshot", 1, ([("M", False, 1)], []))),
        pickle.dumps(("matching.engine.snapshot", 1, "garbage")),
    ],
)
def test_restoring_something_that_is_not_a_snapshot_raises_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        Engine.restore(data)


class Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pwned",))


def test_restore_refuses_pickles_that_name_any_global() -> None:
    with pytest.raises(ValueError, match=r"refers to builtins\.print"):
        Engine.restore(pickle.dumps(("matching.engine.snapshot", 1, Boom())))


def test_restore_leaves_the_garbage_collector_as_it_found_it() -> None:
    data = busy_engine().snapshot()
    assert gc.isenabled()
    Engine.restore(data)
    assert gc.isenabled()
    with pytest.raises(ValueError):
        Engine.restore(b"garbage")
    assert gc.isenabled()
    gc.disable()
    try:
        Engine.restore(data)
        assert not gc.isenabled()
    finally:
        gc.enable()
