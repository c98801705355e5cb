"""`POST /api/orders/batch/`: each order placed or refused on its own, one result per position."""

from decimal import Decimal

import pytest

from accounts.models import Account, LedgerLine
from matching.models import Order, OutboxMessage

pytestmark = pytest.mark.django_db


def order(n: int, **changes: object) -> dict:
    return {
        "cid": f"batch_order_{n:06d}",
        "symbol": "BTC_USDT",
        "side": "buy",
        "order_type": "limit",
        "price": "50000",
        "quantity": "0.01",
        **changes,
    }


def available(user, asset: str) -> Decimal:
    return Account.objects.get(user=user, asset_id=asset, kind="available").balance


@pytest.fixture
def trader(btc_usdt, make_user, fund):
    user = make_user()
    fund(user, "USDT", "1200")  # two orders of 500, not three
    fund(user, "BTC", "1")
    return user


def test_each_order_of_a_batch_is_placed_or_refused_on_its_own_in_order(trader, client_for):
    answer = client_for(trader).post(
        "/api/orders/batch/",
        {
            "orders": [
                order(1),
                order(2, price="50000.001"),  # finer than the tick
                order(3, symbol="DOGE_USDT"),
                order(4),
                order(5),  # the funds are gone by now
                order(6, side="sell", price="60000"),  # sells lock BTC, which is still there
                order(1),  # the first one again
            ]
        },
        format="json",
    )

    assert answer.status_code == 200, answer.json()
    results = answer.json()["results"]
    assert [r["status"] for r in results] == [201, 400, 400, 201, 400, 201, 200]
    assert [r["error"]["code"] if r["error"] else None for r in results] == [
        None, "invalid_precision", "unknown_symbol", None, "insufficient_funds", None, None,
    ]  # fmt: skip
    assert results[6]["order"]["id"] == results[0]["order"]["id"]
    assert Order.objects.filter(user=trader).count() == 3
    assert available(trader, "USDT") == Decimal("200")
    assert available(trader, "BTC") == Decimal("0.99")
    assert OutboxMessage.objects.count() == 3
    for placed in (results[0], results[3], results[5]):
        lines = LedgerLine.objects.filter(entry__reference=f"order:{placed['order']['id']}")
        assert sorted(line.amount for line in lines) == sorted(
            [-Decimal(placed["order"]["locked"]), Decimal(placed["order"]["locked"])]
        )


def test_a_batch_that_refuses_every_order_changes_nothing(trader, client_for, unchanged):
    with unchanged():
        answer = client_for(trader).post(
            "/api/orders/batch/", {"orders": [order(1, quantity="5"), order(2, symbol="NOPE")]}, format="json"
        )
    assert [r["status"] for r in answer.json()["results"]] == [400, 400]


def test_a_cid_placed_earlier_answers_its_order_whatever_the_batch_says_now(trader, client_for, btc_usdt):
    client = client_for(trader)
    first = client.post("/api/orders/", order(1), format="json").json()
    btc_usdt.status = "halted"
    btc_usdt.save()
    again = client.post("/api/orders/batch/", {"orders": [order(1, price="1")]}, format="json").json()["results"]
    assert again == [{"status": 200, "order": first, "error": None}]


@pytest.mark.parametrize(
    "body",
    [
        {"orders": []},
        {"orders": [order(n) for n in range(101)]},
        {"orders": "all"},
        {},
        {"orders": [], "x": 1},
        {"orders": [order(1), {"cid": "short"}]},
        {"orders": [order(1), order(2, price=50000)]},
        {"orders": [order(1), order(2, status="filled")]},
        {"orders": [order(1), 7]},
        {"orders": [order(1), None]},
    ],
    ids=[
        "empty", "over_a_hundred", "not_a_list", "missing", "unknown_field",
        "an_order_missing_fields", "an_amount_not_a_string", "an_order_with_an_unknown_field",
        "an_order_not_an_object", "an_order_null",
    ],
)  # fmt: skip
def test_a_malformed_batch_is_refused_whole(trader, client_for, unchanged, body):
    with unchanged():
        answer = client_for(trader).post("/api/orders/batch/", body, format="json")
    assert answer.status_code == 400, answer.json()
    # The error shape: one list of messages a field.
    assert all(isinstance(messages, list) for messages in answer.json()["error"]["fields"].values())


def test_a_restricted_trader_gets_every_order_of_a_batch_refused(trader, client_for):
    trader.trading_restricted = True
    trader.save()
    answer = client_for(trader).post("/api/orders/batch/", {"orders": [order(1), order(2)]}, format="json")
    assert [r["error"]["code"] for r in answer.json()["results"]] == ["trading_restricted"] * 2
    assert not Order.objects.exists()


def test_a_malformed_order_is_named_by_its_position(trader, client_for):
    answer = (
        client_for(trader)
        .post("/api/orders/batch/", {"orders": [order(1), order(2, quantity=1)]}, format="json")
        .json()
    )
    assert answer["error"]["code"] == "amount_not_a_string"
    assert list(answer["error"]["fields"]) == ["orders.1.quantity"]
