"""The engine against a naive reference model on random command streams."""

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from matching.engine import (
    GENESIS_HASH,
    UNCHAINED_HASH,
    AddMarket,
    CancelAll,
    CancelOrder,
    Command,
    Engine,
    Event,
    HaltMarket,
    NewOrder,
    ResumeMarket,
    canonical,
    chain_hash,
    verify_chain,
)

from .canon import reference_canonical
from .reference import RefEngine

MARKETS = ["M1"] * 12 + ["M2"] * 4 + ["ZZ"]
KINDS = ["limit"] * 12 + ["market"] * 4 + ["cancel"] * 5 + ["cancel_all", "admin"]
STPS = st.sampled_from(["cancel_incoming", "cancel_resting", "cancel_both"])


@st.composite
def streams(draw: st.DrawFn, max_commands: int = 50) -> list[Command]:
    """Several users, prices 1..6 so that orders cross often, every command kind,
    duplicate ids, cancels that arrive before their order, halts."""
    cmds: list[Command] = [AddMarket("M1", 0)]
    if draw(st.integers(0, 3)):
        cmds.append(AddMarket("M2", 0))
    next_id = 1
    owners: dict[int, int] = {}
    ts = 0
    resume_at: dict[int, str] = {}
    for step in range(draw(st.integers(0, max_commands))):
        if step in resume_at:
            # Halts last a few commands, so halted books see cancels and resumes.
            cmds.append(ResumeMarket(resume_at.pop(step), ts))
        ts += draw(st.integers(0, 2))
        market = draw(st.sampled_from(MARKETS))
        kind = draw(st.sampled_from(KINDS))
        user = draw(st.integers(1, 3))
        if kind in ("limit", "market"):
            if owners and draw(st.integers(0, 19)) == 0:
                oid = draw(st.sampled_from(sorted(owners)))
            else:
                oid = next_id
                next_id += 1
                owners[oid] = user
            side = draw(st.sampled_from(["buy", "sell"]))
            stp = draw(STPS)
            if kind == "limit":
                tif = draw(st.sampled_from(["GTC", "GTC", "GTC", "IOC", "FOK"]))
                post_only = draw(st.integers(0, 7)) == 0
                price, qty = draw(st.integers(1, 5)), draw(st.integers(1, 5))
                cmds.append(NewOrder(market, oid, user, side, "limit", price, qty, None, tif, post_only, stp, ts))
            else:
                tif = draw(st.sampled_from(["IOC"] * 5 + ["FOK"] * 3 + ["GTC"]))
                post_only = draw(st.integers(0, 19)) == 0
                if side == "buy" and draw(st.booleans()):
                    qty, quote = None, draw(st.integers(1, 40))
                else:
                    qty, quote = draw(st.integers(1, 8)), None
                cmds.append(NewOrder(market, oid, user, side, "market", None, qty, quote, tif, post_only, stp, ts))
        elif kind == "cancel":
            choice = draw(st.integers(0, 5))
            if owners and choice < 4:
                oid = draw(st.sampled_from(sorted(owners)))
                who = owners[oid] if choice < 3 else user
            else:
                # An id that may only be issued later: an early cancel.
                oid, who = next_id + draw(st.integers(0, 2)), user
            cmds.append(CancelOrder(market, oid, who, ts))
        elif kind == "cancel_all":
            cmds.append(CancelAll(market, user, ts))
        else:
            admin = draw(st.sampled_from([AddMarket, HaltMarket, HaltMarket, ResumeMarket]))
            cmds.append(admin(market, ts))
            if admin is HaltMarket:
                resume_at.setdefault(step + draw(st.integers(1, 6)), market)
    return cmds


def run(cmds: list[Command]) -> tuple[Engine, list[Event]]:
    engine = Engine()
    events: list[Event] = []
    for cmd in cmds:
        events.extend(engine.apply(cmd))
    return engine, events


@settings(max_examples=400, deadline=None)
@given(streams())
def test_engine_matches_the_reference_model(cmds: list[Command]) -> None:
    engine, ref = Engine(), RefEngine()
    for cmd in cmds:
        got = [event.to_dict() for event in engine.apply(cmd)]
        assert got == ref.apply(cmd), cmd
        for market in engine.markets:
            _, bids, asks = engine.depth(market, 1)
            assert not (bids and asks and bids[0][0] >= asks[0][0]), f"crossed book in {market} after {cmd}"
    for market in engine.markets:
        assert [tuple(o) for o in engine.open_orders(market)] == ref.resting(market)


@settings(max_examples=300, deadline=None)
@given(streams())
def test_every_chain_is_gapless_and_hashes_recompute_from_the_documented_bytes(cmds: list[Command]) -> None:
    engine, events = run(cmds)
    by_market: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if event.seq == 0:
            assert event.hash == UNCHAINED_HASH
            assert event.to_dict()["reason"] == "unknown_market"
        else:
            by_market[event.market].append(event)
    assert sorted(by_market) == sorted(engine.markets)
    for market, chain in by_market.items():
        assert [e.seq for e in chain] == list(range(1, len(chain) + 1))
        verify_chain(chain)
        prev = GENESIS_HASH
        for event in chain:
            # Proves the engine's per-shape encoders write exactly the documented bytes.
            assert canonical(event) == reference_canonical(event)
            prev = chain_hash(prev, reference_canonical(event))
            assert event.hash == prev
        assert engine.market_state(market)[1:] == (len(chain), chain[-1].hash)


@settings(max_examples=300, deadline=None)
@given(streams())
def test_quantities_are_conserved_and_nobody_trades_with_themself(cmds: list[Command]) -> None:
    engine, events = run(cmds)
    accepted = {}
    filled: dict[int, int] = defaultdict(int)
    spent: dict[int, int] = defaultdict(int)
    final: dict[int, tuple[str, int | None, int | None]] = {}
    for event in events:
        d = event.to_dict()
        if d["type"] == "accepted":
            accepted[d["order_id"]] = d
        elif d["type"] == "trade":
            assert d["maker_user_id"] != d["taker_user_id"]
            assert d["price"] == accepted[d["maker_order_id"]]["price"], "trades happen at the maker's price"
            assert d["quantity"] > 0
            for oid in (d["maker_order_id"], d["taker_order_id"]):
                filled[oid] += d["quantity"]
            spent[d["taker_order_id"]] += d["quantity"] * d["price"]
        elif d["type"] == "done":
            final[d["order_id"]] = ("done", 0, 0)
        elif d["type"] == "cancelled":
            final[d["order_id"]] = ("cancelled", d["remaining"], d["remaining_quote"])
    for market in engine.markets:
        for order in engine.open_orders(market):
            assert order.order_id not in final
            final[order.order_id] = ("resting", order.remaining, None)
    assert set(final) == set(accepted), "every accepted order ends done, cancelled or resting"
    for oid, d in accepted.items():
        state, remaining, remaining_quote = final[oid]
        if d["quantity"] is not None:
            assert filled[oid] + remaining == d["quantity"]
        else:
            assert state != "resting"
            assert spent[oid] + (remaining_quote or 0) == d["quote_quantity"]


@settings(max_examples=150, deadline=None)
@given(streams())
def test_the_same_stream_twice_gives_identical_event_bytes_and_hashes(cmds: list[Command]) -> None:
    first, events_a = run(cmds)
    second, events_b = run(cmds)
    assert [(canonical(e), e.hash) for e in events_a] == [(canonical(e), e.hash) for e in events_b]
    assert events_a == events_b
    assert first.state_digest() == second.state_digest()
    assert first.snapshot() == second.snapshot()


@settings(max_examples=200, deadline=None)
@given(streams(max_commands=60), st.integers(1, 7))
def test_snapshot_and_restore_at_every_kth_command_changes_nothing(cmds: list[Command], k: int) -> None:
    reference, expected = run(cmds)
    engine = Engine()
    events: list[Event] = []
    for i, cmd in enumerate(cmds, start=1):
        events.extend(engine.apply(cmd))
        if i % k == 0:
            data = engine.snapshot()
            engine = Engine.restore(data)
            assert engine.snapshot() == data
    assert events == expected
    assert engine.state_digest() == reference.state_digest()
    assert engine.snapshot() == reference.snapshot()
    for market in reference.markets:
        assert engine.open_orders(market) == reference.open_orders(market)
        assert engine.market_state(market) == reference.market_state(market)
        assert engine.depth(market, 100) == reference.depth(market, 100)
