import json
from decimal import Decimal

import pytest

from accounts.models import Account
from matching.models import Order, OutboxMessage

pytestmark = pytest.mark.django_db

SEED_BODY = {
    "cid": "test_1234567890",
    "symbol": "BTC_USDT",
    "side": "Buy",
    "order_type": "Limit",
    "price": "50000.0",
    "quantity": "0.01",
}


def body(**changes: object) -> dict:
    return {**SEED_BODY, "cid": "test_12345678901", **changes}


def balance(user, asset: str, kind: str) -> Decimal:
    account = Account.objects.filter(user=user, asset_id=asset, kind=kind).first()
    return account.balance if account else Decimal(0)


@pytest.fixture
def buyer(btc_usdt, make_user, fund):
    user = make_user()
    fund(user, "USDT", "1000")
    return user


def test_limit_buy_locks_its_notional_and_queues_one_command(buyer, client_for, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        answer = client_for(buyer).post("/api/orders/", body(), format="json")

    assert answer.status_code == 201, answer.json()
    order = answer.json()
    assert order["status"] == "pending"
    assert (order["side"], order["order_type"], order["price"], order["quantity"]) == ("buy", "limit", "50000", "0.01")
    assert balance(buyer, "USDT", "available") == Decimal("500")
    assert balance(buyer, "USDT", "locked") == Decimal("500")
    outbox = OutboxMessage.objects.get()
    command = json.loads(bytes(outbox.payload))
    assert command == {
        "v": 1,
        "type": "new",
        "market": "BTC_USDT",
        "order_id": order["id"],
        "user_id": buyer.pk,
        "side": "buy",
        "order_type": "limit",
        "price": 5_000_000,
        "quantity": 1_000,
        "quote_quantity": None,
        "time_in_force": "GTC",
        "post_only": False,
        "stp": "cancel_incoming",
        "ts": command["ts"],
    }
    # The request sends nothing to Kafka, not even after commit: the outbox row is the relay's.
    assert callbacks == []


def test_side_and_type_are_accepted_in_any_case(buyer, client_for):
    answer = client_for(buyer).post("/api/orders/", body(side="bUY", order_type="LIMIT"), format="json")
    assert answer.status_code == 201
    assert Order.objects.get().side == "buy"


def test_a_repeated_cid_returns_the_first_order_and_locks_nothing_more(buyer, client_for):
    client = client_for(buyer)
    first = client.post("/api/orders/", body(), format="json")
    again = client.post("/api/orders/", body(price="40000", quantity="0.02"), format="json")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["price"] == "50000"
    assert Order.objects.count() == 1
    assert balance(buyer, "USDT", "locked") == Decimal("500")


def test_the_same_cid_is_free_for_another_user(buyer, make_user, fund, client_for):
    other = make_user()
    fund(other, "USDT", "1000")
    assert client_for(buyer).post("/api/orders/", body(), format="json").status_code == 201
    assert client_for(other).post("/api/orders/", body(), format="json").status_code == 201


def test_order_with_insufficient_funds_is_rejected_and_nothing_is_locked(buyer, client_for, unchanged):
    with unchanged():
        answer = client_for(buyer).post("/api/orders/", body(quantity="0.03"), format="json")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "insufficient_funds"
    assert "USDT" in answer.json()["error"]["message"]


def test_sell_without_the_base_asset_is_rejected(buyer, client_for, unchanged):
    with unchanged():
        answer = client_for(buyer).post("/api/orders/", body(side="Sell"), format="json")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "insufficient_funds"


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"price": "50000.001"}, "invalid_precision", "price"),
        ({"quantity": "0.000001"}, "invalid_precision", "quantity"),
        ({"quantity": "0.0001", "price": "50000"}, "below_min_notional", "quantity"),
        ({"price": "0"}, "invalid_amount", "price"),
        ({"quantity": "-1"}, "invalid_amount", "quantity"),
        ({"price": None}, "required", "price"),
        ({"price": "abc"}, "invalid_amount", "price"),
        ({"price": "NaN"}, "invalid_amount", "price"),
        ({"price": "1e400"}, "invalid_amount", "price"),
        ({"quantity": "0.0000000000000000001"}, "invalid_precision", "quantity"),
        ({"cid": "a" * 15}, "invalid", "cid"),
        ({"cid": "a" * 33}, "invalid", "cid"),
        ({"cid": "has spaces in it!!"}, "invalid", "cid"),
        ({"symbol": "DOGE_USDT"}, "unknown_symbol", "symbol"),
        ({"side": "hold"}, "invalid", "side"),
        ({"order_type": "stop"}, "invalid", "order_type"),
        ({"time_in_force": "GTD"}, "invalid", "time_in_force"),
        ({"order_type": "Market"}, "not_allowed", "price"),
        ({"order_type": "Market", "price": None, "side": "Buy"}, "required", "quote_quantity"),
        ({"quote_quantity": "10"}, "not_allowed", "quote_quantity"),
    ],
)
def test_bad_order_gets_a_4xx_json_error_naming_the_field_and_changes_nothing(
    buyer, client_for, unchanged, changes, code, field
):
    with unchanged():
        answer = client_for(buyer).post("/api/orders/", body(**changes), format="json")
    assert 400 <= answer.status_code < 500
    error = answer.json()["error"]
    assert error["code"] == code
    assert field in error["fields"]
    assert error["message"]


def test_the_seed_body_itself_has_a_15_character_cid_and_is_refused(buyer, client_for, unchanged):
    with unchanged():
        answer = client_for(buyer).post("/api/orders/", SEED_BODY, format="json")
    assert answer.status_code == 400
    assert answer.json()["error"]["fields"]["cid"] == ["cid must be 16 to 32 characters of A-Z, a-z, 0-9, _ and -."]


def test_malformed_json_is_a_400_not_a_500(buyer, client_for, unchanged):
    with unchanged():
        answer = client_for(buyer).post("/api/orders/", "{not json", content_type="application/json")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "parse_error"


def test_an_order_for_a_halted_market_is_refused(buyer, btc_usdt, client_for, unchanged):
    btc_usdt.status = "halted"
    btc_usdt.save()
    with unchanged():
        answer = client_for(buyer).post("/api/orders/", body(), format="json")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "market_halted"


def test_another_users_order_is_404(buyer, make_user, client_for):
    order = client_for(buyer).post("/api/orders/", body(), format="json").json()
    stranger = client_for(make_user())
    assert stranger.get(f"/api/orders/{order['id']}/").status_code == 404
    assert stranger.delete(f"/api/orders/{order['id']}/").status_code == 404
    assert Order.objects.get().cancel_requested_at is None


def test_cancel_is_accepted_and_goes_to_the_engine(buyer, client_for):
    client = client_for(buyer)
    order = client.post("/api/orders/", body(), format="json").json()
    answer = client.delete(f"/api/orders/{order['id']}/")
    assert answer.status_code == 202
    assert answer.json()["cancel_requested_at"] is not None
    cancel = json.loads(bytes(OutboxMessage.objects.order_by("-id").first().payload))
    assert (cancel["type"], cancel["order_id"]) == ("cancel", order["id"])
    # The funds stay locked until the engine confirms.
    assert balance(buyer, "USDT", "locked") == Decimal("500")


def test_cancelling_a_finished_order_is_a_conflict(buyer, client_for):
    client = client_for(buyer)
    order = client.post("/api/orders/", body(), format="json").json()
    Order.objects.filter(pk=order["id"]).update(status="filled", locked=0)
    answer = client.delete(f"/api/orders/{order['id']}/")
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "order_closed"


def test_orders_list_filters_by_status_and_symbol(buyer, client_for):
    client = client_for(buyer)
    client.post("/api/orders/", body(), format="json")
    assert len(client.get("/api/orders/?status=pending").json()) == 1
    assert client.get("/api/orders/?status=filled").json() == []
    assert client.get("/api/orders/?symbol=ETH_USDT").json() == []
    assert client.get("/api/orders/?status=bogus").status_code == 400


def test_money_arriving_opens_the_locked_account_beside_the_available_one(btc_usdt, make_user, fund):
    """A placement locks both accounts of the asset before it reads the balance; one created inside
    its transaction could deadlock with a withdrawal creating it at the same moment."""
    user = make_user()
    fund(user, "USDT", "100")
    kinds = set(Account.objects.filter(user=user, asset_id="USDT").values_list("kind", flat=True))
    assert kinds == {"available", "locked"}


def test_a_symbol_of_spaces_is_an_unknown_market_not_a_malformed_request(buyer, client_for):
    answer = client_for(buyer).post("/api/orders/", body(symbol="  "), format="json")
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "unknown_symbol")


@pytest.mark.parametrize("post_only", [0, 1, "true", "yes"])
def test_post_only_is_a_json_boolean_and_nothing_else(buyer, client_for, unchanged, post_only):
    with unchanged():
        answer = client_for(buyer).post("/api/orders/", body(post_only=post_only), format="json")
    assert answer.status_code == 400
    assert "post_only" in answer.json()["error"]["fields"]


def test_an_empty_amount_is_refused_not_read_as_null(buyer, client_for, unchanged):
    with unchanged():
        answer = client_for(buyer).post("/api/orders/", body(quote_quantity=""), format="json")
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "invalid_amount")


@pytest.mark.parametrize("field, value", [("symbol", 7), ("cid", 1234567890123456789), ("symbol", True)])
def test_a_number_where_the_schema_says_string_is_refused(buyer, client_for, unchanged, field, value):
    with unchanged():
        answer = client_for(buyer).post("/api/orders/", body(**{field: value}), format="json")
    assert answer.status_code == 400
    assert field in answer.json()["error"]["fields"]
