"""Every throttle of a request is counted in one Redis round trip; limits hold per user and per
scope; a throttled answer says when to come back; Redis away lets requests through, logged.

While more orders wait behind the API than MAX_PENDING_ORDERS, new orders are refused (503
`overloaded`, Retry-After) and nothing changes; reads and cancels go on; with no count, nothing is
refused. The relay is what counts them."""

import pytest
import redis.connection
from django.core.cache import cache, caches
from rest_framework.views import APIView
from structlog.testing import capture_logs

from core.throttling import BACKLOG_KEY, ScopedRateThrottle, UserRateThrottle, backlog_report
from matching.management.commands.run_outbox_relay import Relay
from tests.api.test_limits import DEAD_REDIS
from tests.unit.conftest import place

pytestmark = pytest.mark.django_db


def order_body(n: int) -> dict:
    return {
        "cid": f"throttle-{n:08d}",
        "symbol": "BTC_USDT",
        "side": "buy",
        "order_type": "limit",
        "price": "50000",
        "quantity": "0.001",
    }


@pytest.fixture
def trader(btc_usdt, make_user, fund):
    user = make_user()
    fund(user, "USDT", "1000")
    return user


@pytest.fixture
def limits(monkeypatch, throttle_window):
    """`limits(user=..., orders=...)`: rates for this test (DRF reads them when the classes are defined)."""

    def set_rates(**rates: str) -> None:
        for throttle in (UserRateThrottle, ScopedRateThrottle):
            monkeypatch.setattr(throttle, "THROTTLE_RATES", {**throttle.THROTTLE_RATES, **rates})

    return set_rates


@pytest.fixture
def throttle_round_trips(monkeypatch) -> list:
    """What the view sent to Redis while it checked its throttles, one item a round trip (a pipeline
    is one: its commands go in one write, and their answers are read back together)."""
    trips: list = []
    inside = [False]
    send = redis.connection.AbstractConnection.send_packed_command
    check = APIView.check_throttles

    def counting_send(self, command, *args, **kwargs):
        if inside[0]:
            trips.append(command)
        return send(self, command, *args, **kwargs)

    def counting_check(self, request):
        inside[0] = True
        try:
            return check(self, request)
        finally:
            inside[0] = False

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting_send)
    monkeypatch.setattr(APIView, "check_throttles", counting_check)
    return trips


@pytest.mark.services
def test_a_request_with_a_user_and_a_scope_throttle_costs_one_redis_round_trip(
    trader, client_for, limits, throttle_round_trips
):
    limits(user="100/minute", orders="100/minute")
    answer = client_for(trader).post("/api/orders/", order_body(1), format="json")
    assert answer.status_code == 201, answer.json()
    assert len(throttle_round_trips) == 1
    # ...in which both the user's and the scope's counters went up.
    sent = b"".join(b"".join(chunk) if isinstance(chunk, list) else chunk for chunk in throttle_round_trips)
    assert sent.count(b"INCR") == 2
    assert b"throttle_user_" in sent and b"throttle_orders_" in sent
    # ...and the backlog the API may refuse new orders for was read in the same trip.
    assert sent.count(b"GET") == 1 and b"pipeline_backlog" in sent


def test_the_scope_limit_holds_apart_from_the_user_limit_and_says_when_to_come_back(trader, client_for, limits):
    caches["default"].clear()
    limits(user="100/minute", orders="2/minute")
    client = client_for(trader)
    statuses = [client.post("/api/orders/", order_body(n), format="json").status_code for n in range(3)]
    assert statuses == [201, 201, 429]
    refused = client.post("/api/orders/", order_body(9), format="json")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "throttled"
    assert 1 <= int(refused["Retry-After"]) <= 60
    # Reading is not in the orders scope: only the user limit applies, and it is far away.
    assert client.get("/api/orders/").status_code == 200


def test_each_user_has_a_count_of_their_own(btc_usdt, make_user, client_for, limits):
    caches["default"].clear()
    limits(user="2/minute")
    first, second = client_for(make_user()), client_for(make_user())
    assert [first.get("/api/balances/").status_code for _ in range(3)] == [200, 200, 429]
    assert second.get("/api/balances/").status_code == 200


def test_while_redis_is_away_requests_go_through_with_a_warning(trader, client_for, limits, settings):
    limits(user="1/minute", orders="1/minute")
    settings.CACHES = DEAD_REDIS
    client = client_for(trader)
    with capture_logs() as logs:
        statuses = [client.post("/api/orders/", order_body(n), format="json").status_code for n in range(2)]
    assert statuses == [201, 201]
    warnings = [entry for entry in logs if entry["event"] == "throttle_cache_unavailable"]
    # One attempt per request, whatever the number of throttles.
    assert len(warnings) == 2
    assert all(entry["log_level"] == "warning" for entry in warnings)


# --- the backlog behind the API ------------------------------------------------------------------


@pytest.fixture
def backlog():
    yield backlog_report
    cache.delete(BACKLOG_KEY)


def test_new_orders_are_refused_while_the_backlog_is_full_and_nothing_changes(
    trader, client_for, backlog, settings, unchanged
):
    settings.MAX_PENDING_ORDERS = 50
    client = client_for(trader)
    resting = client.post("/api/orders/", order_body(0), format="json")
    assert resting.status_code == 201
    backlog(50)
    with unchanged():
        single = client.post("/api/orders/", order_body(1), format="json")
        batch = client.post("/api/orders/batch/", {"orders": [order_body(2), order_body(3)]}, format="json")
    for answer in (single, batch):
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "overloaded"
        assert "50 orders" in answer.json()["error"]["message"]
        assert answer["Retry-After"] == "1"
    # Reading and cancelling are not new orders.
    assert client.get("/api/orders/").status_code == 200
    assert client.get("/api/balances/").status_code == 200
    assert client.delete(f"/api/orders/{resting.json()['id']}/").status_code == 202


def test_below_the_limit_or_with_no_count_orders_are_taken(trader, client_for, backlog, settings):
    settings.MAX_PENDING_ORDERS = 50
    client = client_for(trader)
    backlog(49)
    assert client.post("/api/orders/", order_body(1), format="json").status_code == 201
    # The relay stopped reporting and its count expired (or Redis lost it): nothing to go by.
    cache.delete(BACKLOG_KEY)
    assert client.post("/api/orders/", order_body(2), format="json").status_code == 201


def test_the_relay_counts_the_pending_orders_up_to_the_limit(trader, backlog, settings):
    settings.MAX_PENDING_ORDERS = 2
    relay = Relay(batch_size=10)
    relay.report_backlog()
    assert cache.get(BACKLOG_KEY) == 0
    for n in range(3):
        place(trader, f"backlog-relay-{n}", "buy", "50000", "0.001")
    relay.reported_at = 0.0
    relay.report_backlog()
    assert cache.get(BACKLOG_KEY) == 2  # three pending, counted up to the limit
