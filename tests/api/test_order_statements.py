"""Statement budgets of placing orders: a fixed number per request, whatever it holds.

Each counts every statement Django sends for the whole request, authentication included, on a
connection that is not inside a test transaction, so that BEGIN and COMMIT are real and counted.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from matching.models import Order

pytestmark = pytest.mark.django_db(transaction=True)

# BEGIN; read the markets and lock the owner's accounts; read the owner's state; write the orders,
# their commands and their ledger entries; COMMIT.
ORDER_STATEMENTS = 5


def order(n: int, **changes: object) -> dict:
    return {
        "cid": f"statement_budget_{n:04d}",
        "symbol": "BTC_USDT",
        "side": "buy",
        "order_type": "limit",
        "price": "50000",
        "quantity": "0.01",
        **changes,
    }


@pytest.fixture
def trader(btc_usdt, make_user, fund, client_for):
    user = make_user()
    fund(user, "USDT", "1000000")
    fund(user, "BTC", "10")
    client = client_for(user)
    assert client.get("/api/balances/").status_code == 200  # the ended-logins list is in Redis from here on
    return client


def statements(call) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        call()
    return [query["sql"] for query in queries.captured_queries]


def test_placing_an_order_costs_five_statements_begin_and_commit_included(trader):
    sent = statements(lambda: trader.post("/api/orders/", order(1), format="json"))
    assert Order.objects.filter(cid="statement_budget_0001").exists()
    assert len(sent) <= ORDER_STATEMENTS, "\n".join(sent)
    assert (sent[0], sent[-1]) == ("BEGIN", "COMMIT")


def test_an_order_placed_again_by_its_cid_costs_one_statement_more(trader):
    trader.post("/api/orders/", order(1), format="json")
    sent = statements(lambda: trader.post("/api/orders/", order(1), format="json"))
    assert len(sent) <= ORDER_STATEMENTS + 1, "\n".join(sent)


def test_a_batch_of_a_hundred_orders_costs_what_one_order_costs(trader):
    one = statements(lambda: trader.post("/api/orders/batch/", {"orders": [order(0)]}, format="json"))
    sides = ("buy", "sell")
    hundred = statements(
        lambda: trader.post(
            "/api/orders/batch/",
            {"orders": [order(n, side=sides[n % 2], price=str(40000 + 20000 * (n % 2))) for n in range(1, 101)]},
            format="json",
        )
    )
    assert Order.objects.count() == 101
    assert len(hundred) == len(one) <= ORDER_STATEMENTS, "\n".join(hundred)


def test_a_request_with_a_valid_token_reads_no_user_row(trader):
    sent = statements(lambda: trader.get("/api/balances/"))
    assert not [sql for sql in sent if '"accounts_user"' in sql], sent
