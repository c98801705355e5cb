"""Orders through HTTP, Kafka, the matching worker, Kafka again, the settlement consumer, Celery and
PostgreSQL, every one of them a real process or server."""

import http.client
import time
from decimal import Decimal

import pytest

from tests.e2e.harness import Exchange, eventually

pytestmark = pytest.mark.e2e


def ledger_matches_balances(exchange: Exchange, *user_ids: int) -> bool:
    rows = exchange.query(
        """
        SELECT a.id, a.balance, COALESCE(SUM(l.amount), 0)
        FROM accounts_account a LEFT JOIN accounts_ledgerline l ON l.account_id = a.id
        WHERE a.user_id = ANY(%s)
        GROUP BY a.id, a.balance
        """,
        list(user_ids),
    )
    return all(balance == lines for _, balance, lines in rows)


def test_the_seed_scenario_trades_once_and_settles_every_balance_to_the_last_decimal(exchange: Exchange) -> None:
    seller, buyer = exchange.register("seller"), exchange.register("buyer")
    for trader in (seller, buyer):
        trader.deposit("BTC", "1")
        trader.deposit("USDT", "1000")

    sell = seller.order(
        cid="seed_sell_0000001", symbol="BTC_USDT", side="Sell", order_type="Limit", price="50000.0", quantity="0.01"
    )
    assert sell.status_code == 201, sell.text
    exchange_sell = seller.wait_status(sell.json()["id"], "open")
    assert exchange_sell["locked"] == "0.01"

    buy = buyer.order(
        cid="test_12345678901", symbol="BTC_USDT", side="Buy", order_type="Limit", price="50000.0", quantity="0.01"
    )
    assert buy.status_code == 201, buy.text

    filled_buy = buyer.wait_status(buy.json()["id"], "filled")
    filled_sell = seller.wait_status(sell.json()["id"], "filled")
    assert (filled_buy["filled"], filled_sell["filled"]) == ("0.01", "0.01")

    trades = exchange.query(
        "SELECT price, quantity, buyer_fee, seller_fee, taker_side FROM settlement_trade "
        "WHERE buy_order_id = %s OR sell_order_id = %s",
        buy.json()["id"],
        sell.json()["id"],
    )
    assert trades == [(Decimal("50000"), Decimal("0.01"), Decimal("0.00002"), Decimal("0.5"), "buy")]

    # The resting seller is the maker (0.1% of the 500 USDT received); the buyer took liquidity
    # (0.2% of the 0.01 BTC received).
    assert seller.balances() == {
        "BTC": (Decimal("0.99"), Decimal("0")),
        "ETH": (Decimal("0"), Decimal("0")),
        "USDT": (Decimal("1499.5"), Decimal("0")),
    }
    assert buyer.balances() == {
        "BTC": (Decimal("1.00998"), Decimal("0")),
        "ETH": (Decimal("0"), Decimal("0")),
        "USDT": (Decimal("500"), Decimal("0")),
    }
    assert ledger_matches_balances(exchange, seller.id, buyer.id)

    fills = buyer.call("GET", "trades/?symbol=BTC_USDT").json()
    assert [(f["side"], f["role"], f["price"], f["quantity"], f["fee"], f["fee_asset"]) for f in fills] == [
        ("buy", "taker", "50000", "0.01", "0.00002", "BTC")
    ]
    public = exchange.http.get(f"{exchange.base}/api/markets/BTC_USDT/trades/").json()
    assert any(t["seq"] == fills[0]["seq"] for t in public)


def test_the_same_user_on_both_sides_does_not_trade_with_themself(exchange: Exchange) -> None:
    trader = exchange.register("selftrader")
    trader.deposit("BTC", "1")
    trader.deposit("USDT", "1000")

    sell = trader.order(symbol="BTC_USDT", side="Sell", order_type="Limit", price="50000", quantity="0.01").json()
    trader.wait_status(sell["id"], "open")
    buy = trader.order(symbol="BTC_USDT", side="Buy", order_type="Limit", price="50000", quantity="0.01").json()

    cancelled = trader.wait_status(buy["id"], "cancelled")
    assert cancelled["reason"] == "self_trade"
    assert trader.get_order(sell["id"])["status"] == "open"
    assert exchange.query(
        "SELECT count(*) FROM settlement_trade WHERE buyer_id = %s OR seller_id = %s", trader.id, trader.id
    ) == [(0,)]
    assert trader.balances()["USDT"] == (Decimal("1000"), Decimal("0"))
    assert trader.balances()["BTC"] == (Decimal("0.99"), Decimal("0.01"))


def test_a_cancel_goes_through_the_engine_and_returns_the_funds(exchange: Exchange) -> None:
    trader = exchange.register("canceller")
    trader.deposit("USDT", "100")
    order = trader.order(symbol="BTC_USDT", side="Buy", order_type="Limit", price="1000", quantity="0.05").json()
    trader.wait_status(order["id"], "open")
    assert trader.balances()["USDT"] == (Decimal("50"), Decimal("50"))

    answer = trader.call("DELETE", f"orders/{order['id']}/")
    assert answer.status_code == 202

    assert trader.wait_status(order["id"], "cancelled")["reason"] == "user"
    assert trader.balances()["USDT"] == (Decimal("100"), Decimal("0"))


def test_the_depth_endpoint_serves_the_engines_book_with_its_sequence(exchange: Exchange) -> None:
    trader = exchange.register("depth")
    trader.deposit("ETH", "2")
    order = trader.order(symbol="ETH_USDT", side="Sell", order_type="Limit", price="3999.99", quantity="1.5").json()
    trader.wait_status(order["id"], "open")

    def book() -> dict | None:
        depth = exchange.http.get(f"{exchange.base}/api/markets/ETH_USDT/depth/?limit=5").json()
        return depth if ["3999.99", "1.5"] in depth["asks"] else None

    depth = eventually(book, what="the ask to appear in the published book")
    assert depth["symbol"] == "ETH_USDT"
    assert depth["sequence"] >= 2
    assert exchange.http.get(f"{exchange.base}/api/markets/NOPE/depth/").status_code == 404


def test_an_order_without_funds_is_refused_and_never_reaches_kafka(exchange: Exchange) -> None:
    trader = exchange.register("broke")
    trader.deposit("USDT", "10")
    outbox_before = exchange.query("SELECT count(*) FROM matching_outboxmessage")

    answer = trader.order(symbol="BTC_USDT", side="Buy", order_type="Limit", price="50000", quantity="0.01")

    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "insufficient_funds"
    assert exchange.query("SELECT count(*) FROM matching_order WHERE user_id = %s", trader.id) == [(0,)]
    assert exchange.query("SELECT count(*) FROM matching_outboxmessage") == outbox_before
    assert trader.balances()["USDT"] == (Decimal("10"), Decimal("0"))


def test_health_readiness_metrics_and_schema_answer(exchange: Exchange) -> None:
    http, base = exchange.http, exchange.base
    assert http.get(f"{base}/healthz").json() == {"status": "ok"}
    ready = http.get(f"{base}/readyz")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {"database", "kafka", "celery_broker", "cache"}
    assert http.get(f"{base}/metrics").status_code == 401
    # The processes made the development token under their run folder; Prometheus would read it there.
    token = (exchange.workdir / "metrics-token").read_text().strip()
    metrics = http.get(f"{base}/metrics", headers={"Authorization": f"Bearer {token}"}).text
    assert 'exchange_settled_sequence{market="BTC_USDT"}' in metrics
    schema = http.get(f"{base}/api/schema/")
    assert schema.status_code == 200
    assert "/api/orders/" in schema.text
    assert http.get(f"{base}/admin/login/").status_code == 200


def test_an_idle_client_connection_is_still_open_for_its_next_request(exchange: Exchange) -> None:
    # A trading client keeps its connection between orders. Had gunicorn closed it (its own default
    # after 2 s idle), a request sent as it closes fails, and whether an order was taken is unknown.
    connection = http.client.HTTPConnection("127.0.0.1", exchange.port, timeout=10)
    try:
        connection.request("GET", "/healthz")
        assert connection.getresponse().read() == b'{"status": "ok"}'
        opened = connection.sock
        time.sleep(4)
        connection.request("GET", "/healthz")
        answer = connection.getresponse()
        assert answer.status == 200
        answer.read()
        assert connection.sock is opened
    finally:
        connection.close()
