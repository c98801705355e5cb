"""ChainCheck: the one verifier that verify_chain, settlement and reconciliation share."""

import dataclasses

import pytest

from matching.engine import GENESIS_HASH, Chain, ChainCheck, ChainError, Event, NewOrder


def emitted(count: int = 6, market: str = "BTC-USD") -> list[Event]:
    chain = Chain(market)
    events: list[Event] = [chain.market_added(1)]
    for oid in range(1, count):
        events.append(
            chain.accepted(NewOrder(market, oid, 7, "buy", "limit", 100, 2, None, "GTC", False, "cancel_incoming", oid))
        )
    return events


def test_extend_follows_an_intact_chain_and_stands_after_its_last_event() -> None:
    events = emitted()
    check = ChainCheck("BTC-USD")
    for event in events:
        check.extend(event)
    assert (check.seq, check.last) == (events[-1].seq, events[-1].hash)


def test_a_check_started_from_a_stored_link_verifies_what_follows() -> None:
    events = emitted()
    check = ChainCheck("BTC-USD", events[2].seq, events[2].hash)
    for event in events[3:]:
        check.extend(event)
    with pytest.raises(ChainError, match="hash mismatch at seq 4"):
        ChainCheck("BTC-USD", 3, events[1].hash).extend(events[3])


def test_a_bad_link_leaves_the_check_where_it_was_and_restart_goes_on_after_it() -> None:
    events = emitted()
    events[2] = dataclasses.replace(events[2], ts=events[2].ts + 1)
    check = ChainCheck("BTC-USD")
    check.extend(events[0])
    check.extend(events[1])
    with pytest.raises(ChainError) as info:
        check.extend(events[2])
    assert info.value.seq == 3
    assert (check.seq, check.last) == (2, events[1].hash)
    # A caller that reports every break goes on from the altered event's stored hash: the events
    # after it still chain onto that hash, so only the altered one is reported.
    check.restart(3, events[2].hash)
    for event in events[3:]:
        check.extend(event)
    assert check.seq == 6


def test_after_a_hole_the_next_hash_is_taken_as_given_but_seq_and_market_are_still_checked() -> None:
    events = emitted()
    check = ChainCheck("BTC-USD")
    check.restart(3)
    check.extend(dataclasses.replace(events[3], ts=99))
    assert check.seq == 4
    with pytest.raises(ChainError, match="seq 6 found where seq 5 was expected"):
        check.extend(events[5])
    with pytest.raises(ChainError, match="belongs to market 'ETH-USD'"):
        check.extend(emitted(market="ETH-USD")[4])
    check.restart(4)
    with pytest.raises(ChainError, match="no valid hash"):
        check.extend(dataclasses.replace(events[4], hash="not a digest"))


def test_a_malformed_starting_hash_is_refused() -> None:
    with pytest.raises(ChainError):
        ChainCheck("BTC-USD", 0, "00")
    with pytest.raises(ChainError):
        ChainCheck("BTC-USD", 0, GENESIS_HASH.upper().replace("0", "G"))
