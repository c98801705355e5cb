import pytest
from django.core.cache import caches

from core.throttling import UserRateThrottle

pytestmark = pytest.mark.django_db

DEAD_REDIS = {
    "default": {
        "BACKEND": "core.cache.JSONRedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
    }
}


@pytest.fixture
def fresh_cache():
    caches["default"].clear()
    yield
    caches["default"].clear()


def test_too_many_requests_get_a_429_json_error(
    btc_usdt, make_user, client_for, monkeypatch, fresh_cache, throttle_window
):
    # DRF reads the rates once, when the throttle classes are defined.
    monkeypatch.setattr(UserRateThrottle, "THROTTLE_RATES", {**UserRateThrottle.THROTTLE_RATES, "user": "3/minute"})
    client = client_for(make_user())
    statuses = [client.get("/api/balances/").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    answer = client.get("/api/balances/")
    assert answer.json()["error"]["code"] == "throttled"


def test_requests_go_through_while_redis_is_away(btc_usdt, make_user, client_for, settings):
    settings.CACHES = DEAD_REDIS
    client = client_for(make_user())
    assert client.get("/api/balances/").status_code == 200


def test_the_book_is_503_not_500_while_redis_is_away(btc_usdt, api, settings):
    settings.CACHES = DEAD_REDIS
    answer = api.get("/api/markets/BTC_USDT/depth/")
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "depth_unavailable"
