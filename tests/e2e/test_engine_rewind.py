"""`manage.py engine_rewind` against a running matching worker: for events the stream lost after the
worker had snapshotted past them, the worker goes back to an earlier snapshot and emits everything
from there again, byte for byte as the first time."""

import re
import signal
from collections.abc import Iterator

import pytest

from matching import schemas
from matching.engine import Engine
from tests.e2e.harness import Exchange, eventually
from tests.e2e.test_engine_recovery import MARKETS, random_stream, reference_run, send_commands

pytestmark = pytest.mark.e2e

COMMANDS = 3_000


@pytest.fixture(scope="module")
def engine_only(tmp_path_factory) -> Iterator[Exchange]:
    with Exchange.engine_only(
        tmp_path_factory.mktemp("rewind"), ENGINE_SNAPSHOT_SECONDS="3600", ENGINE_SNAPSHOT_COMMANDS="400"
    ) as exchange:
        symbols = ", ".join(repr(m) for m in MARKETS)
        exchange.manage(
            "shell",
            "-c",
            "from decimal import Decimal as D; from matching.models import Market\n"
            f"for s in ({symbols},): Market.objects.create(symbol=s, base_id='BTC', quote_id='USDT', "
            "tick_size=D('0.01'), lot_size=D('0.00001'), min_notional=D('10'))",
        )
        yield exchange


def test_a_rewound_worker_emits_the_lost_events_again_identically(engine_only: Exchange):
    exchange = engine_only
    stream = random_stream(seed=3, count=COMMANDS)
    reference, expected = reference_run(stream)
    send_commands(exchange, stream)

    def emitted(starts: dict[int, int] | None = None) -> dict[tuple[str, int], bytes]:
        seen: dict[tuple[str, int], bytes] = {}
        for _, _, value in exchange.read_topic("engine-events", starts=starts):
            event = schemas.decode_event(value)
            if event.market in MARKETS:
                key = (event.market, event.seq)
                assert seen.setdefault(key, value) == value, f"{key} was emitted twice with different content"
        return seen

    exchange.start("engine")
    eventually(lambda: emitted() == expected, timeout=120, what="the worker to emit every event once")
    snapshots = exchange.query("SELECT count(*) FROM matching_enginesnapshot")[0][0]
    assert snapshots >= 3, "the worker took too few snapshots for a rewind to choose from"

    # Settlement has lost REC_A's last events; the worker's latest snapshot is already past them.
    final_seq = reference.market_state("REC_A")[1]
    ends = exchange.topic_ends("engine-events")
    output = exchange.manage("engine_rewind", "REC_A", str(final_seq - 2))
    snapshot_id, at = map(int, re.search(r"snapshot (\d+): REC_A at sequence (\d+)", output).groups())
    assert at < final_seq - 2

    [(data,)] = exchange.query("SELECT data FROM matching_enginesnapshot WHERE id = %s", snapshot_id)
    rewound_seqs = Engine.restore(bytes(data)).sequences()
    again = {key: value for key, value in expected.items() if key[1] > rewound_seqs.get(key[0], 0)}
    assert ("REC_A", final_seq - 2) in again and ("REC_A", at) not in again
    eventually(lambda: emitted(starts=ends) == again, timeout=120, what="the worker to emit the events again")

    # It goes on from where it is now, and its snapshot at a clean stop is where an uninterrupted
    # engine ends.
    exchange.signal("engine", signal.SIGTERM)
    [(data,)] = exchange.query("SELECT data FROM matching_enginesnapshot ORDER BY id DESC LIMIT 1")
    final = Engine.restore(bytes(data))
    for market in MARKETS:
        assert final.market_state(market) == reference.market_state(market)
        assert final.open_orders(market) == reference.open_orders(market)
