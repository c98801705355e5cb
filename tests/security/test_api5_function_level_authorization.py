"""API5 Broken function level authorization: `/metrics` is for the monitoring system only.

Its figures (settlement lag per market, operator queues, open alerts, orders by status) describe the
exchange's inside; Prometheus presents `Authorization: Bearer <METRICS_TOKEN>` to read them.
"""

import pytest

pytestmark = pytest.mark.django_db


def test_metrics_without_a_token_is_401_and_shows_nothing(client, btc_usdt) -> None:
    answer = client.get("/metrics")
    assert answer.status_code == 401
    assert answer["WWW-Authenticate"].startswith("Bearer")
    assert answer.json()["error"]["code"] == "not_authenticated"
    assert b"exchange_" not in answer.content


@pytest.mark.parametrize(
    "header",
    ["Bearer wrong-token", "Bearer ", "Basic bWV0cmljczpzZWNyZXQ=", "{token}", "Bearer {token}x", "Token {token}"],
)
def test_metrics_with_a_wrong_token_or_scheme_is_refused(client, btc_usdt, settings, header) -> None:
    answer = client.get("/metrics", HTTP_AUTHORIZATION=header.format(token=settings.METRICS_TOKEN))
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] in {"not_authenticated", "authentication_failed"}
    assert b"exchange_" not in answer.content


def test_metrics_with_the_token_answers(client, btc_usdt, settings) -> None:
    answer = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}")
    assert answer.status_code == 200
    assert answer["Content-Type"].startswith("text/plain")
    assert b"# TYPE exchange_orders gauge" in answer.content


def test_a_changed_token_takes_effect_and_the_old_one_stops_working(client, btc_usdt, settings) -> None:
    old = settings.METRICS_TOKEN
    settings.METRICS_TOKEN = "rotated-" + old
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {old}").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer rotated-{old}").status_code == 200


def test_health_probes_stay_open(client) -> None:
    assert client.get("/healthz").status_code == 200
