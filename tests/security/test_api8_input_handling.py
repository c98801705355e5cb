"""API8:2023 Security misconfiguration: what the API does with amounts it was not built for.

Amounts are plain decimal strings and nothing else; the money arithmetic is wide enough for every
value the columns can hold, so no amount, however large, makes the API answer 500; a result too large
for a column is a 400 with a code, not a database error."""

import threading
from decimal import Decimal, getcontext

import pytest

from accounts.models import AMOUNT_DIGITS, Account, Asset
from accounts.services import deposit_address_get
from matching.models import Order
from tests.factories import AssetFactory, MarketFactory

pytestmark = pytest.mark.django_db

TEN_BILLION = "10000000000"
LARGEST = "99999999999999999999.999999999999999999"  # 20 whole digits and 18 places: NUMERIC(38, 18)


@pytest.fixture
def trader(btc_usdt, make_user, fund):
    user = make_user()
    fund(user, "USDT", "100000")
    return user


def order(**changes: object) -> dict:
    return {
        "cid": "amounts_0000000001",
        "symbol": "BTC_USDT",
        "side": "Buy",
        "order_type": "Limit",
        "price": "50000",
        "quantity": "0.01",
        **changes,
    }


# --- The form of an amount --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "amount",
    [
        "1e3",
        "1E-2",
        "1_000",
        " 1",
        "1 ",
        "1 000",
        "\u0661\u0662",  # Arabic-Indic digits, which Python's Decimal reads as 12
        "\uff11",  # a fullwidth 1
        "NaN",
        "sNaN",
        "Infinity",
        "-Infinity",
        "inf",
        "+1",
        "1.2.3",
        "1,5",
        "0x10",
        ".5",
        "5.",
        "",
        "abc",
    ],
)
def test_an_amount_that_is_not_a_plain_decimal_string_is_refused_with_invalid_amount(
    trader, client_for, unchanged, amount
):
    with unchanged():
        answer = client_for(trader).post("/api/deposits/", {"asset": "USDT", "amount": amount}, format="json")
    assert answer.status_code == 400, answer.json()
    error = answer.json()["error"]
    assert error["code"] == "invalid_amount"
    assert "amount" in error["fields"]


@pytest.mark.parametrize("amount", [1.5, 100, 0.1, 1e3, True, ["1"], {"value": "1"}])
def test_an_amount_sent_as_a_json_number_or_anything_but_a_string_is_refused(trader, client_for, unchanged, amount):
    with unchanged():
        answer = client_for(trader).post("/api/deposits/", {"asset": "USDT", "amount": amount}, format="json")
    assert answer.status_code == 400, answer.json()
    assert answer.json()["error"]["code"] == "amount_not_a_string"
    assert "amount" in answer.json()["error"]["fields"]


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("price", 50000, "amount_not_a_string"),
        ("quantity", 0.01, "amount_not_a_string"),
        ("price", "5e4", "invalid_amount"),
        ("quantity", "-0.01", "invalid_amount"),
        ("price", "100000000000000000000.5", "too_many_digits"),
        ("price", "123456789012345678901", "too_many_digits"),
        ("quantity", "0.0000000000000000001", "invalid_precision"),
    ],
)
def test_every_amount_field_of_an_order_follows_the_same_rules(trader, client_for, unchanged, field, value, code):
    with unchanged():
        answer = client_for(trader).post("/api/orders/", order(**{field: value}), format="json")
    assert answer.status_code == 400, answer.json()
    error = answer.json()["error"]
    assert (error["code"], list(error["fields"])) == (code, [field])


@pytest.mark.parametrize("amount", ["10", "0.5", "007.25", "100000.000000000000000000"])
def test_plain_decimal_strings_are_accepted(trader, client_for, amount):
    answer = client_for(trader).post("/api/deposits/", {"asset": "USDT", "amount": amount}, format="json")
    assert answer.status_code == 201, answer.json()
    assert Decimal(answer.json()["amount"]) == Decimal(amount)


def test_custody_amounts_follow_the_same_rules(btc_usdt, make_user, custody, unchanged):
    address = deposit_address_get(user=make_user(), asset=Asset.objects.get(pk="BTC")).address
    report = {"asset": "BTC", "address": address, "tx_id": "0xamount", "confirmations": 1}
    with unchanged():
        assert custody("deposits/", {**report, "amount": 1.5}).json()["error"]["code"] == "amount_not_a_string"
        assert custody("deposits/", {**report, "amount": "1.5e0"}).json()["error"]["code"] == "invalid_amount"
    assert custody("deposits/", {**report, "amount": "1.5"}).status_code == 201


# --- Large amounts ----------------------------------------------------------------------------------


@pytest.fixture
def fine_market(db):
    """A market whose base asset has 18 decimals and the finest lot there is."""
    no_review = Decimal("99999999999999999999")
    fine = AssetFactory(symbol="FINE", decimals=18, deposit_review_threshold=no_review)
    quote = AssetFactory(symbol="QFINE", decimals=18, deposit_review_threshold=no_review)
    return MarketFactory(
        base=fine, quote=quote, tick_size=Decimal("1"), lot_size=Decimal("1e-18"), min_notional=Decimal("1")
    )


def test_ten_billion_of_an_18_decimal_asset_is_credited_not_a_500(fine_market, make_user, custody, client_for):
    user = make_user()
    address = deposit_address_get(user=user, asset=fine_market.base).address
    report = {"asset": "FINE", "address": address, "amount": TEN_BILLION, "tx_id": "0xbig", "confirmations": 1}
    answer = custody("deposits/", report)
    assert answer.status_code == 201, answer.json()
    assert answer.json()["status"] == "credited"
    balances = {b["asset"]: b for b in client_for(user).get("/api/balances/").json()}
    assert balances["FINE"]["available"] == TEN_BILLION


def test_ten_billion_of_an_18_decimal_asset_can_be_declared_withdrawn_and_sold(
    fine_market, make_user, fund, client_for
):
    user = make_user()
    fund(user, "FINE", "30000000000")
    client = client_for(user)
    declared = client.post("/api/deposits/", {"asset": "FINE", "amount": TEN_BILLION}, format="json")
    assert declared.status_code == 201, declared.json()
    withdrawn = client.post(
        "/api/withdrawals/", {"asset": "FINE", "amount": TEN_BILLION, "address": "fineaddress01"}, format="json"
    )
    assert withdrawn.status_code == 201, withdrawn.json()
    sold = client.post(
        "/api/orders/",
        order(symbol=fine_market.symbol, side="Sell", price="1", quantity="10000000000.000000000000000001"),
        format="json",
    )
    assert sold.status_code == 201, sold.json()
    placed = Order.objects.get(pk=sold.json()["id"])
    assert placed.locked == Decimal("10000000000.000000000000000001")


def test_a_notional_too_large_for_the_books_is_a_400_not_a_500(trader, client_for, unchanged):
    with unchanged():
        answer = client_for(trader).post(
            "/api/orders/", order(price="99999999999999999999", quantity="99999"), format="json"
        )
    assert answer.status_code == 400, answer.json()
    assert answer.json()["error"]["code"] == "amount_too_large"


def test_the_largest_amounts_the_columns_hold_never_answer_500(fine_market, make_user, fund, client_for, custody):
    user = make_user()
    client = client_for(user)
    fund(user, "QFINE", "1")
    answers = [
        client.post("/api/deposits/", {"asset": "FINE", "amount": LARGEST}, format="json"),
        client.post("/api/withdrawals/", {"asset": "FINE", "amount": LARGEST, "address": "x" * 10}, format="json"),
        client.post("/api/orders/", order(symbol=fine_market.symbol, price=LARGEST, quantity=LARGEST), format="json"),
        client.post(
            "/api/orders/",
            order(symbol=fine_market.symbol, cid="amounts_0000000002", side="Sell", price="1", quantity=LARGEST),
            format="json",
        ),
        client.post(
            "/api/orders/",
            order(
                symbol=fine_market.symbol,
                cid="amounts_0000000003",
                order_type="Market",
                time_in_force="IOC",
                price=None,
                quantity=None,
                quote_quantity=LARGEST,
            ),
            format="json",
        ),
    ]
    assert [a.status_code for a in answers] == [201, 400, 400, 400, 400], [a.json() for a in answers]


def test_a_credit_that_would_overflow_a_balance_is_a_400_and_changes_nothing(
    fine_market, make_user, custody, unchanged
):
    address = deposit_address_get(user=make_user(), asset=fine_market.base).address
    report = {"asset": "FINE", "address": address, "amount": "99999999999999999999", "confirmations": 1}
    assert custody("deposits/", {**report, "tx_id": "0xfirst"}).status_code == 201
    with unchanged():
        answer = custody("deposits/", {**report, "tx_id": "0xsecond"})
    assert answer.status_code == 400, answer.json()
    assert answer.json()["error"]["code"] == "amount_too_large"
    assert Account.objects.get(user=None, asset_id="FINE", kind="deposits").balance == Decimal("-99999999999999999999")


def test_money_arithmetic_is_exact_for_any_two_amounts_in_every_thread():
    """The product of two amounts of 38 digits has 76; every thread (gunicorn's, Celery's)
    computes with at least that many."""
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(getcontext().prec))
    thread.start()
    thread.join()
    assert getcontext().prec >= 2 * AMOUNT_DIGITS
    assert seen[0] >= 2 * AMOUNT_DIGITS
    largest = Decimal(LARGEST)
    assert largest * largest == Decimal(int(LARGEST.replace(".", "")) ** 2).scaleb(-36)
