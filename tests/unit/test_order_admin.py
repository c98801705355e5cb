"""The admin's orders list keeps to the statements that stay fast on a table of millions of orders.

benchmarks/admin_orders.py times these pages on 1,000,000 orders; these tests keep what made
them fast without timing anything: a bounded number of statements per page, no exact count of
the whole table, deep pages that skip over primary keys only, and searches that look values up
instead of scanning for them.
"""

from collections.abc import Callable
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from core.admin_tools import LargeTablePaginator
from matching.models import Market, Order

URL = "/admin/matching/order/"
# Session, operator, whether the operator has a second factor, the market filter's choices, the
# count, the page, and the date hierarchy's range and dates; a deep page adds its keys, a search its
# username and cid lookups.
STATEMENTS_PER_PAGE = 10


@pytest.fixture(autouse=True)
def _plain_static_files(settings) -> None:
    """The admin's pages name static files; the tests collect none for the manifest."""
    settings.STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def place(btc_usdt: Market) -> Callable[..., list[Order]]:
    def create(user: User, count: int, status: str = Order.Status.FILLED, prefix: str = "") -> list[Order]:
        prefix = prefix or f"{user.username}_"
        return Order.objects.bulk_create(
            Order(
                user=user,
                market=btc_usdt,
                cid=f"{prefix}{n:06d}".ljust(16, "0"),
                side=Order.Side.BUY,
                order_type=Order.Type.LIMIT,
                price=Decimal("50000"),
                quantity=Decimal("0.01"),
                status=status,
                maker_fee_rate=btc_usdt.maker_fee,
                taker_fee_rate=btc_usdt.taker_fee,
            )
            for n in range(count)
        )

    return create


@pytest.fixture
def large_table(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Makes the orders table look large to the paginator: call it once the orders are in, so that
    ANALYZE has measured them and the paginator has an estimate past its threshold."""
    monkeypatch.setattr(LargeTablePaginator, "estimate_from", 1)

    def analyse() -> None:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE matching_order")

    return analyse


def order_statements(captured: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in captured.captured_queries if '"matching_order"' in q["sql"]]


def counts_whole_table(sql: str) -> bool:
    return "COUNT(" in sql and 'FROM "matching_order"' in sql and "WHERE" not in sql


def test_unfiltered_orders_list_of_a_large_table_is_never_counted_row_by_row(
    admin_client, make_user, place, large_table
) -> None:
    orders = place(make_user(username="alice"), 3)
    large_table()

    with CaptureQueriesContext(connection) as captured:
        page = admin_client.get(URL)

    assert page.status_code == 200
    assert not [sql for sql in order_statements(captured) if counts_whole_table(sql)]
    assert all(o.cid in page.content.decode() for o in orders)


def test_filtered_orders_list_is_counted_exactly(admin_client, make_user, place, large_table) -> None:
    alice = make_user(username="alice")
    place(alice, 2, status=Order.Status.OPEN, prefix="open_")
    place(alice, 3, status=Order.Status.CANCELLED, prefix="cancelled_")
    large_table()

    with CaptureQueriesContext(connection) as captured:
        page = admin_client.get(URL, {"status__exact": "open"})

    assert page.status_code == 200
    assert any("COUNT(" in sql and "WHERE" in sql for sql in order_statements(captured))
    assert "2 orders" in page.content.decode()


def test_a_deep_page_skips_over_primary_keys_only_and_shows_the_right_orders(admin_client, make_user, place) -> None:
    orders = place(make_user(username="alice"), 130)

    with CaptureQueriesContext(connection) as captured:
        page = admin_client.get(URL, {"p": 2})

    assert page.status_code == 200
    skipping = [sql for sql in order_statements(captured) if "OFFSET" in sql]
    assert skipping
    assert all(sql.startswith('SELECT "matching_order"."id" AS "pk" FROM') and "JOIN" not in sql for sql in skipping)
    content = page.content.decode()
    # Newest first: the second page holds the 30 oldest.
    assert all(o.cid in content for o in orders[:30])
    assert not any(o.cid in content for o in orders[30:])


@pytest.mark.parametrize("by", ["id", "cid", "username"])
def test_search_finds_an_order_by_id_cid_or_username_by_looking_it_up(admin_client, make_user, place, by: str) -> None:
    [wanted] = place(make_user(username="alice"), 1)
    others = place(make_user(username="bob"), 5)
    term = {"id": str(wanted.pk), "cid": wanted.cid, "username": "alice"}[by]

    with CaptureQueriesContext(connection) as captured:
        page = admin_client.get(URL, {"q": term})

    assert page.status_code == 200
    content = page.content.decode()
    assert wanted.cid in content
    assert not any(o.cid in content for o in others)
    # Equality on indexed columns only: no LIKE, and no column turned into text or upper case.
    for sql in order_statements(captured):
        assert "LIKE" not in sql and "UPPER(" not in sql and "::text" not in sql, sql


def test_search_matches_whole_usernames_and_cids_as_written(admin_client, make_user, place) -> None:
    [order] = place(make_user(username="alice"), 1)

    for term in ("alic", "Alice", order.cid[:-1], order.cid.upper()):
        page = admin_client.get(URL, {"q": term})
        assert page.status_code == 200
        assert order.cid not in page.content.decode(), term


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"p": 2},
        {"status__exact": "filled"},
        {"market__symbol__exact": "BTC_USDT"},
        {"q": "trader_1"},
        {"q": "trader_2 1"},
    ],
    ids=["first page", "deep page", "by status", "by market", "search", "search of two words"],
)
def test_orders_list_runs_a_bounded_number_of_statements_whatever_it_shows(
    admin_client, make_user, place, django_assert_max_num_queries, query: dict
) -> None:
    for n in range(1, 4):
        place(make_user(username=f"trader_{n}"), 60)

    with django_assert_max_num_queries(STATEMENTS_PER_PAGE):
        page = admin_client.get(URL, query)

    assert page.status_code == 200
