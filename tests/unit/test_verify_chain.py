from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from settlement.models import EngineEvent
from tests.unit.conftest import place

pytestmark = pytest.mark.django_db


@pytest.fixture
def settled(pipeline, alice, bob):
    place(alice, "sell", "sell", "50000", "0.01")
    place(bob, "buy", "buy", "50000", "0.01")
    pipeline.run()
    return pipeline


def test_an_intact_chain_verifies(settled):
    out = StringIO()
    call_command("verify_engine_chain", stdout=out)
    line = next(row for row in out.getvalue().splitlines() if row.startswith("BTC_USDT"))
    assert line.endswith("ok")
    assert f" {EngineEvent.objects.count()} " in line


def test_an_altered_event_is_named(settled, tamper):
    trade = EngineEvent.objects.get(type="trade")
    trade.payload = {**trade.payload, "quantity": trade.payload["quantity"] + 1}
    with tamper():
        trade.save()
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("verify_engine_chain", stdout=out)
    assert f"#{trade.seq} does not chain onto #{trade.seq - 1}" in out.getvalue()


def test_a_missing_event_is_named(settled, tamper):
    with tamper():
        EngineEvent.objects.filter(seq=2).delete()
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("verify_engine_chain", "BTC_USDT", stdout=out)
    assert "#2..#2 missing" in out.getvalue()
