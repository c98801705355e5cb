"""benchmarks/stages.py measures settlement on the events it generates: the engine's answers to
orders placed through the services. Those events must be ones settlement applies whole, or the
figures would be of a settlement that stopped at its first failed check."""

import importlib
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from types import ModuleType

import pytest
from django.db import connection

from core.kafka import client, topics
from matching.models import Order
from settlement.reconciliation import reconciliation_checks

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def stages(monkeypatch, settings) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as when the script runs: its neighbours import
    # Topics of the test's own: no other test, nor an exchange started by the suite, reads these orders.
    settings.KAFKA = {**settings.KAFKA, "TOPIC_PREFIX": f"{settings.KAFKA['TOPIC_PREFIX']}stages-"}
    settings.MAX_OPEN_ORDERS_PER_USER = 100_000  # as the script sets it: a round's orders wait for its settlement
    yield importlib.import_module("stages")
    with suppress(Exception):
        client.delete_topics(topics.name(t) for t in topics.ALL)


@pytest.mark.services
@pytest.mark.django_db
def test_a_round_of_the_stage_benchmark_settles_every_event_it_generates_and_reconciles(stages):
    flow, feed, events_topic = stages.prepare(traders=4, run="test", seed=7)
    try:
        result = stages.run_round(
            flow, feed, events_topic, rows=600, single=5, database=connection.settings_dict["NAME"]
        )
    finally:
        events_topic.close()

    assert (result.relay_single.items, result.relay.items) == (5, 600)
    assert {"accepted", "trade", "done", "cancelled", "rejected"} <= set(result.types)
    assert result.trades == result.types["trade"] > 100
    assert result.store.items == result.settle.items == sum(result.types.values())
    assert not Order.objects.filter(status=Order.Status.PENDING).exists()
    assert [check.check for check in reconciliation_checks() if not check.ok] == []
