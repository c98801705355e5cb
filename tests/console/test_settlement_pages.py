"""The settlement pages the markets role reads: how far each market's hash chain is verified."""

import pytest

from settlement.models import ChainCheckpoint, SettlementCursor

pytestmark = pytest.mark.django_db

URL = "/admin/settlement/chaincheckpoint/"


def test_markets_reads_each_chains_checkpoint_and_how_many_events_came_after_it(staff, signed_in) -> None:
    SettlementCursor.objects.create(market="BTC_USDT", seq=45, received_seq=50)
    ChainCheckpoint.objects.create(market="BTC_USDT", seq=42, hash="ab" * 32)
    # A market whose cursor has not been written yet: nothing received since.
    ChainCheckpoint.objects.create(market="ETH_USDT", seq=7, hash="cd" * 32)

    page = signed_in(staff("markets")).get(URL)

    assert page.status_code == 200
    assert b"Received since" in page.content
    listed = page.context["cl"]
    assert {c.market: listed.model_admin.unverified(c) for c in listed.result_list} == {"BTC_USDT": 8, "ETH_USDT": 0}


def test_the_checkpoints_are_read_only_and_hidden_from_the_other_roles(staff, signed_in) -> None:
    ChainCheckpoint.objects.create(market="BTC_USDT", seq=42, hash="ab" * 32)
    markets = signed_in(staff("markets"))
    assert markets.get(f"{URL}add/").status_code == 403
    assert markets.post(f"{URL}BTC_USDT/change/", {"seq": 1, "hash": "0" * 64}).status_code == 403
    assert ChainCheckpoint.objects.get(market="BTC_USDT").seq == 42
    for role in ("support", "finance", "compliance", "admin"):
        assert signed_in(staff(role)).get(URL).status_code == 403, role
